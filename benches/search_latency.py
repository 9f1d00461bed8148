#!/usr/bin/env python3
"""inf_search over the inf_ivf index at 5k (SciFact), 100k and 1M passages of
384 dimensions: index build time, size and peak backend memory, then p50/p95
latency and recall@10 for a sweep of inf_ir.probes, against exact numpy on
the same vectors; and for the largest size, what applications hit: the next
search after a committed INSERT/UPDATE/DELETE, 1% and 10% metadata filters, memory
of 8 searching sessions, the first search after a restart, and 1 vs 8
sessions inserting at once. Called by benches/search_latency.sh.

The 100k and 1M corpora are SciFact's stored embeddings plus Gaussian noise
shaped like their covariance (fixed seed), L2-normalised: their neighbours are
nearly tied, which makes them harder than real data. Queries are the 300
SciFact queries embedded with inf_embed_query; latency excludes embedding the
query (inf_search_vector with a prepared statement, measured client-side).
"""
import argparse
import os
import struct
import time

import numpy as np
import psycopg

SIZES = {"100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}


def percentile(xs, p):
    return float(np.percentile(np.array(xs) * 1000, p))


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


def synthetic_chunks(base, n, seed, step=100_000):
    """(first row, rows) of the hard synthetic set, 100k rows at a time: any
    size is the same stream, so the 1M set is the first 1M rows of the 10M one."""
    rng = np.random.default_rng(seed)
    cov = np.cov(base.T)
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(cov.shape[0]))
    for i in range(0, n, step):
        m = min(step, n - i)
        pick = base[rng.integers(0, len(base), m)]
        noise = rng.standard_normal((m, base.shape[1])) @ chol.T
        x = pick + noise
        yield i, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_synthetic(base, n, seed):
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for i, chunk in synthetic_chunks(base, n, seed):
        out[i:i + len(chunk)] = chunk
    return out


def ensure_corpus(conn, name, n, chunks, fingerprint):
    """Load `n` rows from `chunks` (an iterable of (first row, rows)) unless the corpus has them."""
    have, tagged = conn.execute("SELECT count(*), bool_and(metadata ? 'tenth') FROM inf_ir.passages p "
                                "JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = %s", (name,)).fetchone()
    if have == n and tagged:
        return
    t0 = time.time()
    conn.execute("SELECT inf_drop_corpus(%s)", (name,))
    cid = conn.execute("SELECT inf_create_corpus(%s)", (name,)).fetchone()[0]
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS staging(ext bigint, embedding real[])")
    for first, rows in chunks:
        conn.execute("TRUNCATE staging")
        copy_binary_vectors(conn, "staging", np.arange(first, first + len(rows)), rows)
        # metadata.shard = ext % 100 and .tenth = ext % 10: filters that keep 1% and 10% of the rows.
        conn.execute("INSERT INTO inf_ir.passages(corpus_id, external_id, body, metadata, embedding, embedded_with) "
                     "SELECT %s, ext::text, 'synthetic passage ' || ext, "
                     "jsonb_build_object('shard', ext %% 100, 'tenth', ext %% 10), "
                     "embedding, %s FROM staging", (cid, fingerprint))
        if first and first % 1_000_000 == 0:
            print(f"  loading {name}: {first} rows, {time.time() - t0:.0f} s", flush=True)
    conn.execute("TRUNCATE staging")
    conn.execute("VACUUM ANALYZE inf_ir.passages")
    print(f"  loaded {name}: {n} rows in {time.time() - t0:.0f} s", flush=True)


