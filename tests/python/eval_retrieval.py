#!/usr/bin/env python3
"""Retrieval quality through SQL against ../shared/REFERENCE.md, on real data.

- SciFact (BEIR test split): load corpus.jsonl with inf_load_jsonl, embed with
  CALL inf_embed_corpus, search all 300 queries with inf_search (passage =
  title + " " + text, no instruction); nDCG@10, MRR@10, Recall@100, and the
  top-10 lists against an exact numpy search over the same stored vectors.
- TREC DL19: re-rank the BM25 top-100 of 43 queries with inf_rerank; nDCG@10.

Metrics follow trec_eval: nDCG with graded gains rel / log2(rank + 1), ideal
from all judged documents; MRR@10 first relevant (rel > 0); Recall@100.
Skips (exit 0) when the data folder is absent.

Usage: eval_retrieval.py --port P [--data DIR] [--only scifact|dl19] [--model NAME]
"""
import argparse
import csv
import io
import json
import math
import os
import subprocess
import sys

import numpy as np

REFERENCE = {"scifact": 0.6451, "dl19": 0.6424}
TOLERANCE = 0.002


def psql(args, script):
    r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(args.port), "-U", "postgres", "-d", args.db,
                        "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"psql failed: {r.stderr[-2000:]}")
    return r.stdout


def read_qrels(path):
    qrels = {}
    with open(path) as f:
        for row in csv.reader(f, delimiter="\t"):
            if row[0] in ("query-id", "qid"):
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def ndcg_at(ranked, rels, k=10):
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at(ranked, rels, k=10):
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at(ranked, rels, k=100):
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def queries_copy(path, table):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for line in open(path):
        q = json.loads(line)
        w.writerow([q["_id"], q["text"]])
    return (f"CREATE TEMP TABLE {table}(qid text, body text);\n"
            f"COPY {table} FROM STDIN WITH (FORMAT csv);\n" + buf.getvalue() + "\\.\n")


def load_and_embed(corpus, path, model=None):
    """SQL that loads a JSONL file into a corpus and embeds it, quietly."""
    model_arg = f", '{model}'" if model else ""
    return f"""
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;
\\o /dev/null
SELECT * FROM inf_load_jsonl('{corpus}', '{os.path.abspath(path)}'{model_arg});
CALL inf_embed_corpus('{corpus}', 256);
\\o
"""


def scifact(args):
    """With --model, the corpus is embedded with that registered model and
    the figure is reported (REFERENCE.md's figure is MiniLM's)."""
    d = os.path.join(args.data, "scifact")
    qrels = read_qrels(os.path.join(d, "qrels", "test.tsv"))
    corpus = f"scifact_eval_{args.model}" if args.model else "scifact_eval"
    model = f"'{args.model}'" if args.model else "NULL"
    out = psql(args, load_and_embed(corpus, os.path.join(d, "corpus.jsonl"), args.model) + queries_copy(os.path.join(d, "queries.jsonl"), "q") + f"""
\\copy (SELECT 'r', q.qid, s.external_id, s.rank FROM q, LATERAL inf_search(NULL, q.body, 100, '{corpus}') s) TO STDOUT WITH (FORMAT csv)
\\copy (SELECT 'q', q.qid, inf_embed_query(NULL, q.body, {model}), 0 FROM q) TO STDOUT WITH (FORMAT csv)
\\copy (SELECT 'd', external_id, embedding, 0 FROM inf_ir.passages JOIN inf_ir.corpora USING (corpus_id) WHERE name = '{corpus}') TO STDOUT WITH (FORMAT csv)
""")
    runs, qvec, docs = {}, {}, []
    vec = lambda t: np.array([float(x) for x in t.strip("{}").split(",")], dtype=np.float32)
    for kind, a, b, c in csv.reader(io.StringIO(out)):
        if kind == "r":
            runs.setdefault(a, []).append((int(c), b))
        elif kind == "q":
            qvec[a] = vec(b)
        else:
            docs.append((a, vec(b)))
    ranked = {q: [d for _, d in sorted(v)] for q, v in runs.items()}
    judged = list(qrels)
    ndcg = np.mean([ndcg_at(ranked.get(q, []), qrels[q]) for q in judged])
    mrr = np.mean([mrr_at(ranked.get(q, []), qrels[q]) for q in judged])
    rec = np.mean([recall_at(ranked.get(q, []), qrels[q]) for q in judged])
    # Top-10 against exact float32 numpy search over the same stored vectors.
    ids = [d for d, _ in docs]
    mat = np.stack([v for _, v in docs])
    same = 0
    for q in judged:
        scores = mat @ qvec[q]
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))[:10]
        exact = [ids[i] for i in order]
        same += exact == ranked.get(q, [])[:10] or _tied(scores, order, ranked.get(q, [])[:10], ids)
    reference = f"model {args.model}" if args.model else f"reference {REFERENCE['scifact']}"
    print(f"scifact: {len(ids)} passages, {len(judged)} queries: nDCG@10 {ndcg:.4f} ({reference}), "
          f"MRR@10 {mrr:.4f}, Recall@100 {rec:.3f}; top-10 identical to exact numpy search for {same}/{len(judged)} queries")
    if args.model:
        return same == len(judged)
    return abs(ndcg - REFERENCE["scifact"]) <= TOLERANCE and same == len(judged)


