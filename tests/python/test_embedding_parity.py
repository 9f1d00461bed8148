#!/usr/bin/env python3
"""Embeddings from SQL (inf_embed, inf_embed_query, inf_embed_many,
inf_embed_query_many) against the independent Python reference, on 60+
varied texts: short, 2,000-word (truncated), 1 MB, non-English, emoji,
empty, blank, with and without instruction, over-long query with an
instruction. Fails when any cosine is at or below 0.9999.

Usage: test_embedding_parity.py --port P [--host H] [--model-dir DIR]
"""
import argparse
import csv
import io
import subprocess
import sys

import numpy as np

from reference_embed import Reference

LOREM = ("Vitamin D supplementation was associated with a lower risk of hip fracture in older adults, "
         "although the trials differed in dose, duration and baseline status of the participants. ")
WORDS = " ".join(f"word{i % 97} analysis of {i} samples" for i in range(400))  # ~2,000 words


def cases():
    short = [
        "what is the capital of france", "hello world", "a", "?", "COVID-19 vaccine efficacy in children",
        "how long does it take to boil an egg", "symptoms of vitamin b12 deficiency",
        "0-dimensional biomaterials show inductive properties.", "The quick brown fox jumps over the lazy dog.",
        "define photosynthesis", "is coffee bad for your heart", "python list comprehension example",
        "Aspirin reduces the risk of myocardial infarction", "tallest building in the world 2020",
        "can dogs eat grapes", "Tax rules for remote workers in the EU",
    ]
    foreign = [
        "Les chats dorment beaucoup pendant la journée.", "Die Hauptstadt von Deutschland ist Berlin.",
        "北京是中国的首都。", "猫は一日中寝ています。", "Москва — столица России.",
        "القاهرة هي عاصمة مصر", "¿Dónde está la biblioteca?", "서울은 한국의 수도입니다.",
    ]
    emoji = ["🐱🐶🐭", "I love pizza 🍕🍕 and sushi 🍣", "👍", "rocket 🚀 launch at 10:00 ✅"]
    edge = ["", " ", "\n\t", LOREM * 30, WORDS, "x" * 5000, ("token " * 200000)]
    out = []
    for t in short + foreign + emoji + edge:
        out.append(("passage", None, t))
    instructions = [None, "", "only peer-reviewed sources", "Answer in French. Not about dosage.",
                    "documents must mention a randomized controlled trial " * 3]
    for i, q in enumerate(short[:10] + foreign[:3] + emoji[:2]):
        out.append(("query", instructions[i % len(instructions)], q))
    # Long query + instruction: the query is cut, the instruction kept whole.
    out.append(("query", "only sources published after 2015 that report adverse events", WORDS))
    out.append(("query", "prefer meta-analyses", LOREM * 20))
    # Instruction alone longer than the limit: cut from the end.
    out.append(("query", WORDS, "short query"))
    out.append(("query", "🍕 in Italian", "北京是中国的首都。"))
    return out


def psql(args, sql, stdin=None):
    cmd = ["psql", "-h", args.host, "-p", str(args.port), "-U", "postgres", "-d", args.db, "-X", "-q",
           "-v", "ON_ERROR_STOP=1", "-c", sql] if stdin is None else \
          ["psql", "-h", args.host, "-p", str(args.port), "-U", "postgres", "-d", args.db, "-X", "-q",
           "-v", "ON_ERROR_STOP=1", "-f", "-"]
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"psql failed: {r.stderr}")
    return r.stdout


def parse_vec(s):
    return np.array([float(x) for x in s.strip("{}").split(",")], dtype=np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", default="postgres")
    ap.add_argument("--model-dir", default="/var/lib/inf_ir/models/all-MiniLM-L6-v2")
    args = ap.parse_args()
    items = cases()

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for i, (kind, instruction, text) in enumerate(items):
        w.writerow([i, kind, "\\N" if instruction is None else instruction, text])
    script = (
        "CREATE EXTENSION IF NOT EXISTS inf_ir;\n"
        "CREATE TEMP TABLE parity(id int, kind text, instruction text, body text);\n"
        "COPY parity FROM STDIN WITH (FORMAT csv, NULL '\\N');\n" + buf.getvalue() + "\\.\n"
        "\\copy (SELECT id, CASE kind WHEN 'passage' THEN inf_embed(body) ELSE inf_embed_query(instruction, body) END, "
        "(SELECT embedding FROM inf_embed_many(ARRAY[body])) , "
        "(SELECT embedding FROM inf_embed_query_many(ARRAY[instruction], ARRAY[body])) FROM parity ORDER BY id) TO STDOUT WITH (FORMAT csv)\n"
        "\\copy (SELECT p.id, m.embedding FROM (SELECT array_agg(body ORDER BY id) b, array_agg(id ORDER BY id) ids FROM parity WHERE kind='passage') a, "
        "inf_embed_many(a.b) m, LATERAL (SELECT a.ids[m.ord] id) p) TO STDOUT WITH (FORMAT csv)\n"
        "\\copy (SELECT p.id, m.embedding FROM (SELECT array_agg(instruction ORDER BY id) i, array_agg(body ORDER BY id) b, array_agg(id ORDER BY id) ids FROM parity WHERE kind='query') a, "
        "inf_embed_query_many(a.i, a.b) m, LATERAL (SELECT a.ids[m.ord] id) p) TO STDOUT WITH (FORMAT csv)\n"
    )
    out = psql(args, None, stdin=script)
    rows = list(csv.reader(io.StringIO(out)))
    single = {int(r[0]): (parse_vec(r[1]), parse_vec(r[2]), parse_vec(r[3])) for r in rows if len(r) == 4}
    batched = {int(r[0]): parse_vec(r[1]) for r in rows if len(r) == 2}
    assert len(single) == len(items), f"{len(single)} single rows for {len(items)} cases"
    assert len(batched) == len(items), f"{len(batched)} batched rows for {len(items)} cases"

    ref = Reference(args.model_dir)
    worst = (1.0, None)
    for i, (kind, instruction, text) in enumerate(items):
        r = ref.passage(text) if kind == "passage" else ref.query(instruction, text)
        one, many_p, many_q = single[i]
        candidates = [one, batched[i]] + ([many_p] if kind == "passage" else [many_q])
        for v in candidates:
            cos = float(r @ v / np.linalg.norm(v))
            if cos < worst[0]:
                worst = (cos, (kind, instruction, text[:60]))
    print(f"{len(items)} texts x 3 SQL paths vs Python onnxruntime reference: min cosine {worst[0]:.7f}")
    if worst[0] <= 0.9999:
        print(f"FAILED on {worst[1]!r}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
