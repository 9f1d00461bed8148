#!/usr/bin/env python3
"""A corpus sharded over PostgreSQL servers with PL/Proxy (sql/sharding/).

Starts SHARDS local clusters (each preloaded inf_ir with its own worker),
installs sql/sharding/shard.sql there and sql/sharding/proxy.sql in a proxy
database on the test server, loads SciFact through the proxy (each passage
routed to its shard by hashtext(external_id)), embeds it on the shards, and
checks that inf_ir_proxy.inf_search's top 10 equals the single-server
search of the same passages (the scifact_eval corpus that eval_retrieval.py
leaves) for all 300 queries. Then a stopped shard: a clear ERROR within
statement_timeout, and searches again once it is back, with no manual step.
Skips cleanly without PL/Proxy or ../shared/data.

Usage: test_sharding.py --port P --pg-bin DIR --home DIR --data DIR [--shards 2]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import psycopg

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def shell(script):
    """Run bash with the project's helpers (start_cluster, set_preload, ...)."""
    subprocess.run(["bash", "-c", f"source {ROOT}/scripts/lib/common.sh; {script}"], check=True)


def psql_file(port, db, path):
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db, "-X", "-q",
                    "-v", "ON_ERROR_STOP=1", "-f", path], check=True, stdout=subprocess.DEVNULL)


def fresh_db(port, db):
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {db}")
    conn = psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname={db}", autocommit=True)
    conn.execute("SET client_min_messages = warning")
    conn.execute("CREATE EXTENSION inf_ir")
    return conn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pg-bin", required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--shards", type=int, default=2)
    args = ap.parse_args()
    if not os.path.exists("/usr/share/postgresql/15/extension/plproxy.control"):
        print("skip  sharding: PL/Proxy (postgresql-15-plproxy) is not installed")
        return
    scifact = os.path.join(args.data, "scifact")
    if not os.path.exists(os.path.join(scifact, "corpus.jsonl")):
        print(f"skip  sharding: {scifact} is not there")
        return
    single = psycopg.connect(f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres", autocommit=True)
    if not single.execute("SELECT count(*) FROM inf_ir.corpora WHERE name = 'scifact_eval'").fetchone()[0]:
        print("skip  sharding: the single-server scifact_eval corpus is not built (eval_retrieval.py first)")
        return

    ports = [args.port + 20 + i for i in range(args.shards)]
    clusters = [os.path.join(args.home, f"shard-{i}") for i in range(args.shards)]
    try:
        for cluster, port in zip(clusters, ports):
            shell(f"stop_cluster {cluster}; rm -rf {cluster}; start_cluster {cluster} {port}; set_preload {cluster} yes")
            db = f"inf_ir_shard_{ports.index(port)}"  # PL/Proxy's errors name a shard by its database
            fresh_db(port, db).close()
            psql_file(port, db, os.path.join(ROOT, "sql", "sharding", "shard.sql"))
        proxy = fresh_db(args.port, "inf_ir_proxy")
        psql_file(args.port, "inf_ir_proxy", os.path.join(ROOT, "sql", "sharding", "proxy.sql"))
        n = proxy.execute("SELECT inf_ir_proxy.set_shards(%s)",
                          ([f"host=127.0.0.1 port={p} dbname=inf_ir_shard_{i} user=postgres"
                            for i, p in enumerate(ports)],)).fetchone()[0]
        proxy.execute("SELECT inf_ir_proxy.create_corpus('scifact')")

        # Load through the proxy: each passage goes to its shard.
        docs = [json.loads(line) for line in open(os.path.join(scifact, "corpus.jsonl"))]
        t0 = time.monotonic()
        for i in range(0, len(docs), 1000):
            part = docs[i:i + 1000]
            proxy.execute("SELECT sum(n) FROM inf_ir_proxy.put_passages('scifact', %s, %s, %s) n",
                          ([d["_id"] for d in part], [d["text"] for d in part],
                           [d.get("title") or None for d in part]))
        loaded = time.monotonic() - t0
        counts = proxy.execute("SELECT total FROM inf_ir_proxy.corpus_counts('scifact')").fetchall()
        check(sum(c[0] for c in counts) == len(docs) and all(c[0] > 0 for c in counts),
              f"{len(docs)} SciFact passages loaded through the proxy onto {n} shards "
              f"({', '.join(str(c[0]) for c in counts)}) in {loaded:.1f} s")
        t0 = time.monotonic()
        proxy.execute("CALL inf_ir_proxy.embed_corpus('scifact', 256)")
        embedded = proxy.execute("SELECT sum(embedded) FROM inf_ir_proxy.corpus_counts('scifact')").fetchone()[0]
        check(embedded == len(docs), f"embedded on the shards' own workers: {embedded} in {time.monotonic() - t0:.0f} s")

        # The same 300 queries, single server vs proxy.
        queries = [json.loads(line) for line in open(os.path.join(scifact, "queries.jsonl"))]
        qrels_dir = os.path.join(scifact, "qrels")
        judged = {line.split("\t")[0] for f in os.listdir(qrels_dir) for line in open(os.path.join(qrels_dir, f))
                  if not line.startswith("query")}
        queries = [q for q in queries if q["_id"] in judged]
        differ, took = 0, []
        for q in queries:
            want = [r[0] for r in single.execute(
                "SELECT external_id FROM inf_search(NULL, %s, 10, 'scifact_eval') ORDER BY rank", (q["text"],))]
            t = time.monotonic()
            got = [r[0] for r in proxy.execute(
                "SELECT external_id FROM inf_ir_proxy.inf_search(NULL, %s, 10, 'scifact') ORDER BY rank", (q["text"],))]
            took.append(time.monotonic() - t)
            differ += want != got
        took.sort()
        check(differ == 0, f"{len(queries)} SciFact queries: proxy top 10 vs single server: {differ} differ "
                           f"(proxy p50 {took[len(took) // 2] * 1000:.1f} ms, embedding included)")

        # A stopped shard: a clear ERROR within statement_timeout; back once it is.
        shell(f"runuser -u postgres -- {args.pg_bin}/pg_ctl -D {clusters[-1]} -m fast -w stop >/dev/null")
        proxy.execute("SET statement_timeout = '5s'")
        for attempt in ("first (its cached connection dies)", "next (no server to connect to)"):
            t = time.monotonic()
            try:
                proxy.execute("SELECT count(*) FROM inf_ir_proxy.inf_search(NULL, 'vitamin d', 10, 'scifact')")
                e = None
            except psycopg.Error as ex:
                e = ex
            took = time.monotonic() - t
            message = e.diag.message_primary if e else ""
            check(e is not None and f"inf_ir_shard_{len(ports) - 1}" in message and took < 5.5,
                  f"shard {len(ports) - 1} stopped, {attempt} search: ERROR after {took:.2f} s: {message[:150]!r}")
        shell(f"start_cluster {clusters[-1]} {ports[-1]}")
        rows = proxy.execute("SELECT count(*) FROM inf_ir_proxy.inf_search(NULL, 'vitamin d', 10, 'scifact')").fetchone()[0]
        check(rows == 10, f"the restarted shard serves again without a manual step: {rows} rows")
        proxy.close()
    finally:
        for cluster in clusters:
            shell(f"stop_cluster {cluster}; rm -rf {cluster}")
        with psycopg.connect(f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS inf_ir_proxy WITH (FORCE)")
    if failures:
        sys.exit(f"FAILED: {len(failures)} check(s)")


if __name__ == "__main__":
    main()
