#!/usr/bin/env python3
"""inf_llm_chat against the real local LLM server (llama-cpp-python serving
Gemma 3 270M, started by scripts/test.sh) and against a fault-injecting
endpoint: retries with Retry-After, 5xx, malformed and schema-breaking
replies, a 401 that echoes the key (which must reach no error and no log
line), statement_timeout and pg_cancel_backend during a stalled request.

Usage: test_llm.py --port P --llm-url URL --server-log FILE --key-dir DIR
"""
import argparse
import json
import os
import pwd
import sys
import threading
import time

import psycopg

sys.path.insert(0, os.path.dirname(__file__))
from fault_endpoint import FaultEndpoint  # noqa: E402

SLOTS = json.dumps({
    "query": "what is the normal body temperature of a cat",
    "passage": "A healthy cat's body temperature is between 38.1 and 39.2 degrees Celsius "
               "(100.5 to 102.5 degrees Fahrenheit), slightly higher than a human's.",
})
KEY = "sk-inf-ir-test-9f2c4e7a1b"
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def chat(conn, endpoint):
    return conn.execute("SELECT inf_llm_chat(%s, 'instruction', %s::jsonb)", (endpoint, SLOTS)).fetchone()[0]


def error_of(conn, endpoint):
    try:
        chat(conn, endpoint)
        return None
    except psycopg.Error as e:
        return e


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--llm-url", required=True)
    ap.add_argument("--server-log", required=True)
    ap.add_argument("--key-dir", required=True)
    args = ap.parse_args()
    dsn = f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres"
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("CREATE EXTENSION IF NOT EXISTS inf_ir")

    # The real model, through llama-cpp-python's schema-constrained output.
    conn.execute("SELECT inf_set_endpoint('gemma', %s, 'gemma3-270m', reply_format => 'json_object', "
                 "max_output_tokens => 96, temperature => 0.2)", (args.llm_url,))
    t0 = time.monotonic()
    reply = chat(conn, "gemma")
    check(isinstance(reply, dict) and isinstance(reply.get("instruction"), str)
          and len(reply["instruction"]) >= 10 and set(reply) == {"instruction"},
          f"real LLM: instruction stage reply {reply!r} in {time.monotonic() - t0:.1f} s")

    # Faults. The key is in a file only the server's OS user can read.
    key_file = os.path.join(args.key_dir, "inf_ir_test_llm.key")
    with open(key_file, "w") as f:
        f.write(KEY + "\n")
    pg = pwd.getpwnam("postgres")
    os.chown(key_file, pg.pw_uid, pg.pw_gid)
    os.chmod(key_file, 0o600)

    def endpoint(script, **kw):
        server = FaultEndpoint(script)
        opts = "".join(f", {k} => {v}" for k, v in kw.items())
        conn.execute(f"SELECT inf_set_endpoint('faults', %s, 'm', api_key_file => %s{opts})",
                     (server.base_url, key_file))
        return server

    server = endpoint([("429", 1), "500", "malformed", "schema", "good"])
    t0 = time.monotonic()
    reply = chat(conn, "faults")
    took = time.monotonic() - t0
    times = [r[0] for r in server.requests]
    check(reply == {"instruction": "Only peer-reviewed sources about the topic."} and len(server.requests) == 5
          and times[1] - times[0] >= 0.95,
          f"429 (Retry-After 1), 500, malformed, schema-breaking, then good: the good reply after "
          f"{len(server.requests)} requests, {took:.2f} s, second request {times[1] - times[0]:.2f} s after the 429")
    check(all(r[1] == "Bearer " + KEY for r in server.requests), "the key from the file travels as a bearer token")
    server.close()

    for script, want in [("500", "after 5 attempt(s): HTTP 500"), ("malformed", "the response is not JSON"),
                         ("schema", "the reply breaks its schema: $: the field \"instruction\" is missing")]:
        server = endpoint([script])
        e = error_of(conn, "faults")
        check(e is not None and want in str(e) and len(server.requests) == 5,
              f"always {script}: ERROR after {len(server.requests)} requests: {str(e).strip()[:140]}")
        server.close()

    server = endpoint(["401"])
    e = error_of(conn, "faults")
    check(e is not None and "HTTP 401" in str(e) and KEY not in str(e) and len(server.requests) == 1,
          f"401 is not retried and its echo of the key is scrubbed: {str(e).strip()[:120]}")
    server.close()

    # A batch: one row per element, a failed element does not fail the call.
    server = endpoint(["good", "401", "good"], max_concurrency=1)
    rows = conn.execute("SELECT ord, reply, failure, attempts FROM inf_llm_batch('faults', 'instruction', "
                        "array_fill(%s::jsonb, ARRAY[3]))", (SLOTS,)).fetchall()
    check([r[0] for r in rows] == [1, 2, 3] and rows[0][1] is not None and rows[2][1] is not None
          and rows[1][1] is None and rows[1][2].startswith("HTTP 401") and KEY not in rows[1][2],
          f"inf_llm_batch: elements 1 and 3 answered, 2 failed ({rows[1][2][:60]!r}) without failing the call")
    server.close()
    # An endpoint that echoes the request's headers in a 200 reply, as text
    # and inside a JSON reply: the key reaches no returned row.
    for kind in ["echo", "echo_json"]:
        server = endpoint([kind], max_attempts=2)
        rows = conn.execute("SELECT failure, reply_text FROM inf_llm_batch('faults', 'instruction', "
                            "ARRAY[%s::jsonb])", (SLOTS,)).fetchall()
        text = " ".join(str(v) for v in rows[0])
        check(rows[0][0] is not None and KEY not in text and "[redacted]" in text
              and any(r[1] == "Bearer " + KEY for r in server.requests),
              f"a 200 reply that echoes the request headers ({kind}): the key is scrubbed from the row "
              f"({rows[0][0][:60]!r})")
        e = error_of(conn, "faults")
        check(e is not None and KEY not in str(e), f"... and from inf_llm_chat's ERROR ({kind})")
        server.close()

    # Credentials in the URL are refused: the table is readable by every role.
    for url in ["http://user:s3cret@127.0.0.1:9/v1", "http://s3cret@127.0.0.1:9/v1", "https://u:p%40ss@h.example/v1"]:
        try:
            conn.execute("SELECT inf_set_endpoint('x', %s, 'm')", (url,))
            e = None
        except psycopg.Error as ex:
            e = ex
        check(e is not None and e.sqlstate == "22023" and "s3cret" not in str(e) and "p%40ss" not in str(e)
              and conn.execute("SELECT count(*) FROM inf_ir.llm_endpoints WHERE name = 'x'").fetchone()[0] == 0,
              f"a base_url with credentials is refused and not echoed: {e.diag.message_primary if e else None!r}")

    server = endpoint([("slow", 0.2)], max_concurrency=8)
    conn.execute("SELECT count(*) FROM inf_llm_batch('faults', 'instruction', array_fill(%s::jsonb, ARRAY[24]))",
                 (SLOTS,))
    check(server.max_in_flight == 8, f"24 requests with max_concurrency 8: {server.max_in_flight} in flight at most")
    server.close()
    server = endpoint(["good"], max_concurrency=8, requests_per_minute=600)
    t0 = time.monotonic()
    conn.execute("SELECT count(*) FROM inf_llm_batch('faults', 'instruction', array_fill(%s::jsonb, ARRAY[40]))",
                 (SLOTS,))
    times = sorted(r[0] for r in server.requests)
    # After the first second's burst (10), requests come at 10 a second.
    rate = (len(times) - 11) / (times[-1] - times[10])
    check(len(times) == 40 and rate <= 11.0,
          f"requests_per_minute 600 (10/s): 40 requests in {time.monotonic() - t0:.2f} s, {rate:.2f}/s after the burst")
    server.close()

    # statement_timeout and a cancel while a request stalls.
    server = endpoint([("stall", 20)])
    conn.execute("SET statement_timeout = '1s'")
    t0 = time.monotonic()
    e = error_of(conn, "faults")
    took = time.monotonic() - t0
    conn.execute("RESET statement_timeout")
    # Outcomes, not speeds: ended by the timeout, long before the 20 s stall would have.
    check(e is not None and e.sqlstate == "57014" and took < 10,
          f"statement_timeout 1s during a stalled request: {e.sqlstate if e else None} after {took:.2f} s")
    other = psycopg.connect(dsn, autocommit=True)
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    result = {}

    def run():
        t = time.monotonic()
        result["error"] = error_of(conn, "faults")
        result["ended"] = time.monotonic()
        result["took"] = result["ended"] - t

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.8)
    sent = time.monotonic()
    other.execute("SELECT pg_cancel_backend(%s)", (pid,))
    thread.join(900)
    e = result.get("error")
    check(e is not None and e.sqlstate == "57014" and result["ended"] - sent < 10,
          f"pg_cancel_backend during a stalled request: {e.sqlstate if e else None}, "
          f"{result['ended'] - sent:.2f} s after the cancel")
    check(conn.execute("SELECT 1").fetchone()[0] == 1, "the session works after the cancel")
    server.close()
    other.close()

    # The key is in no table, view or log line.
    relations = conn.execute("SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = 'inf_ir'::regnamespace "
                             "AND c.relkind IN ('r', 'v', 'm')").fetchall()
    found = [r for (r,) in relations
             if KEY in (conn.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {r} t").fetchone()[0])]
    check(len(relations) > 10 and not found, f"the key is in none of inf_ir's {len(relations)} tables and views: {found}")
    conn.execute("SELECT inf_drop_endpoint('faults')")
    log = open(args.server_log, errors="replace").read()
    check(KEY not in log, f"the key is not in the server log ({len(log)} bytes searched)")
    os.unlink(key_file)
    conn.execute("SELECT inf_drop_endpoint('gemma')")
    if failures:
        sys.exit(f"FAILED: {len(failures)} check(s)")


if __name__ == "__main__":
    main()
