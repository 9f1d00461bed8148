#!/usr/bin/env python3
"""inf_search latency, load time, memory and recall at 5k (SciFact), 100k and
1M passages of 384 dimensions, against an exact scan in plain SQL over the
same table, measured in the same run. Called by benches/search_latency.sh.

The 100k and 1M corpora are SciFact's stored embeddings plus Gaussian noise
shaped like their covariance (fixed seed), L2-normalised: their neighbours are
nearly tied, which makes them harder than real data. Queries are the 300
SciFact queries embedded with inf_embed_query; latency excludes embedding the
query (inf_search_vector with a prepared statement, measured client-side).
"""
import argparse
import os
import struct
import sys
import time

import numpy as np
import psycopg

SIZES = {"100k": 100_000, "1m": 1_000_000}


def percentile(xs, p):
    return float(np.percentile(np.array(xs) * 1000, p))


def backend_rss_mb(conn):
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def copy_binary_vectors(conn, table, ext_ids, mat):
    """COPY (bigint, real[]) rows in PostgreSQL's binary format, built with numpy."""
    n, dim = mat.shape
    row = np.dtype([("ncols", ">i2"), ("l1", ">i4"), ("id", ">i8"), ("l2", ">i4"),
                    ("hdr", ">i4", (5,)), ("el", [("len", ">i4"), ("val", ">f4")], (dim,))])
    rows = np.zeros(n, dtype=row)
    rows["ncols"] = 2
    rows["l1"] = 8
    rows["id"] = ext_ids
    rows["l2"] = 20 + 8 * dim
    rows["hdr"] = [1, 0, 700, dim, 1]  # ndim, hasnull, float4 oid, length, lower bound
    rows["el"]["len"] = 4
    rows["el"]["val"] = mat
    with conn.cursor().copy(f"COPY {table} FROM STDIN WITH (FORMAT binary)") as cp:
        cp.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        step = 50_000
        for i in range(0, n, step):
            cp.write(rows[i:i + step].tobytes())
        cp.write(struct.pack(">h", -1))


