#!/usr/bin/env python3
"""A corpus sharded with PL/Proxy (sql/sharding/) at 1, 2 and 4 shards, next
to the same corpus on one server without a proxy: search latency and
recall@10, search throughput against concurrent clients, and load rates
(text rows routed through the proxy, passages embedded on the shards'
workers, vectors moved with put_embedded_passages, index build).

The vectors are benches/search_latency.py's hard synthetic set (SciFact
embeddings plus covariance-shaped noise, fixed seed); queries are the 300
SciFact queries embedded once, searched with inf_search_vector (single
server) and inf_ir_proxy.inf_search_vector (proxy), so query embedding is
excluded from the latency. The shards are local clusters on this machine,
so they share its cores with the proxy. Called by benches/sharding.sh.
"""
import argparse
import json
import os
import subprocess
import threading
import time

import numpy as np
import psycopg

from search_latency import build_index, copy_binary_vectors, ensure_corpus, make_synthetic, percentile, vector_text

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LAYOUTS = (1, 2, 4)
CLIENTS = (1, 2, 4, 8)


def shell(script):
    subprocess.run(["bash", "-c", f"source {ROOT}/scripts/lib/common.sh; {script}"], check=True)


def connect(port, db="postgres"):
    conn = psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname={db}", autocommit=True)
    conn.execute("SET client_min_messages = warning")
    return conn


def latency_and_recall(conn, sql, corpus, texts, exact):
    took, hits = [], 0
    for text, want in zip(texts, exact):
        t = time.perf_counter()
        got = [r[0] for r in conn.execute(sql, (text, corpus), prepare=True).fetchall()]
        took.append(time.perf_counter() - t)
        hits += len(set(got) & set(want))
    return {"p50_ms": percentile(took, 50), "p95_ms": percentile(took, 95), "recall_at_10": hits / (10 * len(texts))}