def _tied(scores, order, got, ids):
    """Equal up to exact ties in score (order among equal scores is arbitrary)."""
    pos = {d: i for i, d in enumerate(ids)}
    if len(got) != len(order):
        return False
    a = [round(float(scores[i]), 6) for i in order]
    b = [round(float(scores[pos[d]]), 6) for d in got if d in pos]
    return a == b


def dl19(args):
    d = os.path.join(args.data, "dl19")
    qrels = read_qrels(os.path.join(d, "qrels.tsv"))
    bm25 = {}
    for row in csv.reader(open(os.path.join(d, "bm25_top100.tsv")), delimiter="\t"):
        if row[0] == "query-id":
            continue
        bm25.setdefault(row[0], []).append(row[1])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for q, docs in bm25.items():
        for doc in docs:
            w.writerow([q, doc])
    out = psql(args, load_and_embed("dl19_eval", os.path.join(d, "passages.jsonl")) + queries_copy(os.path.join(d, "queries.jsonl"), "q") + """
CREATE TEMP TABLE cand(qid text, doc text);
\\o /dev/null
COPY cand FROM STDIN WITH (FORMAT csv);
""" + buf.getvalue() + """\\.
\\o
\\copy (SELECT q.qid, r.external_id, r.rank FROM q, LATERAL inf_rerank(NULL, q.body, (SELECT array_agg(p.passage_id) FROM cand c JOIN inf_ir.passages p ON p.external_id = c.doc JOIN inf_ir.corpora co ON co.corpus_id = p.corpus_id AND co.name = 'dl19_eval' WHERE c.qid = q.qid)) r) TO STDOUT WITH (FORMAT csv)
""")
    runs = {}
    for row in csv.reader(io.StringIO(out)):
        runs.setdefault(row[0], []).append((int(row[2]), row[1]))
    ranked = {q: [d for _, d in sorted(v)] for q, v in runs.items()}
    judged = [q for q in bm25 if q in qrels]
    ndcg = np.mean([ndcg_at(ranked.get(q, []), qrels[q]) for q in judged])
    print(f"dl19: {len(judged)} queries, BM25 top-100 re-ranked with inf_rerank: nDCG@10 {ndcg:.4f} "
          f"(reference {REFERENCE['dl19']})")
    return abs(ndcg - REFERENCE["dl19"]) <= TOLERANCE


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", default="postgres")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../../shared/data"))
    ap.add_argument("--only", choices=["scifact", "dl19"])
    ap.add_argument("--model", default=None, help="SciFact with this registered model (no reference figure)")
    args = ap.parse_args()
    if not os.path.isdir(args.data):
        print(f"skipped: {args.data} not found (retrieval figures need the shared data)")
        return
    ok = True
    if args.only in (None, "dl19"):
        ok &= dl19(args)
    if args.only in (None, "scifact"):
        ok &= scifact(args)
    if not ok:
        sys.exit("FAILED: figures differ from REFERENCE.md beyond ±0.002 or top-10 lists differ")


if __name__ == "__main__":
    main()