def make_synthetic(base, n, seed):
    rng = np.random.default_rng(seed)
    cov = np.cov(base.T)
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(cov.shape[0]))
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for i in range(0, n, 100_000):
        m = min(100_000, n - i)
        pick = base[rng.integers(0, len(base), m)]
        noise = rng.standard_normal((m, base.shape[1])) @ chol.T
        x = pick + noise
        out[i:i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def ensure_corpus(conn, name, mat, fingerprint):
    have = conn.execute("SELECT count(*) FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) "
                        "WHERE c.name = %s", (name,)).fetchone()[0]
    if have == len(mat):
        return
    t0 = time.time()
    conn.execute("SELECT inf_drop_corpus(%s)", (name,))
    cid = conn.execute("SELECT inf_create_corpus(%s)", (name,)).fetchone()[0]
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS staging(ext bigint, embedding real[])")
    conn.execute("TRUNCATE staging")
    copy_binary_vectors(conn, "staging", np.arange(len(mat)), mat)
    conn.execute("INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with) "
                 "SELECT %s, ext::text, 'synthetic passage ' || ext, embedding, %s FROM staging", (cid, fingerprint))
    conn.execute("TRUNCATE staging")
    conn.execute(f"VACUUM ANALYZE inf_ir.passages")
    print(f"  loaded {name}: {len(mat)} rows in {time.time() - t0:.0f} s", flush=True)


def bench_corpus(conn, name, queries, exact_ids, sql_queries):
    t0 = time.time()
    conn.execute("SELECT count(*) FROM inf_search_vector(%s::real[], 10, %s)", (queries[0].tolist(), name))
    load_s = time.time() - t0
    rss = backend_rss_mb(conn)
    lat, recall = [], []
    # Vectors go as pre-formatted text so the client's cost is the driver's,
    # not Python's float formatting (the pgvector figures are measured the same way).
    texts = ["{" + ",".join(f"{x:.9g}" for x in q) + "}" for q in queries]
    for qi, ql in enumerate(texts):
        t0 = time.perf_counter()
        ids = [r[0] for r in conn.execute("SELECT external_id FROM inf_search_vector(%s::text::real[], 10, %s)",
                                          (ql, name), prepare=True).fetchall()]
        lat.append(time.perf_counter() - t0)
        recall.append(len(set(ids) & set(exact_ids[qi])) / 10)
    sql_lat = []
    for q in queries[:sql_queries]:
        t0 = time.perf_counter()
        conn.execute(
            "SELECT p.external_id FROM inf_ir.passages p WHERE p.corpus_id = (SELECT corpus_id FROM inf_ir.corpora "
            "WHERE name = %s) ORDER BY (SELECT sum(a::float8 * b::float8) FROM unnest(p.embedding, %s::real[]) t(a, b)) DESC LIMIT 10",
            (name, q.tolist()), prepare=True).fetchall()
        sql_lat.append(time.perf_counter() - t0)
    return {
        "load_s": load_s, "rss_mb": rss, "p50": percentile(lat, 50), "p95": percentile(lat, 95),
        "recall": float(np.mean(recall)), "sql_p50": percentile(sql_lat, 50) if sql_lat else float("nan"),
        "sql_n": len(sql_lat),
    }


def exact_topk(mat, ids, queries, k=10):
    out = []
    for q in queries:
        s = mat @ q
        top = np.argpartition(-s, k)[:k]
        top = top[np.lexsort((top, -s[top]))]
        out.append([str(ids[i]) for i in top])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--scifact", required=True)
    ap.add_argument("--sizes", default="5k,100k,1m")
    ap.add_argument("--sql-queries", type=int, default=5)
    args = ap.parse_args()
    dsn = f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS inf_ir")
        fp = conn.execute("SELECT fingerprint FROM inf_ir.models WHERE name = 'minilm'").fetchone()[0]
        have = conn.execute("SELECT count(*) FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) "
                            "WHERE c.name = 'scifact' AND p.embedded_with = %s", (fp,)).fetchone()[0]
        if have < 5183:
            print("  embedding SciFact (5,183 passages, a few minutes, once)", flush=True)
            conn.execute("SELECT * FROM inf_load_jsonl('scifact', %s)", (os.path.join(args.scifact, "corpus.jsonl"),))
            conn.execute("CALL inf_embed_corpus('scifact')")
        rows = conn.execute("SELECT external_id, embedding FROM inf_ir.passages p JOIN inf_ir.corpora c "
                            "USING (corpus_id) WHERE c.name = 'scifact' ORDER BY passage_id").fetchall()
        base_ids = [r[0] for r in rows]
        base = np.array([r[1] for r in rows], dtype=np.float32)
        qtexts = [l for l in open(os.path.join(args.scifact, "queries.jsonl"))]
        import json
        qtexts = [json.loads(l)["text"] for l in qtexts]
        queries = np.array([r[1] for r in conn.execute(
            "SELECT ord, embedding FROM inf_embed_query_many(NULL, %s) ORDER BY ord", (qtexts,)).fetchall()],
            dtype=np.float32)
        results = {}
        for size in args.sizes.split(","):
            if size == "5k":
                name, mat, ids = "scifact", base, base_ids
            else:
                n = SIZES[size]
                mat = make_synthetic(base, n, seed=42)
                name, ids = f"synthetic_{size}", list(range(n))
                ensure_corpus(conn, name, mat, fp)
            exact = exact_topk(mat, ids, queries)
            r = bench_corpus(conn, name, queries, exact, args.sql_queries)
            results[size] = r
            print(f"{size:>5} ({len(mat)} x {mat.shape[1]}): inf_search p50 {r['p50']:.2f} ms, p95 {r['p95']:.2f} ms, "
                  f"recall@10 {r['recall']:.4f}, first-search load {r['load_s']:.2f} s, backend RSS {r['rss_mb']:.0f} MB; "
                  f"plain-SQL exact scan p50 {r['sql_p50']:.1f} ms ({r['sql_n']} queries), "
                  f"speed-up {r['sql_p50'] / r['p50']:.0f}x", flush=True)


if __name__ == "__main__":
    main()
