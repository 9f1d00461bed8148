#!/usr/bin/env python3
"""The synthesis stages (CALL inf_synthesize) end to end.

Against a fault-injecting endpoint (fast, deterministic): each fault kind is
survived or recorded with nothing partial stored; an unreachable endpoint or
a refused key stops the run; kill -9 of the backend mid-run and a rerun
process every item exactly once; cancel and statement_timeout end a run
within a second; two runs at once share the work; cost and progress.

Against the real local LLM (llama-cpp-python serving Gemma 3 270M), when
../shared/data is there: 20 msmarco-sample pairs through all three stages,
stored with provenance, and exported in the released layout.

Usage: test_llm_stages.py --port P --llm-url URL --key-dir DIR [--data DIR] [--server-log FILE]
"""
import argparse
import json
import os
import pwd
import signal
import sys
import threading
import time

import psycopg

sys.path.insert(0, os.path.dirname(__file__))
from batch_endpoint import BatchEndpoint  # noqa: E402
from fault_endpoint import FaultEndpoint  # noqa: E402

DB = "inf_ir_stages"
KEY = "sk-inf-ir-stages-4b1d9e"
NEGATIVES = {"instruction_negative": "Only sources written for children.",
             "instruction_negative_passage": "Kittens and cats nap a lot, say children's books.",
             "query_negative": "how long do dogs sleep",
             "query_negative_passage": "Dogs sleep about twelve hours a day."}
VERDICT = {"a": 0.9, "b": 0.1, "c": 0.8, "d": 0.2, "e": 0.9, "ambiguous": False}
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


class Db:
    def __init__(self, port):
        self.dsn = f"host=127.0.0.1 port={port} user=postgres dbname={DB}"
        self.notices = []
        self.conn = self.connect()

    def connect(self):
        conn = psycopg.connect(self.dsn, autocommit=True)
        conn.add_notice_handler(lambda d: self.notices.append(d.message_primary))
        return conn

    def one(self, sql, args=()):
        return self.conn.execute(sql, args or None).fetchone()[0]

    def call(self, stage, endpoint, conn=None, **kw):
        """CALL inf_synthesize; (error or None, seconds)."""
        opts = "".join(f", {k} => %s" for k in kw)
        t = time.monotonic()
        try:
            (conn or self.conn).execute(f"CALL inf_synthesize(%s, %s{opts})", (stage, endpoint, *kw.values()))
            return None, time.monotonic() - t
        except psycopg.Error as e:
            return e, time.monotonic() - t

    def last_run(self):
        row = self.conn.execute(
            "SELECT run_id, state, done, failed, skipped, total, cost::float8, error FROM inf_ir.llm_progress "
            "ORDER BY run_id DESC LIMIT 1").fetchone()
        return dict(zip(["run_id", "state", "done", "failed", "skipped", "total", "cost", "error"], row))


def seed(db, prefix, n):
    db.conn.execute(
        "INSERT INTO inf_ir.seed_queries (query_id, text, source) SELECT %s || i, 'how long do cats of breed ' || %s || i "
        "|| ' sleep', 'faults' FROM generate_series(1, %s) i", (prefix, prefix, n))
    db.conn.execute(
        "INSERT INTO inf_ir.seed_passages (passage_id, text, source) SELECT 'p' || %s || i, "
        "'Cats of breed ' || %s || i || ' sleep for twelve to sixteen hours a day.', 'faults' "
        "FROM generate_series(1, %s) i",
        (prefix, prefix, n))
    db.conn.execute(
        "INSERT INTO inf_ir.seed_qrels SELECT %s || i, 'p' || %s || i, 1 FROM generate_series(1, %s) i",
        (prefix, prefix, n))


