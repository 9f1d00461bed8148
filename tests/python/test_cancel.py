#!/usr/bin/env python3
"""pg_cancel_backend during a large inf_embed_many call: the call must end
with 'canceling statement due to user request' within a second of the cancel,
and the session must work afterwards.

Usage: test_cancel.py --port P [--host H]
"""
import argparse
import subprocess
import sys
import time

LONG_CALL = ("SET application_name = 'inf_ir_cancel_test'; SET inf_ir.threads = 1; "
             "SELECT count(*) FROM inf_embed_many(array(SELECT repeat('passage text ', 120) || i "
             "FROM generate_series(1, 3000) i));")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    base = ["psql", "-h", args.host, "-p", str(args.port), "-U", "postgres", "-X", "-At"]
    subprocess.run(base + ["-c", "CREATE EXTENSION IF NOT EXISTS inf_ir"], check=True, capture_output=True)
    call = subprocess.Popen(base + ["-c", LONG_CALL], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # well into inference
    cancelled = subprocess.run(base + ["-c", "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                                        "WHERE application_name = 'inf_ir_cancel_test'"],
                               capture_output=True, text=True, check=True).stdout.strip()
    t0 = time.monotonic()
    _, err = call.communicate(timeout=30)
    elapsed = time.monotonic() - t0
    print(f"cancel sent: {cancelled!r}; call ended {elapsed:.3f} s later: {err.strip()}")
    if cancelled != "t" or "canceling statement due to user request" not in err or elapsed > 1.0:
        sys.exit("FAILED: cancel not honoured within a second")
    ok = subprocess.run(base + ["-c", "SELECT array_length(inf_embed('after'), 1)"],
                        capture_output=True, text=True, check=True).stdout.strip()
    if ok != "384":
        sys.exit(f"FAILED: session after cancel returned {ok!r}")


if __name__ == "__main__":
    main()