def throughput(port, db, sql, corpus, texts, clients, seconds=5.0):
    with connect(port, db) as conn:  # warm caches and plans first
        for text in texts[:50]:
            conn.execute(sql, (text, corpus), prepare=True).fetchall()
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def work(c):
        with connect(port, db) as conn:
            i = c
            while time.perf_counter() < stop:
                conn.execute(sql, (texts[i % len(texts)], corpus), prepare=True).fetchall()
                counts[c] += 1
                i += clients

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True, help="the benchmark cluster (single server and proxy)")
    ap.add_argument("--home", required=True)
    ap.add_argument("--scifact", required=True)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--embed-rows", type=int, default=1024, help="SciFact passages embedded per layout")
    ap.add_argument("--probes", type=int, help="inf_ir.probes on every server (default: the servers' own)")
    ap.add_argument("--json")
    args = ap.parse_args()

    single = connect(args.port)
    single.execute("CREATE EXTENSION IF NOT EXISTS inf_ir")
    probes = f"SET inf_ir.probes = {args.probes}" if args.probes else "RESET inf_ir.probes"
    single.execute(f"ALTER DATABASE postgres {probes}")
    fp = single.execute("SELECT fingerprint FROM inf_ir.models WHERE name = 'minilm'").fetchone()[0]
    if single.execute("SELECT count(*) FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) "
                      "WHERE c.name = 'scifact' AND p.embedded_with = %s", (fp,)).fetchone()[0] < 5183:
        print("  embedding SciFact (5,183 passages, a few minutes, once)", flush=True)
        single.execute("SELECT * FROM inf_load_jsonl('scifact', %s)", (os.path.join(args.scifact, "corpus.jsonl"),))
        single.execute("CALL inf_embed_corpus('scifact')")
    base = np.array([r[0] for r in single.execute(
        "SELECT embedding FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'scifact' "
        "ORDER BY passage_id")], dtype=np.float32)
    qtexts = [json.loads(line)["text"] for line in open(os.path.join(args.scifact, "queries.jsonl"))]
    queries = np.array([r[1] for r in single.execute(
        "SELECT ord, embedding FROM inf_embed_query_many(NULL, %s) ORDER BY ord", (qtexts,))], dtype=np.float32)
    texts = [vector_text(q) for q in queries]
    mat = make_synthetic(base, args.rows, seed=42)
    scores = queries @ mat.T
    exact = [[str(i) for i in np.argsort(-s, kind="stable")[:10]] for s in scores]
    docs = [json.loads(line) for line in open(os.path.join(args.scifact, "corpus.jsonl"))]

    name = f"synthetic_{args.rows // 1000}k" if args.rows % 1000 == 0 else f"synthetic_{args.rows}"  # search_latency.py's name
    ensure_corpus(single, name, args.rows, [(0, mat)], fp)
    build_index(f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres", name)
    single_sql = "SELECT external_id FROM inf_search_vector(%s::text::real[], 10, %s)"
    single.close()
    single = connect(args.port)  # with the database's inf_ir.probes
    results = {"rows": args.rows, "cores": os.cpu_count(), "probes": args.probes,
               "single": latency_and_recall(single, single_sql, name, texts, exact)}
    results["single"]["qps"] = {c: throughput(args.port, "postgres", single_sql, name, texts, c) for c in CLIENTS}
    print(f"single server, no proxy: p50 {results['single']['p50_ms']:.2f} ms, p95 {results['single']['p95_ms']:.2f} "
          f"ms, recall@10 {results['single']['recall_at_10']:.3f}, QPS by clients {results['single']['qps']}",
          flush=True)

    ports = [args.port + 40 + i for i in range(max(LAYOUTS))]
    clusters = [os.path.join(args.home, f"bench-shard-{i}") for i in range(max(LAYOUTS))]
    try:
        for i, (port, cluster) in enumerate(zip(ports, clusters)):
            shell(f"stop_cluster {cluster}; rm -rf {cluster}; start_cluster {cluster} {port}; set_preload {cluster} yes")
            with connect(port) as c:
                c.execute(f"CREATE DATABASE inf_ir_shard_{i}")
            with connect(port, f"inf_ir_shard_{i}") as c:
                c.execute("CREATE EXTENSION inf_ir")
                c.execute(f"ALTER DATABASE inf_ir_shard_{i} {probes}")
            subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", f"inf_ir_shard_{i}",
                            "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", os.path.join(ROOT, "sql/sharding/shard.sql")],
                           check=True, stdout=subprocess.DEVNULL)
        single.execute("DROP DATABASE IF EXISTS inf_ir_proxy WITH (FORCE)")
        single.execute("CREATE DATABASE inf_ir_proxy")
        proxy = connect(args.port, "inf_ir_proxy")
        proxy.execute("CREATE EXTENSION inf_ir")
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(args.port), "-U", "postgres", "-d", "inf_ir_proxy", "-X",
                        "-q", "-v", "ON_ERROR_STOP=1", "-f", os.path.join(ROOT, "sql/sharding/proxy.sql")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proxy.execute("CREATE TABLE staging(ext bigint, embedding real[])")
        copy_binary_vectors(proxy, "staging", np.arange(args.rows), mat)
        proxy_sql = "SELECT external_id FROM inf_ir_proxy.inf_search_vector(%s::text::real[], 10, %s)"
        for n in LAYOUTS:
            proxy.execute("SELECT inf_ir_proxy.set_shards(%s)", ([f"host=127.0.0.1 port={ports[i]} "
                                                                  f"dbname=inf_ir_shard_{i} user=postgres"
                                                                  for i in range(n)],))
            r = {}
            # Text rows routed through the proxy (SciFact, 1000 per call).
            proxy.execute("SELECT inf_ir_proxy.create_corpus(%s)", (f"text{n}",))
            t0 = time.perf_counter()
            for i in range(0, len(docs), 1000):
                part = docs[i:i + 1000]
                proxy.execute("SELECT inf_ir_proxy.put_passages(%s, %s, %s, %s)",
                              (f"text{n}", [d["_id"] for d in part], [d["text"] for d in part],
                               [d.get("title") or None for d in part]))
            r["text_rows_per_s"] = len(docs) / (time.perf_counter() - t0)
            # Embedding on the shards' workers, all shards at once.
            proxy.execute("SELECT inf_ir_proxy.create_corpus(%s)", (f"embed{n}",))
            part = docs[:args.embed_rows]
            proxy.execute("SELECT inf_ir_proxy.put_passages(%s, %s, %s, %s)",
                          (f"embed{n}", [d["_id"] for d in part], [d["text"] for d in part],
                           [d.get("title") or None for d in part]))
            t0 = time.perf_counter()
            proxy.execute("CALL inf_ir_proxy.embed_corpus(%s, 128)", (f"embed{n}",))
            r["embedded_per_s"] = len(part) / (time.perf_counter() - t0)
            # Vectors moved onto the shards, then each shard's index.
            proxy.execute("SELECT inf_ir_proxy.create_corpus(%s)", (f"vec{n}",))
            t0 = time.perf_counter()
            for lo in range(0, args.rows, 5000):
                proxy.execute("SELECT inf_ir_proxy.put_embedded_passages(%s, array_agg(ext::text ORDER BY ext), "
                              "array_agg('synthetic passage ' || ext ORDER BY ext), NULL, "
                              "array_agg(embedding::text ORDER BY ext), %s) FROM staging WHERE ext >= %s AND ext < %s",
                              (f"vec{n}", fp, lo, lo + 5000))
            r["vector_rows_per_s"] = args.rows / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            proxy.execute("CALL inf_ir_proxy.embed_corpus(%s)", (f"vec{n}",))  # nothing to embed: the indexes
            r["index_build_s"] = time.perf_counter() - t0
            r.update(latency_and_recall(proxy, proxy_sql, f"vec{n}", texts, exact))
            r["qps"] = {c: throughput(args.port, "inf_ir_proxy", proxy_sql, f"vec{n}", texts, c) for c in CLIENTS}
            results[f"shards_{n}"] = r
            print(f"{n} shard(s) via PL/Proxy: p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, recall@10 "
                  f"{r['recall_at_10']:.3f}, QPS by clients {r['qps']}; load: {r['text_rows_per_s']:.0f} text rows/s, "
                  f"{r['embedded_per_s']:.1f} passages embedded/s, {r['vector_rows_per_s']:.0f} vector rows/s, "
                  f"index build {r['index_build_s']:.1f} s", flush=True)
        proxy.close()
    finally:
        for cluster in clusters:
            shell(f"stop_cluster {cluster}; rm -rf {cluster}")
        single.execute("DROP DATABASE IF EXISTS inf_ir_proxy WITH (FORCE)")
        single.execute("ALTER DATABASE postgres RESET inf_ir.probes")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