def relations_holding(db, text):
    """inf_ir's tables and views with `text` anywhere in a row."""
    names = db.conn.execute("SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = 'inf_ir'::regnamespace "
                            "AND c.relkind IN ('r', 'v', 'm')").fetchall()
    return [n for (n,) in names
            if text in db.one(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {n} t")]


def groups_of(db, prefix):
    return db.one("SELECT count(*) FROM inf_ir.tuple_groups WHERE seed_query_id LIKE %s", (prefix + "%",))


def fault_tests(db, key_file):
    def endpoint(script, good=None, **kw):
        server = FaultEndpoint(script, **({"good": good} if good is not None else {}))
        kw.setdefault("max_concurrency", 1)
        opts = "".join(f", {k} => {v}" for k, v in kw.items())
        db.conn.execute(f"SELECT inf_set_endpoint('faults', %s, 'm', api_key_file => %s{opts})",
                        (server.base_url, key_file))
        return server

    # Each fault kind, then a good reply: one item, five attempts, Retry-After honoured.
    seed(db, "f", 1)
    server = endpoint([("429", 1), "500", "malformed", "schema", "good"])
    e, took = db.call("instruction", "faults", filter="query_id = 'f1'")
    times = [r[0] for r in server.requests]
    r = db.last_run()
    gen = db.one("SELECT generator FROM inf_ir.tuple_groups WHERE seed_query_id = 'f1' AND seed_passage_id = 'pf1'")
    check(e is None and r["done"] == 1 and len(times) == 5 and times[1] - times[0] >= 1.0
          and gen == "llm:faults/m/instruction/v1",
          f"429 (Retry-After 1 s), 500, malformed, schema, then good: stored after {len(times)} requests "
          f"(first retry after {times[1] - times[0]:.2f} s), provenance {gen!r}")
    server.close()

    # The same positive from another seed pair (same texts): skipped, not stored twice.
    db.conn.execute("INSERT INTO inf_ir.seed_queries SELECT 'dup1', text, '{}', source FROM inf_ir.seed_queries WHERE query_id = 'f1'")
    db.conn.execute("INSERT INTO inf_ir.seed_qrels VALUES ('dup1', 'pf1', 1)")
    server = endpoint(["good"])
    e, _ = db.call("instruction", "faults", filter="query_id = 'dup1'")
    r = db.last_run()
    why = db.one("SELECT failure FROM inf_ir.llm_failures WHERE run_id = %s AND outcome = 'skipped'", (r["run_id"],))
    check(e is None and r["skipped"] == 1 and groups_of(db, "dup") == 0,
          f"a positive that is already stored (another seed pair, same texts): skipped ({why!r})")
    server.close()

    # A reply that never fits its schema: recorded with its text, nothing stored; a rerun skips it.
    seed(db, "s", 2)
    server = endpoint(["schema"], max_attempts=3)
    e, _ = db.call("instruction", "faults", filter="query_id LIKE 's%'")
    r = db.last_run()
    fails = db.conn.execute("SELECT failure, reply_text, attempts FROM inf_ir.llm_failures "
                            "WHERE stage = 'instruction' AND run_id = %s", (r["run_id"],)).fetchall()
    check(e is None and r["failed"] == 2 and len(fails) == 2 and all("verdict" in f[1] and f[2] == 3 for f in fails)
          and groups_of(db, "s") == 0,
          f"schema-breaking replies: {r['failed']} failures recorded with the reply text, 0 groups; {fails[0][0]!r}")
    before = len(server.requests)
    e, _ = db.call("instruction", "faults", filter="query_id LIKE 's%'")
    check(e is None and db.last_run()["total"] == 0 and len(server.requests) == before,
          "a rerun does not repeat recorded failures (0 pending, 0 requests)")
    server.close()
    server = endpoint(["good"])
    e, _ = db.call("instruction", "faults", filter="query_id LIKE 's%'", retry_failed=True)
    check(e is None and db.last_run()["done"] == 2 and groups_of(db, "s") == 2
          and db.one("SELECT count(*) FROM inf_ir.llm_failures WHERE item LIKE %s", ('["s%',)) == 0,
          "retry_failed => true makes the failed items again (2 groups, failures cleared)")
    server.close()

    # A stalled request: recorded as a failure after the endpoint's timeout; the run goes on.
    seed(db, "t", 2)
    server = endpoint([("stall", 30), "good"], timeout_ms=400, max_attempts=1)
    e, took = db.call("instruction", "faults", filter="query_id LIKE 't%'")
    r = db.last_run()
    reason = db.one("SELECT failure FROM inf_ir.llm_failures WHERE run_id = %s", (r["run_id"],))
    check(e is None and r["done"] == 1 and r["failed"] == 1 and took < 20,
          f"a stall past timeout_ms is a recorded failure ({reason!r}); the other item is made; {took:.1f} s")
    server.close()

    # Endpoint-wide failures stop the run with nothing recorded: unreachable, and a refused key.
    seed(db, "d", 3)
    server = endpoint(["good"], max_attempts=2)
    port = server.port
    server.close()
    e, _ = db.call("instruction", "faults", filter="query_id LIKE 'd%'")
    r = db.last_run()
    items = db.one("SELECT count(*) FROM inf_ir.llm_items WHERE run_id = %s", (r["run_id"],))
    check(e is not None and "unusable" in e.diag.message_primary and r["state"] == "failed" and items == 0
          and groups_of(db, "d") == 0,
          f"an unreachable endpoint (port {port}) stops the run: {e.diag.message_primary if e else None!r}, "
          f"state {r['state']}, 0 items recorded")
    server = endpoint(["401"])
    e, _ = db.call("instruction", "faults", filter="query_id LIKE 'd%'")
    r = db.last_run()
    check(e is not None and "HTTP 401" in e.diag.message_primary and KEY not in str(e) and KEY not in (r["error"] or "")
          and groups_of(db, "d") == 0,
          f"a 401 that echoes the key stops the run; the key is in neither the error nor the run: {r['error']!r}")
    server.close()

    # An endpoint that echoes the request's headers in 200 replies (as text,
    # and inside a JSON reply): failures are recorded with the reply, the key
    # scrubbed from it; it is in no table, view or NOTICE.
    seed(db, "e", 2)
    server = endpoint(["echo", "echo_json"], max_attempts=1)
    e, _ = db.call("instruction", "faults", filter="query_id LIKE 'e%'")
    r = db.last_run()
    texts = [t for (t,) in db.conn.execute("SELECT reply_text FROM inf_ir.llm_failures WHERE run_id = %s",
                                           (r["run_id"],)).fetchall()]
    leaks = relations_holding(db, KEY)
    check(e is None and r["failed"] == 2 and len(texts) == 2 and all("[redacted]" in t for t in texts)
          and not leaks and not any(KEY in n for n in db.notices),
          f"replies that echo the key: {r['failed']} failures recorded, key scrubbed; tables holding it: {leaks}")
    server.close()

    # A filter is one SQL condition: statements in it never run.
    db.conn.execute("CREATE TABLE public.victim AS SELECT 1 AS x")
    e, _ = db.call("instruction", "faults",
                   filter="true); DELETE FROM public.victim; SELECT count(*) FROM inf_ir.seed_qrels WHERE (true")
    kept = db.one("SELECT count(*) FROM public.victim")
    check(e is not None and e.sqlstate == "22023" and "not one SQL condition" in e.diag.message_primary and kept == 1,
          f"a filter that holds statements: {e.diag.message_primary[:100] if e else None!r}; victim rows kept: {kept}")
    db.conn.execute("DROP TABLE public.victim")

    # Negatives: stored with provenance; one that does not alter the instruction is a failure, not a row.
    gid = db.one("SELECT group_id FROM inf_ir.tuple_groups WHERE seed_query_id = 'f1'")
    instruction = db.one("SELECT instruction FROM inf_ir.tuple_groups WHERE group_id = %s", (gid,))
    server = endpoint(["good"], good=dict(NEGATIVES, instruction_negative=instruction.upper()), max_attempts=2)
    e, _ = db.call("negatives", "faults", filter=f"group_id = {gid}")
    r = db.last_run()
    check(e is None and r["failed"] == 1
          and db.one("SELECT count(*) FROM inf_ir.tuple_negatives WHERE group_id = %s", (gid,)) == 0,
          "a negative that only re-cases the instruction: a recorded failure, no negative stored")
    server.close()
    server = endpoint(["good"], good=NEGATIVES)
    e, _ = db.call("negatives", "faults", filter=f"group_id = {gid}", retry_failed=True)
    kinds = db.conn.execute("SELECT kind, generator FROM inf_ir.tuple_negatives WHERE group_id = %s ORDER BY kind",
                            (gid,)).fetchall()
    check(e is None and kinds == [("instruction", "llm:faults/m/negatives/v1"), ("query", "llm:faults/m/negatives/v1")],
          f"negatives stored with provenance: {kinds}")
    server.close()

    # Judge: scores under llm:<model>; the apply step accepts, and an ambiguous verdict rejects.
    server = endpoint(["good"], good=VERDICT)
    e, _ = db.call("judge", "faults", filter=f"group_id = {gid}")
    scores = db.conn.execute("SELECT pos_pos, ineg_pos, ineg_own, qneg_pos, qneg_own, ambiguous FROM "
                             "inf_ir.validation_scores WHERE group_id = %s AND evaluator = 'llm:m'", (gid,)).fetchone()
    db.conn.execute("SELECT inf_apply_validation(0.5, 'llm:m')")
    status = db.one("SELECT status FROM inf_ir.tuple_groups WHERE group_id = %s", (gid,))
    check(e is None and scores is not None and abs(scores[0] - 0.9) < 1e-6 and abs(scores[2] - 0.8) < 1e-6
          and status == "accepted",
          f"judge scores (a..e → pos_pos, ineg_pos, ineg_own, qneg_pos, qneg_own) {scores}; margin 0.5: {status}")
    db.conn.execute("DELETE FROM inf_ir.validation_scores WHERE group_id = %s", (gid,))
    db.conn.execute("DELETE FROM inf_ir.llm_items WHERE stage = 'judge'")
    server.close()
    server = endpoint(["good"], good=dict(VERDICT, ambiguous=True))
    db.call("judge", "faults", filter=f"group_id = {gid}")
    db.conn.execute("SELECT inf_apply_validation(0.5, 'llm:m')")
    status = db.one("SELECT status FROM inf_ir.tuple_groups WHERE group_id = %s", (gid,))
    check(status == "rejected", f"an ambiguous verdict rejects the group: {status}")
    server.close()

    # Cost per run from the endpoint's prices (the fault endpoint reports 40 + 9 tokens a reply).
    seed(db, "c", 3)
    server = endpoint(["good"], input_price_per_million=1.0, output_price_per_million=2.0)
    db.call("instruction", "faults", filter="query_id LIKE 'c%'")
    r = db.last_run()
    want = 3 * (40 * 1.0 + 9 * 2.0) / 1e6
    check(r["cost"] is not None and abs(r["cost"] - want) < 1e-12,
          f"cost of 3 requests at $1/$2 per million tokens: {r['cost']} (expected {want})")
    server.close()

    # Inside a transaction block: a clear ERROR.
    seed(db, "x", 1)
    server = endpoint(["good"])
    with psycopg.connect(db.dsn) as tx:
        try:
            tx.execute("CALL inf_synthesize('instruction', 'faults')")
            err = None
        except psycopg.Error as ex:
            err = ex
    check(err is not None and err.sqlstate == "25001", f"CALL after BEGIN: {err.diag.message_primary if err else None!r}")
    server.close()

    cancel_tests(db, endpoint)
    kill_test(db, endpoint)
    concurrent_test(db, endpoint)


def cancel_tests(db, endpoint):
    seed(db, "k", 4)
    server = endpoint([("stall", 60)])  # the checks: ended long before the stall would have
    db.conn.execute("SET statement_timeout = '1s'")
    e, took = db.call("instruction", "faults", filter="query_id LIKE 'k%'")
    db.conn.execute("RESET statement_timeout")
    r = db.last_run()
    check(e is not None and e.sqlstate == "57014" and took < 30 and r["state"] == "cancelled" and groups_of(db, "k") == 0,
          f"statement_timeout 1s during a stalled batch: {e.sqlstate if e else None} after {took:.2f} s, "
          f"run {r['state']}, nothing stored")
    pid = db.one("SELECT pg_backend_pid()")
    other = db.connect()
    result = {}

    def run():
        result["error"], _ = db.call("instruction", "faults", filter="query_id LIKE 'k%'")
        result["ended"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1.0)
    sent = time.monotonic()
    other.execute("SELECT pg_cancel_backend(%s)", (pid,))
    thread.join(900)
    e = result.get("error")
    r = db.last_run()
    check(e is not None and e.sqlstate == "57014" and result["ended"] - sent < 30 and r["state"] == "cancelled",
          f"pg_cancel_backend: {e.sqlstate if e else None} {result['ended'] - sent:.2f} s after the cancel, "
          f"run {r['state']}")
    other.close()
    server.close()


def kill_test(db, endpoint):
    """kill -9 of the backend after two committed batches; a rerun finishes the rest exactly once."""
    n, batch = 24, 4
    seed(db, "m", n)
    server = endpoint([("slow", 0.4)], max_concurrency=2)
    runner = db.connect()
    pid = runner.execute("SELECT pg_backend_pid()").fetchone()[0]
    thread = threading.Thread(target=lambda: db.call("instruction", "faults", conn=runner,
                                                     filter="query_id LIKE 'm%'", batch_size=batch))
    thread.start()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and db.one(
            "SELECT coalesce(max(done), 0) FROM inf_ir.llm_runs WHERE pid = %s AND state = 'running'", (pid,)) < 2 * batch:
        time.sleep(0.05)
    time.sleep(0.3)  # the third batch is in flight
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    reconnect(db)
    killed = db.conn.execute("SELECT state, done FROM inf_ir.llm_progress WHERE pid = %s ORDER BY run_id DESC LIMIT 1",
                             (pid,)).fetchone()
    requests_before = len(server.requests)
    e, _ = db.call("instruction", "faults", filter="query_id LIKE 'm%'", batch_size=batch)
    r = db.last_run()
    items = db.one("SELECT count(*) FROM inf_ir.llm_items WHERE stage = 'instruction' AND item LIKE %s", ('["m%',))
    pairs = db.one("SELECT count(DISTINCT (seed_query_id, seed_passage_id)) FROM inf_ir.tuple_groups "
                   "WHERE seed_query_id LIKE 'm%'")
    check(killed is not None and killed[0] == "interrupted" and e is None and r["done"] == n - killed[1]
          and items == n and groups_of(db, "m") == n and pairs == n
          and len(server.requests) <= n + batch,
          f"kill -9 after {killed[1] if killed else '?'} committed items: run reads {killed[0] if killed else '?'}; "
          f"the rerun made {r['done']}; {groups_of(db, 'm')} groups for {n} pairs, each once; "
          f"{len(server.requests)} requests in all ({requests_before} before the rerun; at most one batch lost)")
    server.close()


def concurrent_test(db, endpoint):
    n = 16
    seed(db, "w", n)
    server = endpoint([("slow", 0.3)], max_concurrency=2)
    conns = [db.connect(), db.connect()]
    errors = []
    threads = [threading.Thread(target=lambda c=c: errors.append(
        db.call("instruction", "faults", conn=c, filter="query_id LIKE 'w%'", batch_size=2)[0])) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    runs = db.conn.execute("SELECT done FROM inf_ir.llm_runs ORDER BY run_id DESC LIMIT 2").fetchall()
    check(errors == [None, None] and groups_of(db, "w") == n and len(server.requests) == n
          and sum(r[0] for r in runs) == n and all(r[0] > 0 for r in runs),
          f"two runs at once share {n} items ({runs[0][0]} + {runs[1][0]}), {len(server.requests)} requests, "
          f"{groups_of(db, 'w')} groups")
    for c in conns:
        c.close()
    server.close()


def collect(db, conn=None, **kw):
    opts = ", ".join(f"{k} => %s" for k in kw)
    t = time.monotonic()
    try:
        (conn or db.conn).execute(f"CALL inf_synthesize_collect({opts})", tuple(kw.values()))
        return None, time.monotonic() - t
    except psycopg.Error as e:
        return e, time.monotonic() - t


def reconnect(db):
    for _ in range(120):  # the postmaster restarts every backend after a crash
        try:
            db.conn = db.connect()
            db.one("SELECT 1")
            return
        except psycopg.Error:
            time.sleep(0.5)


def batch_tests(db, key_file, llm_url):
    """mode => 'batch' through the Batch API's routes (tests/python/batch_endpoint.py)."""
    upstream = FaultEndpoint(["good"])
    api = BatchEndpoint(upstream.base_url)

    def use(base_url, **kw):
        opts = "".join(f", {k} => {v}" for k, v in kw.items())
        db.conn.execute(f"SELECT inf_set_endpoint('bulk', %s, 'm', api_key_file => %s, max_attempts => 2{opts})",
                        (base_url, key_file))

    use(api.base_url, input_price_per_million=1.0, output_price_per_million=2.0)
    seed(db, "b", 5)
    api.release.clear()  # hold the batches in progress
    e, _ = db.call("instruction", "bulk", filter="query_id LIKE 'b%'", mode="batch", batch_size=2)
    r = db.last_run()
    batches = db.conn.execute("SELECT count(*), count(remote_id) FROM inf_ir.llm_batches WHERE run_id = %s",
                              (r["run_id"],)).fetchone()
    claimed = db.one("SELECT count(*) FROM inf_ir.llm_items WHERE outcome = 'submitted' AND run_id = %s", (r["run_id"],))
    check(e is None and r["state"] == "submitted" and batches == (3, 3) and claimed == 5 and groups_of(db, "b") == 0,
          f"mode => 'batch': 5 items in {batches[0]} Batch API batches, run {r['state']}, {claimed} items claimed")
    e, _ = db.call("instruction", "faults", filter="query_id LIKE 'b%'")
    check(db.last_run()["total"] == 0, "a direct run does not take items claimed by a batch")

    # A disconnect: the endpoint is down while collecting; nothing is lost.
    api.stop()
    e, _ = collect(db, wait=False)
    still = db.one("SELECT count(*) FROM inf_ir.llm_batches WHERE ingested_at IS NULL")
    check(e is not None and "did not answer" in e.diag.message_primary and still == 3,
          f"collect while the endpoint is down: {e.diag.message_primary[:80] if e else None!r}; {still} batches still open")
    api.start()

    # A restart: kill -9 of the collecting backend while it waits, then collect again.
    runner = db.connect()
    pid = runner.execute("SELECT pg_backend_pid()").fetchone()[0]
    thread = threading.Thread(target=lambda: collect(db, conn=runner, wait=True, poll_seconds=1))
    thread.start()
    time.sleep(2.5)
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    reconnect(db)
    api.release.set()
    e, took = collect(db, wait=True, poll_seconds=1)
    r = db.conn.execute("SELECT state, done, submitted, cost::float8 FROM inf_ir.llm_runs WHERE mode = 'batch' "
                        "ORDER BY run_id DESC LIMIT 1").fetchone()
    want = 5 * (40 * 1.0 + 9 * 2.0) / 1e6 / 2
    gens = db.one("SELECT count(*) FROM inf_ir.tuple_groups WHERE seed_query_id LIKE 'b%' "
                  "AND generator = 'llm:bulk/m/instruction/v1'")
    check(e is None and r[0] == "done" and r[1] == 5 and r[2] == 0 and gens == 5 and len(upstream.requests) == 5
          and abs(r[3] - want) < 1e-12,
          f"after kill -9 and a restart, collect ingests every batch once: run {r[0]}, {r[1]} done, {gens} groups, "
          f"{len(upstream.requests)} requests, cost {r[3]} (half of direct)")

    # An upload refused past the retries: no batch was made, so the claim is released and the run stops.
    seed(db, "u", 2)
    uploads = api.uploads
    api.refuse_uploads = 2
    e, _ = db.call("instruction", "bulk", filter="query_id LIKE 'u%'", mode="batch")
    status, claimed = db.conn.execute(
        "SELECT status, (SELECT count(*) FROM inf_ir.llm_items i WHERE i.batch_id = b.batch_id) "
        "FROM inf_ir.llm_batches b ORDER BY batch_id DESC LIMIT 1").fetchone()
    check(e is not None and "made no batch" in e.diag.message_primary and "HTTP 500" in e.diag.message_primary
          and status == "refused" and claimed == 0 and db.last_run()["state"] == "failed",
          f"an upload that keeps failing: {e.diag.message_primary[:90] if e else None!r}; batch {status}, "
          f"{claimed} items still claimed")
    e, _ = db.call("instruction", "bulk", filter="query_id LIKE 'u%'", mode="batch")
    e2, _ = collect(db, wait=True, poll_seconds=1)
    check(e is None and e2 is None and groups_of(db, "u") == 2 and api.uploads - uploads == 3,
          f"the rerun submits them again and collect ingests them: {groups_of(db, 'u')} groups, "
          f"{api.uploads - uploads} uploads (2 refused, then 1)")

    # Killed between the claim and the send: collect finds no batch at the endpoint and sends it.
    seed(db, "p", 2)
    db.conn.execute("SELECT inf_set_endpoint('bulk', %s, 'm', api_key_file => %s, max_attempts => 1, "
                    "timeout_ms => 500)", (api.base_url, key_file))
    api.stop()  # the send cannot even ask whether a batch exists: the claim stays 'preparing'
    e, _ = db.call("instruction", "bulk", filter="query_id LIKE 'p%'", mode="batch")
    prep = db.one("SELECT status FROM inf_ir.llm_batches ORDER BY batch_id DESC LIMIT 1")
    api.start()
    use(api.base_url)
    e2, _ = collect(db, wait=True, poll_seconds=1)
    check(e is not None and prep == "preparing" and e2 is None and groups_of(db, "p") == 2,
          f"a send cut off before it knows: batch stays {prep}; collect sends it later: {groups_of(db, 'p')} groups")

    # A request the endpoint refuses in the batch: a recorded failure.
    seed(db, "v", 2)
    api.refuse_ids = {"i1"}
    db.call("instruction", "bulk", filter="query_id LIKE 'v%'", mode="batch")
    collect(db, wait=True, poll_seconds=1)
    why = db.one("SELECT failure FROM inf_ir.llm_failures WHERE item = %s", ('["v2", "pv2"]',))
    check(groups_of(db, "v") == 1 and why is not None and "HTTP 400 in the batch" in why,
          f"a request refused in the batch is a recorded failure: {why!r}")
    api.refuse_ids = set()
    api.close()
    upstream.close()

    # An endpoint without the Batch API (every route 404): no batch can exist
    # there, so the claim is released and the run stops; collect has nothing
    # left to do, and the items are pending again.
    nobatch = FaultEndpoint(["404"])
    use(nobatch.base_url)
    seed(db, "n", 2)
    e, _ = db.call("instruction", "bulk", filter="query_id LIKE 'n%'", mode="batch")
    status, claimed = db.conn.execute(
        "SELECT status, (SELECT count(*) FROM inf_ir.llm_items i WHERE i.batch_id = b.batch_id) "
        "FROM inf_ir.llm_batches b ORDER BY batch_id DESC LIMIT 1").fetchone()
    e2, _ = collect(db, wait=False)
    still_open = db.one("SELECT count(*) FROM inf_ir.llm_batches WHERE ingested_at IS NULL")
    pending = db.one("SELECT count(*) FROM inf_ir.llm_items WHERE item LIKE %s", ('["n%',))
    check(e is not None and "made no batch" in e.diag.message_primary and "HTTP 404" in e.diag.message_primary
          and status == "refused" and claimed == 0 and e2 is None and still_open == 0 and pending == 0
          and len(nobatch.requests) == 1,
          f"an endpoint without the Batch API: {e.diag.message_primary[:90] if e else None!r}; batch {status}, "
          f"{claimed} items claimed, collect: {e2}, {len(nobatch.requests)} request")
    nobatch.close()

    # The same through the real local model.
    if llm_url:
        real = BatchEndpoint(llm_url)
        use(real.base_url, reply_format="'json_object'", max_output_tokens=96)
        seed(db, "g", 3)
        t = time.monotonic()
        db.call("instruction", "bulk", filter="query_id LIKE 'g%'", mode="batch")
        e, _ = collect(db, wait=True, poll_seconds=1)
        r = db.conn.execute("SELECT state, done, failed FROM inf_ir.llm_runs ORDER BY run_id DESC LIMIT 1").fetchone()
        example = db.one("SELECT instruction FROM inf_ir.tuple_groups WHERE seed_query_id LIKE 'g%' LIMIT 1")
        check(e is None and r[0] == "done" and r[1] + r[2] == 3 and r[1] >= 1,
              f"batch mode with the real model: {r[1]} done, {r[2]} failed in {time.monotonic() - t:.0f} s; "
              f"e.g. {example!r}")
        real.close()
    db.conn.execute("SELECT inf_drop_endpoint('bulk')")


def real_llm_test(db, llm_url, data):
    """20 msmarco-sample pairs through the three stages with the real local model."""
    d = os.path.join(data, "msmarco-sample")
    if not os.path.exists(os.path.join(d, "qrels.tsv")):
        print(f"skip  the real-LLM pipeline: {d} is not there")
        return
    db.conn.execute("SELECT inf_import_seed(%s, %s, %s, 'msmarco')",
                    tuple(os.path.join(d, f) for f in ("queries.jsonl", "passages.jsonl", "qrels.tsv")))
    db.conn.execute("SELECT inf_set_endpoint('gemma', %s, 'gemma3-270m', reply_format => 'json_object', "
                    "max_concurrency => 1, max_output_tokens => 200, temperature => 0.7, max_attempts => 1, "
                    "timeout_ms => 120000)", (llm_url,))
    only = "source = 'msmarco'"
    seconds = {}
    for stage, extra in (("instruction", {"max_items": 20}), ("negatives", {}), ("judge", {})):
        db.notices.clear()
        e, seconds[stage] = db.call(stage, "gemma", filter=only, batch_size=5, **extra)
        r = db.last_run()
        # The judge may find no complete group if the tiny model wrote no usable negatives.
        some = r["done"] > 0 or (stage == "judge" and r["total"] == 0)
        check(e is None and r["state"] == "done" and r["done"] + r["failed"] + r["skipped"] == r["total"] and some,
              f"real LLM, {stage}: {r['done']} done, {r['failed']} failed, {r['skipped']} skipped of {r['total']} "
              f"in {seconds[stage]:.0f} s; last NOTICE: {db.notices[-1] if db.notices else None!r}")
        if e is not None:
            print(f"      {e}")
            return
    made = db.conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE generator = 'llm:gemma/gemma3-270m/instruction/v1'), "
        "count(DISTINCT (seed_query_id, seed_passage_id)) FROM inf_ir.tuple_groups WHERE source = 'msmarco'").fetchone()
    check(made[0] == made[1] == made[2] and made[0] >= 1,
          f"{made[0]} positives from distinct seed pairs, each with its provenance")
    same = db.one("SELECT count(*) FROM inf_ir.tuple_negatives n JOIN inf_ir.tuple_groups g USING (group_id) "
                  "WHERE (n.kind = 'instruction' AND n.altered = g.instruction) OR (n.kind = 'query' AND n.altered = g.query)")
    negs = db.one("SELECT count(*) FROM inf_ir.tuple_negatives WHERE generator = 'llm:gemma/gemma3-270m/negatives/v1'")
    scores = db.one("SELECT count(*) FROM inf_ir.validation_scores WHERE evaluator = 'llm:gemma3-270m'")
    complete = db.one("SELECT count(*) FROM inf_ir.inf_ir_rows r JOIN inf_ir.tuple_groups g USING (group_id) "
                      "WHERE g.source = 'msmarco' AND r.query_negative IS NOT NULL AND r.instruction_negative IS NOT NULL")
    judged = db.one("SELECT count(*) FROM inf_ir.llm_items WHERE stage = 'judge' AND outcome = 'done' AND run_id = "
                    "(SELECT max(run_id) FROM inf_ir.llm_runs WHERE endpoint = 'gemma' AND stage = 'judge')")
    check(same == 0 and negs == 2 * complete and scores == judged,
          f"{negs} negatives ({complete} complete groups), none equal to its positive; {scores} judge scores")
    lines = [json.loads(line) for (line,) in db.conn.execute("SELECT * FROM inf_export_tuples_jsonl()")]
    keys = ["query_positive", "instruction_positive", "document_positive", "query_negative",
            "instruction_negative", "hard_negative_document_1", "hard_negative_document_2"]
    groups = db.one("SELECT count(*) FROM inf_ir.tuple_groups")
    made_here = sum(1 for line in lines if line["query_positive"] in set(
        q for (q,) in db.conn.execute("SELECT query FROM inf_ir.tuple_groups WHERE source = 'msmarco'")))
    check(len(lines) == groups and made_here == made[0] and all(list(line)[:7] == keys for line in lines),
          f"inf_export_tuples_jsonl: {len(lines)} rows in the released layout, {made_here} of them from this run")
    example = db.conn.execute(
        "SELECT query_positive, instruction_positive, instruction_negative, query_negative FROM inf_ir.inf_ir_rows "
        "JOIN inf_ir.tuple_groups g USING (group_id) WHERE g.source = 'msmarco' AND query_negative IS NOT NULL "
        "ORDER BY group_id LIMIT 1").fetchone()
    print(f"      example: {example}")
    print(f"      stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--llm-url", required=True)
    ap.add_argument("--key-dir", required=True)
    ap.add_argument("--data", default=None)
    ap.add_argument("--server-log", default=None)
    args = ap.parse_args()
    admin = psycopg.connect(f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres", autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DB}")
    admin.execute(f"CREATE DATABASE {DB}")
    db = Db(args.port)
    db.conn.execute("CREATE EXTENSION inf_ir")
    key_file = os.path.join(args.key_dir, "inf_ir_test_stages.key")
    with open(key_file, "w") as f:
        f.write(KEY + "\n")
    pg = pwd.getpwnam("postgres")
    os.chown(key_file, pg.pw_uid, pg.pw_gid)
    os.chmod(key_file, 0o600)
    try:
        fault_tests(db, key_file)
        batch_tests(db, key_file, args.llm_url)
        leaks = relations_holding(db, KEY)
        log = open(args.server_log, errors="replace").read() if args.server_log else ""
        check(not leaks and KEY not in log and not any(KEY in n for n in db.notices),
              f"after every fault and batch run the key is in no table or view ({leaks}), NOTICE or "
              f"server log line ({len(log)} bytes searched)")
        if args.data:
            real_llm_test(db, args.llm_url, args.data)
    finally:
        os.unlink(key_file)
    db.conn.close()
    # The kill test restarted every backend, this one's too.
    admin = psycopg.connect(f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres", autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    if failures:
        sys.exit(f"FAILED: {len(failures)} check(s)")


if __name__ == "__main__":
    main()
