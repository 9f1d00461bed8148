#!/usr/bin/env python3
"""Cancel during long work: pg_cancel_backend during a large inf_embed_many
call, and (with --index-build) statement_timeout during an inf_ivf index
build whose k-means runs for many seconds. Each must end with the cancel's
ERROR long before the work would have finished, and the session must work
afterwards. Times are printed; the checks are outcomes with bounds relative
to the work itself, so a slower or busier machine passes too.

Usage: test_cancel.py --port P [--host H] [--index-build]
"""
import argparse
import subprocess
import sys
import time

LONG_CALL = ("SET application_name = 'inf_ir_cancel_test'; SET inf_ir.threads = 1; "
             "SELECT count(*) FROM inf_embed_many(array(SELECT repeat('passage text ', 120) || i "
             "FROM generate_series(1, 3000) i));")
# 3,000 long passages on one thread take minutes; a cancel that waited for
# the call would take at least this long.
EMBED_BOUND = 30.0


def psql(base, sql, check=True):
    return subprocess.run(base + ["-c", sql], capture_output=True, text=True, check=check)


def embed_cancel(base):
    call = subprocess.Popen(base + ["-c", LONG_CALL], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Until the call is running (its statement is active), then a little into inference.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and psql(base, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                                     "'inf_ir_cancel_test' AND state = 'active'").stdout.strip() != "1":
        time.sleep(0.05)
    time.sleep(1.0)
    cancelled = psql(base, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'inf_ir_cancel_test'").stdout.strip()
    t0 = time.monotonic()
    _, err = call.communicate(timeout=900)
    elapsed = time.monotonic() - t0
    print(f"inf_embed_many: cancel sent: {cancelled!r}; call ended {elapsed:.3f} s later: {err.strip()}")
    if cancelled != "t" or "canceling statement due to user request" not in err or elapsed > EMBED_BOUND:
        sys.exit("FAILED: cancel not honoured while embedding")
    ok = psql(base, "SELECT array_length(inf_embed('after'), 1)").stdout.strip()
    if ok != "384":
        sys.exit(f"FAILED: session after cancel returned {ok!r}")


def index_build_cancel(base):
    # 60,000 random 384-d rows and 4,000 lists: k-means alone is many seconds.
    psql(base, "DROP TABLE IF EXISTS cancel_vectors; CREATE TABLE cancel_vectors (id int, v real[]); "
               "INSERT INTO cancel_vectors SELECT i, (SELECT array_agg(random()::real) FROM generate_series(1, 384) "
               "WHERE i > 0) FROM generate_series(1, 60000) i")
    build = "CREATE INDEX cancel_vectors_v ON cancel_vectors USING inf_ivf (v) WITH (lists = 4000)"
    t0 = time.monotonic()
    psql(base, build)
    whole = time.monotonic() - t0
    psql(base, "DROP INDEX cancel_vectors_v")
    t0 = time.monotonic()
    r = psql(base, f"SET statement_timeout = '1s'; {build}", check=False)
    took = time.monotonic() - t0
    print(f"inf_ivf build (60,000 x 384, 4,000 lists): {whole:.1f} s whole; with statement_timeout 1s it ended "
          f"after {took:.2f} s: {r.stderr.strip()}")
    exists = psql(base, "SELECT to_regclass('cancel_vectors_v') IS NULL").stdout.strip()
    psql(base, "DROP TABLE cancel_vectors")
    if "canceling statement due to statement timeout" not in r.stderr or took > whole / 4 or exists != "t":
        sys.exit("FAILED: statement_timeout not honoured during an index build")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--index-build", action="store_true")
    args = ap.parse_args()
    base = ["psql", "-h", args.host, "-p", str(args.port), "-U", "postgres", "-X", "-At", "-v", "ON_ERROR_STOP=1"]
    psql(base, "CREATE EXTENSION IF NOT EXISTS inf_ir")
    embed_cancel(base)
    if args.index_build:
        index_build_cancel(base)


if __name__ == "__main__":
    main()
