#!/usr/bin/env python3
"""Decoder embedders on this machine's CPU: passages/s at 128 tokens and
single-query latency through SQL, against raw ONNX Runtime on the same graph
(Python onnxruntime, the same version as the library inf_ir loads, same
threads and batch shape) and llama.cpp's embedding mode on the same GGUF
(its own quantised compute); then the shared worker's memory with 8 sessions
embedding at once. Run by benches/decoder_embed.sh, which starts the cluster.

Each model is registered with max_tokens 128 and fed texts longer than that,
so every passage is 128 tokens in every engine. SQL, raw ONNX Runtime and
llama.cpp run one after another on the same texts (one process at a time on
the machine's cores); the baselines run in their own processes so that their
memory is not counted in the server's.

Usage: decoder_embed.py --port P --models name=FOLDER[:GGUF],... [--out JSON]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOKENS = 128
THREADS = 2
ROWS_PER_RUN = 8192 // TOKENS  # inf_ir.batch_tokens 8192: the same batch shape in every engine

RAW_ORT = r"""
import json, statistics, sys, time
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
folder, texts_file, queries_file, pooling, tokens, threads, rows = sys.argv[1:8]
tokens, threads, rows = int(tokens), int(threads), int(rows)
texts, queries = json.load(open(texts_file)), json.load(open(queries_file))
tok = Tokenizer.from_file(folder + "/tokenizer.json")
tok.no_padding()
tok.enable_truncation(tokens)
opts = ort.SessionOptions()
opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
sess = ort.InferenceSession(folder + "/model.onnx", opts, providers=["CPUExecutionProvider"])
inputs = {i.name for i in sess.get_inputs()}
def embed(batch):
    enc = [tok.encode(t).ids for t in batch]
    width = max(map(len, enc))
    ids = np.zeros((len(enc), width), np.int64)
    mask = np.zeros_like(ids)
    for r, e in enumerate(enc):
        ids[r, :len(e)], mask[r, :len(e)] = e, 1
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "position_ids" in inputs:
        feeds["position_ids"] = np.maximum(np.cumsum(mask, 1) - 1, 0)
    if "token_type_ids" in inputs:
        feeds["token_type_ids"] = np.zeros_like(ids)
    states = sess.run(["last_hidden_state"], feeds)[0]
    lens = mask.sum(1)
    if pooling == "last":
        v = states[np.arange(len(enc)), lens - 1]
    else:
        v = (states * mask[:, :, None]).sum(1) / lens[:, None]
    return v / np.linalg.norm(v, axis=1, keepdims=True)
embed(texts[:2])
t0 = time.perf_counter()
for i in range(0, len(texts), rows):
    embed(texts[i:i + rows])
rate = len(texts) / (time.perf_counter() - t0)
lat = []
for q in queries:
    t = time.perf_counter()
    embed([q])
    lat.append((time.perf_counter() - t) * 1000)
