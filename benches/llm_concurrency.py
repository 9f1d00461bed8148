#!/usr/bin/env python3
"""Throughput of inf_llm_batch against an endpoint that answers after a
fixed delay (tests/python/fault_endpoint.py), for max_concurrency 1, 2, 4
and 8; the same for a whole stage run (CALL inf_synthesize: requests plus
the per-item ledger and rows, committed per batch); and how closely
requests_per_minute limits hold. Prints a table and writes JSON.

Usage: llm_concurrency.py --port P [--delay 0.2] [--requests 32] [--json out.json]
(a server with inf_ir installed; run by benches/llm_concurrency.sh)
"""
import argparse
import json
import os
import sys
import time

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from fault_endpoint import FaultEndpoint  # noqa: E402

SLOTS = json.dumps({"query": "what is the normal body temperature of a cat",
                    "passage": "A healthy cat's body temperature is between 38.1 and 39.2 degrees Celsius."})


def batch(conn, n):
    t0 = time.monotonic()
    rows = conn.execute("SELECT count(reply) FROM inf_llm_batch('bench', 'instruction', array_fill(%s::jsonb, ARRAY[%s]))",
                        (SLOTS, n)).fetchone()[0]
    return time.monotonic() - t0, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--json")
    args = ap.parse_args()
    dsn = f"host=127.0.0.1 port={args.port} user=postgres dbname="
    with psycopg.connect(dsn + "postgres", autocommit=True) as admin:
        # A database of its own: the extension as installed now, whatever the others hold.
        admin.execute("DROP DATABASE IF EXISTS inf_ir_llm_bench")
        admin.execute("CREATE DATABASE inf_ir_llm_bench")
    conn = psycopg.connect(dsn + "inf_ir_llm_bench", autocommit=True)
    conn.execute("SET client_min_messages = warning")
    conn.execute("CREATE EXTENSION inf_ir")
    out = {"delay_s": args.delay, "requests": args.requests, "concurrency": {}, "rate_limits": {}}
    server = FaultEndpoint([("slow", args.delay)])
    print(f"endpoint answering after {args.delay * 1000:.0f} ms; {args.requests} requests per batch")
    base = None
    for c in (1, 2, 4, 8):
        conn.execute("SELECT inf_set_endpoint('bench', %s, 'm', max_concurrency => %s)", (server.base_url, c))
        seconds, ok = batch(conn, args.requests)
        rate = args.requests / seconds
        base = base or rate
        out["concurrency"][c] = {"seconds": seconds, "per_second": rate, "ratio": rate / base, "ok": ok}
        print(f"  max_concurrency {c}: {seconds:.2f} s, {rate:.1f} requests/s, {rate / base:.2f}x one; "
              f"{ok}/{args.requests} replies", flush=True)
    # A stage run: seed pairs → positives, everything committed per batch.
    items = 2 * args.requests
    conn.execute("INSERT INTO inf_ir.seed_queries (query_id, text) SELECT 'b' || i, 'how warm is a cat, case ' || i "
                 "FROM generate_series(1, %s) i", (items,))
    conn.execute("INSERT INTO inf_ir.seed_passages (passage_id, text) SELECT 'p' || i, "
                 "'A healthy cat is at 38.1 to 39.2 degrees Celsius, case ' || i || '.' FROM generate_series(1, %s) i",
                 (items,))
    conn.execute("INSERT INTO inf_ir.seed_qrels SELECT 'b' || i, 'p' || i, 1 FROM generate_series(1, %s) i", (items,))
    out["stage_run"] = {"items": items}
    base = None
    for c in (1, 8):
        conn.execute("TRUNCATE inf_ir.tuple_groups, inf_ir.llm_runs CASCADE")
        conn.execute("SELECT inf_set_endpoint('bench', %s, 'm', max_concurrency => %s)", (server.base_url, c))
        t0 = time.monotonic()
        conn.execute("CALL inf_synthesize('instruction', 'bench', batch_size => 32)")
        seconds = time.monotonic() - t0
        made = conn.execute("SELECT count(*) FROM inf_ir.tuple_groups").fetchone()[0]
        rate = items / seconds
        base = base or rate
        out["stage_run"][c] = {"seconds": seconds, "per_second": rate, "ratio": rate / base, "made": made}
        print(f"  CALL inf_synthesize, max_concurrency {c}: {items} items in {seconds:.2f} s, {rate:.1f} items/s, "
              f"{rate / base:.2f}x one; {made} positives", flush=True)
    server.close()
    server = FaultEndpoint(["good"])
    for rpm, n in ((120, 40), (600, 100), (3000, 300)):
        conn.execute("SELECT inf_set_endpoint('bench', %s, 'm', max_concurrency => 8, requests_per_minute => %s)",
                     (server.base_url, rpm))
        first = len(server.requests)
        seconds, ok = batch(conn, n)
        times = sorted(r[0] for r in server.requests[first:])
        burst = max(1, rpm // 60)  # the bucket starts full: one second's worth
        achieved = (len(times) - burst - 1) / (times[-1] - times[burst]) * 60
        out["rate_limits"][rpm] = {"requests": n, "seconds": seconds, "achieved_per_minute": achieved}
        print(f"  requests_per_minute {rpm}: {n} requests in {seconds:.2f} s; after the first second's burst "
              f"{achieved:.0f}/min ({achieved / rpm - 1:+.1%})", flush=True)
    server.close()
    conn.execute("SELECT inf_drop_endpoint('bench')")
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