def peak_rss_mb(conn):
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_index(dsn, name):
    """(Re)build the corpus's index in a fresh session: seconds, MB on disk, peak backend RSS."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        t0 = time.time()
        index = conn.execute("SELECT inf_corpus_index(%s, rebuild => true)", (name,)).fetchone()[0]
        seconds = time.time() - t0
        size = conn.execute("SELECT pg_relation_size(('inf_ir.' || %s)::regclass)", (index,)).fetchone()[0]
        lists = conn.execute("SELECT lists FROM inf_index_info(('inf_ir.' || %s)::regclass)", (index,)).fetchone()[0]
        return {"build_s": seconds, "index_mb": size / 2**20, "peak_rss_mb": peak_rss_mb(conn), "lists": lists,
                "index": index}


def vector_text(q):
    # Pre-formatted text, so the client's cost is the driver's, not Python's float formatting.
    return "{" + ",".join(f"{x:.9g}" for x in q) + "}"


def search(conn, name, qtext, k=10, filt=None):
    if filt is None:
        sql, args = "SELECT external_id FROM inf_search_vector(%s::text::real[], %s, %s)", (qtext, k, name)
    else:
        sql, args = ("SELECT external_id FROM inf_search_vector(%s::text::real[], %s, %s, filter => %s::jsonb)",
                     (qtext, k, name, filt))
    return [r[0] for r in conn.execute(sql, args, prepare=True).fetchall()]


def sweep(conn, name, texts, exact_ids, probes):
    conn.execute(f"SET inf_ir.probes = {probes}")
    search(conn, name, texts[0])
    lat, recall = [], []
    for qi, qt in enumerate(texts):
        t0 = time.perf_counter()
        ids = search(conn, name, qt)
        lat.append(time.perf_counter() - t0)
        recall.append(len(set(ids) & set(exact_ids[qi])) / 10)
    return {"probes": probes, "p50": percentile(lat, 50), "p95": percentile(lat, 95), "recall": float(np.mean(recall))}


def timed(conn, name, qtext):
    t0 = time.perf_counter()
    search(conn, name, qtext)
    return (time.perf_counter() - t0) * 1000


def churn(dsn, name, texts, mat):
    """ms of the next search in another session after one committed write of each kind."""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as writer, psycopg.connect(dsn, autocommit=True) as reader:
        reader.execute("SET client_min_messages = warning")
        for qt in texts[:20]:
            search(reader, name, qt)
        base = [timed(reader, name, texts[i]) for i in range(20, 60)]
        cid, fp = writer.execute("SELECT c.corpus_id, m.fingerprint FROM inf_ir.corpora c JOIN inf_ir.models m "
                                 "ON m.name = c.model WHERE c.name = %s", (name,)).fetchone()
        for kind in ("insert", "update", "delete"):
            times = []
            for i in range(10):
                v = vector_text(mat[i])
                if kind == "insert":
                    writer.execute("INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with) "
                                   "VALUES (%s, %s, 'churn', %s::text::real[], %s)", (cid, f"churn{i}", v, fp))
                elif kind == "update":
                    writer.execute("UPDATE inf_ir.passages SET embedding = %s::text::real[] WHERE corpus_id = %s "
                                   "AND external_id = %s", (vector_text(mat[i + 100]), cid, f"churn{i}"))
                else:
                    writer.execute("DELETE FROM inf_ir.passages WHERE corpus_id = %s AND external_id = %s",
                                   (cid, f"churn{i}"))
                times.append(timed(reader, name, texts[60 + i]))
            out[kind] = float(np.median(times))
        out["normal"] = float(np.median(base))
    return out


def filtered(conn, name, texts, queries, mat, ids, key, value, modulo, exact_rows=None, filter_index=False):
    """p50 and exactness of inf_search_vector with filter {key: value} (rows with id % modulo == value),
    under the default inf_ir.exact_filter_rows or the given one (0: always through the vector index),
    or through a filter index made for it (inf_filter_index, dropped afterwards)."""
    keep = np.array([int(i) % modulo == value for i in ids])
    exact = exact_topk(mat[keep], [i for i, k in zip(ids, keep) if k], queries)
    if exact_rows is not None:
        conn.execute(f"SET inf_ir.exact_filter_rows = {exact_rows}")
    filt = f'{{"{key}": {value}}}'
    built = None
    if filter_index:
        t0 = time.perf_counter()
        conn.execute("SELECT inf_filter_index(%s, %s)", (name, filt))
        built = time.perf_counter() - t0
    for qt in texts[:10]:
        search(conn, name, qt, filt=filt)
    lat, equal, counts = [], 0, []
    for qt, want in zip(texts, exact):
        t0 = time.perf_counter()
        got = search(conn, name, qt, filt=filt)
        lat.append(time.perf_counter() - t0)
        equal += got == want
        counts.append(len(got))
    conn.execute("RESET inf_ir.exact_filter_rows")
    if filter_index:
        conn.execute("SELECT inf_drop_filter_index(%s, %s)", (name, filt))
    return {"p50": percentile(lat, 50), "equal": equal, "n": len(texts), "min_rows": min(counts),
            "kept": int(keep.sum()), "filter_index_build_s": built}


FILTERS = [  # label, key, value, modulo, inf_ir.exact_filter_rows (None: default), filter index
    ("1% filter", "shard", 7, 100, None, False),
    ("1% filter through the index (exact_filter_rows 0)", "shard", 7, 100, 0, False),
    ("1% filter with its filter index (inf_filter_index)", "shard", 7, 100, None, True),
    ("10% filter", "tenth", 3, 10, None, False),
    ("10% filter with its filter index (inf_filter_index)", "tenth", 3, 10, None, True),
]


def sessions_memory(dsn, name, texts, n=8):
    """Sum of PSS over n sessions that have each run 30 searches, and the postmaster tree."""
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(n)]
    try:
        for c in conns:
            c.execute("SET client_min_messages = warning")
            for qt in texts[:30]:
                search(c, name, qt)
        pss = 0
        for c in conns:
            pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        return pss
    finally:
        for c in conns:
            c.close()


def concurrent_inserts(dsn, name, mat, sessions, seconds=15):
    import threading
    done = [0] * sessions
    with psycopg.connect(dsn, autocommit=True) as c:
        cid, fp = c.execute("SELECT c.corpus_id, m.fingerprint FROM inf_ir.corpora c JOIN inf_ir.models m "
                            "ON m.name = c.model WHERE c.name = %s", (name,)).fetchone()
    texts = [vector_text(v) for v in mat[:2000]]
    stop = time.time() + seconds

    def work(w):
        with psycopg.connect(dsn, autocommit=True) as c:
            i = 0
            while time.time() < stop:
                c.execute("INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with) "
                          "VALUES (%s, %s, 'concurrent', %s::text::real[], %s)",
                          (cid, f"c{sessions}-{w}-{i}", texts[(w * 997 + i) % len(texts)], fp), prepare=True)
                i += 1
            done[w] = i
    threads = [threading.Thread(target=work, args=(w,)) for w in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DELETE FROM inf_ir.passages WHERE corpus_id = %s AND body = 'concurrent'", (cid,))
    return sum(done) / seconds


def exact_topk(mat, ids, queries, k=10):
    return exact_topk_streamed([(0, mat)], queries, k, ids)


def exact_topk_streamed(chunks, queries, k=10, ids=None):
    """Exact top-k external ids per query (score, then smaller id) over
    (first row, rows) chunks; ids default to the row numbers."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for first, rows in chunks:
        s = queries @ rows.T
        kk = min(k, s.shape[1])
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        best_i = np.concatenate([best_i, top + first], axis=1)
    out = []
    for qs, qi in zip(best_s, best_i):
        order = np.lexsort((qi, -qs))[:k]
        out.append([str(ids[i] if ids is not None else i) for i in qi[order]])
    return out