print(json.dumps({"passages_per_s": rate, "query_p50_ms": statistics.median(lat)}))
"""

LLAMA_CPP = r"""
import json, statistics, sys, time
import llama_cpp
gguf, texts_file, queries_file, tokens, threads = sys.argv[1:6]
tokens, threads = int(tokens), int(threads)
texts, queries = json.load(open(texts_file)), json.load(open(queries_file))
# One text per call: llama.cpp puts a multi-text batch in one KV cache, and
# its attention then grows with the whole batch (64 x 128 tokens ran 3.9x
# slower than one at a time for SmolLM2 here).
llm = llama_cpp.Llama(gguf, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST, n_ctx=512,
                      n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
# The same 128-token cut, in llama.cpp's own tokens.
cut = [llm.detokenize(llm.tokenize(t.encode(), add_bos=False)[:tokens]).decode(errors="ignore") for t in texts]
llm.embed(cut[0])
t0 = time.perf_counter()
for text in cut:
    llm.embed(text)
rate = len(cut) / (time.perf_counter() - t0)
lat = []
for q in queries:
    t = time.perf_counter()
    llm.embed(q)
    lat.append((time.perf_counter() - t) * 1000)
print(json.dumps({"passages_per_s": rate, "query_p50_ms": statistics.median(lat)}))
"""


def texts_and_queries(data, n):
    """Passages of three DL19 (or sample) passages joined: past 128 tokens in any tokenizer."""
    dl19 = os.path.join(data, "dl19", "passages.jsonl")
    if os.path.isfile(dl19):
        raw = [json.loads(l)["text"] for _, l in zip(range(3 * n), open(dl19))]
    else:
        raw = [l.split("\t", 1)[1].strip() for l in open(os.path.join(ROOT, "examples", "sample_passages.tsv"))]
    texts = [" ".join(raw[(3 * i + k) % len(raw)] for k in range(3)) for i in range(n)]
    queries = [("only passages about the cause, not the treatment", "what causes high blood pressure"),
               ("a definition from a dictionary or encyclopedia", "what is a lipid"),
               ("answers that give a number of years", "how long do dogs live"),
               ("not about the city in Texas", "paris weather in may"),
               ("passages from a government website", "how to renew a passport"),
               ("only if it names a specific drug", "treatment for migraine"),
               ("about the band, not the insect", "the beatles first album"),
               ("a step-by-step answer", "how to boil an egg"),
               ("about the river, not the company", "amazon length in miles"),
               ("passages that mention the year", "when was the eiffel tower built")]
    return texts, queries


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def worker_host_memory():
    """VmRSS and VmHWM (peak) of the shared worker's model host, in MB."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="ignore")
            if "inf_ir worker model host" in cmd:
                status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
                kb = lambda k: int(status[k].split()[0]) / 1024  # noqa: E731
                return {"rss_mb": round(kb("VmRSS")), "peak_mb": round(kb("VmHWM"))}
        except (OSError, KeyError):
            continue
    return None


def backend_rss_mb(conn):
    pids = [p for (p,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'")]
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return round(total)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--models", required=True, help="name=FOLDER[:GGUF][@N],... (N passages, default 64)")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--python", default=sys.executable, help="Python with onnxruntime and tokenizers")
    ap.add_argument("--llama-python", default=None, help="Python with llama-cpp-python")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--memory-model", default=None, help="model for the 8-session memory check")
    ap.add_argument("--out", default=None)
    ap.add_argument("--llama-only", action="store_true",
                    help="re-measure only llama.cpp, into the models already in --out")
    args = ap.parse_args()
    if args.llama_only:
        return llama_only(args)
    dsn = f"host=127.0.0.1 port={args.port} user=postgres dbname=inf_ir_bench"
    admin = psycopg.connect(f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres", autocommit=True)
    admin.execute("DROP DATABASE IF EXISTS inf_ir_bench WITH (FORCE)")
    admin.execute("CREATE DATABASE inf_ir_bench")
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET client_min_messages = warning")
    conn.execute("CREATE EXTENSION inf_ir")
    conn.execute(f"SET inf_ir.threads = {THREADS}")
    conn.execute("SET inf_ir.batch_tokens = 8192")  # ROWS_PER_RUN's batch shape
    tmp = os.path.join("/tmp", f"inf_ir_decoder_bench_{os.getpid()}")
    os.makedirs(tmp, exist_ok=True)
    results = {"tokens": TOKENS, "threads": THREADS, "cpu": cpu_name(), "models": []}
    for spec in args.models.split(","):
        name, rest = spec.split("=", 1)
        rest, _, n = rest.partition("@")
        folder, _, gguf = rest.partition(":")
        n = int(n or 64)
        texts, queries = texts_and_queries(args.data, n)
        query_texts = [f"{q} {i}" for i, q in queries]
        json.dump(texts, open(f"{tmp}/texts.json", "w"))
        json.dump(query_texts, open(f"{tmp}/queries.json", "w"))
        row = conn.execute("SELECT pooling FROM inf_register_model(%s, %s, query_template => '{query} {instruction}', "
                           "max_tokens => %s)", (name, folder, TOKENS)).fetchone()
        pooling = row[0]
        conn.execute("SELECT inf_embed_many(%s, %s)", (texts[:2], name))  # load and warm up
        t0 = time.perf_counter()
        made = conn.execute("SELECT count(embedding) FROM inf_embed_many(%s, %s)", (texts, name)).fetchone()[0]
        sql_rate = made / (time.perf_counter() - t0)
        lat = []
        for instruction, query in queries:
            t = time.perf_counter()
            conn.execute("SELECT inf_embed_query(%s, %s, %s)", (instruction, query, name)).fetchone()
            lat.append((time.perf_counter() - t) * 1000)
        entry = {"model": name, "folder": folder, "passages": n, "pooling": pooling,
                 "weights_mb": round(weights_bytes(folder) / 1e6),
                 "sql": {"passages_per_s": sql_rate, "query_p50_ms": statistics.median(lat)}}
        entry["raw_ort"] = run_json([args.python, "-c", RAW_ORT, folder, f"{tmp}/texts.json", f"{tmp}/queries.json",
                                     pooling, str(TOKENS), str(THREADS), str(ROWS_PER_RUN)])
        entry["ratio_vs_raw_ort"] = sql_rate / entry["raw_ort"]["passages_per_s"]
        if gguf and args.llama_python:
            entry["llama_cpp"] = run_json([args.llama_python, "-c", LLAMA_CPP, gguf, f"{tmp}/texts.json",
                                           f"{tmp}/queries.json", str(TOKENS), str(THREADS)])
            entry["gguf"] = gguf
        entry["worker_host"] = worker_host_memory()
        print(json.dumps(entry), flush=True)
        results["models"].append(entry)
    if args.memory_model:
        results["sessions"] = sessions_memory(dsn, args.memory_model, args.sessions)
        print(json.dumps(results["sessions"]), flush=True)
    if args.out:
        json.dump(results, open(args.out, "w"), indent=1)
    conn.close()
    admin.execute("DROP DATABASE IF EXISTS inf_ir_bench WITH (FORCE)")


def llama_only(args):
    results = json.load(open(args.out))
    tmp = os.path.join("/tmp", f"inf_ir_decoder_bench_{os.getpid()}")
    os.makedirs(tmp, exist_ok=True)
    for entry in results["models"]:
        if "gguf" not in entry:
            continue
        texts, queries = texts_and_queries(args.data, entry["passages"])
        json.dump(texts, open(f"{tmp}/texts.json", "w"))
        json.dump([f"{q} {i}" for i, q in queries], open(f"{tmp}/queries.json", "w"))
        entry["llama_cpp"] = run_json([args.llama_python, "-c", LLAMA_CPP, entry["gguf"], f"{tmp}/texts.json",
                                       f"{tmp}/queries.json", str(TOKENS), str(THREADS)])
        print(json.dumps({"model": entry["model"], "llama_cpp": entry["llama_cpp"]}), flush=True)
    json.dump(results, open(args.out, "w"), indent=1)


def sessions_memory(dsn, model, sessions):
    """`sessions` connections embed a query each at the same moment: the
    worker's host holds one copy of the model; backends stay small."""
    before = worker_host_memory()
    barrier = threading.Barrier(sessions)
    errors, backend_peaks = [], []
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(sessions)]

    def one(c, i):
        try:
            barrier.wait()
            c.execute("SELECT inf_embed_query(%s, %s, %s)", ("only recent sources", f"question number {i}", model))
        except Exception as e:  # reported, not raised: the figure says how many failed
            errors.append(str(e))

    threads = [threading.Thread(target=one, args=(c, i)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    backend_peaks = backend_rss_mb(conns[0])
    for c in conns:
        c.close()
    return {"model": model, "sessions": sessions, "errors": errors, "worker_host_before": before,
            "worker_host_after": worker_host_memory(), "largest_backend_peak_mb": backend_peaks}


def weights_bytes(folder):
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.startswith("model.onnx"))


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