STREAMED = 2_000_000  # above this many rows the set is never held in memory whole


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--scifact", required=True)
    ap.add_argument("--sizes", default="5k,100k,1m")
    ap.add_argument("--probes", default="1,2,4,8,16,32,64")
    ap.add_argument("--restart", help="command that restarts the server (for the first-search figure)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--huge-pages", default="off", help="the server's huge_pages setting (recorded with the figures)")
    args = ap.parse_args()
    dsn = f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres"
    results = {"huge_pages": args.huge_pages}
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
        import json
        qtexts = [json.loads(l)["text"] for l in open(os.path.join(args.scifact, "queries.jsonl"))]
        queries = np.array([r[1] for r in conn.execute(
            "SELECT ord, embedding FROM inf_embed_query_many(NULL, %s) ORDER BY ord", (qtexts,)).fetchall()],
            dtype=np.float32)
        texts = [vector_text(q) for q in queries]
        sizes = args.sizes.split(",")
        for size in sizes:
            streamed = False
            if size == "5k":
                name, mat, ids = "scifact", base, base_ids
            elif SIZES[size] > STREAMED:
                n, streamed, mat = SIZES[size], True, None
                name, ids = f"synthetic_{size}", None
                ensure_corpus(conn, name, n, synthetic_chunks(base, n, seed=42), fp)
            else:
                n = SIZES[size]
                mat = make_synthetic(base, n, seed=42)
                name, ids = f"synthetic_{size}", list(range(n))
                ensure_corpus(conn, name, n, [(0, mat)], fp)
            b = build_index(dsn, name)
            rows = n if streamed else len(mat)
            print(f"{size:>5} ({rows} x {base.shape[1]}): index build {b['build_s']:.1f} s, {b['lists']} lists, "
                  f"{b['index_mb']:.0f} MB, peak backend RSS {b['peak_rss_mb']:.0f} MB", flush=True)
            if streamed:
                exact = exact_topk_streamed(synthetic_chunks(base, n, seed=42), queries)
            else:
                exact = exact_topk(mat, ids, queries)
            r = {"build": b, "sweep": []}
            for probes in [int(p) for p in args.probes.split(",")]:
                s = sweep(conn, name, texts, exact, probes)
                r["sweep"].append(s)
                print(f"        probes {probes:4d}: p50 {s['p50']:.2f} ms, p95 {s['p95']:.2f} ms, "
                      f"recall@10 {s['recall']:.4f}", flush=True)
            conn.execute("RESET inf_ir.probes")
            if size == sizes[-1] and size != "5k" and not streamed:
                c = churn(dsn, name, texts, mat)
                r["churn"] = c
                print(f"        next search after a committed write (median of 10, another session): "
                      f"insert {c['insert']:.2f} ms, update {c['update']:.2f} ms, delete {c['delete']:.2f} ms; "
                      f"normal {c['normal']:.2f} ms", flush=True)
                r["filters"] = {}
                for label, key, value, modulo, exact_rows, filter_index in FILTERS:
                    f = filtered(conn, name, texts, queries, mat, ids, key, value, modulo, exact_rows, filter_index)
                    r["filters"][label] = f
                    built = f" (built in {f['filter_index_build_s']:.1f} s)" if filter_index else ""
                    print(f"        {label}{built} ({f['kept']} rows kept): p50 {f['p50']:.2f} ms, top-10 equal "
                          f"to the exact filtered scan for {f['equal']}/{f['n']} queries, fewest rows {f['min_rows']}",
                          flush=True)
                pss = sessions_memory(dsn, name, texts)
                r["pss_8_sessions_mb"] = pss
                # PSS leaves out huge pages: shared buffers are then not in it at all.
                caveat = ", huge pages not counted" if args.huge_pages == "on" else ""
                print(f"        8 sessions that searched: {pss:.0f} MB PSS in all{caveat} (index {b['index_mb']:.0f} MB)",
                      flush=True)
                for sessions in (1, 8):
                    rate = concurrent_inserts(dsn, name, mat, sessions)
                    r[f"inserts_{sessions}"] = rate
                    print(f"        {sessions} session(s) inserting embedded passages: {rate:.0f} rows/s", flush=True)
            results[size] = r
    if args.restart and sizes[-1] != "5k":
        import subprocess
        subprocess.run(args.restart, shell=True, check=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET client_min_messages = warning")
            t0 = time.perf_counter()
            search(conn, name, texts[0])
            first = time.perf_counter() - t0
        results[sizes[-1]]["first_after_restart_s"] = first
        print(f"        first search after a server restart: {first * 1000:.0f} ms", flush=True)
    if args.json:
        json.dump(results, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
