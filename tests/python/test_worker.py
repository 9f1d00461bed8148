#!/usr/bin/env python3
"""The shared inference worker, against a real server.

--phase local  (inf_ir not preloaded): sessions embed locally; asking for the
               worker is a clear ERROR; writes the reference vectors to --vectors.
--phase worker (inf_ir in shared_preload_libraries): the same texts embedded
               by the worker are bit-identical to --vectors; backends do not
               load ONNX Runtime; concurrent sessions share batches; SIGKILL of
               the model host during a call is an ERROR in that call and the
               next call works; cancel and statement_timeout while queued; a
               backend that goes away is dropped; the worker's library is fixed;
               after SIGKILL of the supervisor (PostgreSQL restarts the
               server) the old host is gone and the worker works again.

Usage: test_worker.py --port P --phase local|worker --vectors FILE
"""
import argparse
import json
import os
import signal
import sys
import threading
import time

import psycopg

FAILURES = []

TEXTS = [
    ("passage", None, "The mitochondria is the powerhouse of the cell."),
    ("passage", None, ""),
    ("passage", None, "   "),
    ("passage", None, "Der schnelle braune Fuchs springt über den faulen Hund. 東京は日本の首都です。 🙂"),
    ("passage", None, " ".join(f"word{i}" for i in range(2000))),
    ("query", None, "what is rust"),
    ("query", "", "what is rust"),
    ("query", "Only peer-reviewed sources, not about dosage.", "does vitamin d prevent covid"),
    ("query", "Find passages that define the term. " * 40, "what is a bi-encoder"),
    ("query", "Prefer recent news.", "election " * 500),
]

LONG_CALL = ("SELECT count(*) FROM inf_embed_many(array(SELECT repeat('passage text ', 120) || i "
             "FROM generate_series(1, {n}) i))")


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        FAILURES.append(what)


def connect(args, **kw):
    return psycopg.connect(host=args.host, port=args.port, user="postgres", dbname=args.dbname,
                           autocommit=True, **kw)


def embed_all(conn):
    """Each text alone, then all passages and all queries in one call each."""
    out = {"single": [], "many": []}
    with conn.cursor() as cur:
        for side, instruction, text in TEXTS:
            if side == "passage":
                cur.execute("SELECT inf_embed(%s)", (text,))
            else:
                cur.execute("SELECT inf_embed_query(%s, %s)", (instruction, text))
            out["single"].append(cur.fetchone()[0])
        passages = [t for s, _, t in TEXTS if s == "passage"]
        cur.execute("SELECT embedding FROM inf_embed_many(%s) ORDER BY ord", (passages,))
        out["many"] += [r[0] for r in cur.fetchall()]
        queries = [(i or "", t) for s, i, t in TEXTS if s == "query"]
        cur.execute("SELECT embedding FROM inf_embed_query_many(%s, %s) ORDER BY ord",
                    ([i for i, _ in queries], [t for _, t in queries]))
        out["many"] += [r[0] for r in cur.fetchall()]
    return out


def status(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM inf_ir.worker_status")
        names = [d.name for d in cur.description]
        return dict(zip(names, cur.fetchone()))


def running(pid):
    """Whether `pid` is a live process (a zombie awaiting its reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def maps_onnxruntime(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libonnxruntime" in f.read()


# How long a test waits for an outcome that must come: far past any machine's
# speed (a hang still ends the run, with a failure).
OUTCOME_BOUND = 900


def wait_until_computing(admin):
    """Until the worker computes a request (a long call has reached it)."""
    deadline = time.monotonic() + OUTCOME_BOUND
    while status(admin)["running"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)


def in_background(conn, sql):
    """Run `sql` on `conn` in a thread; the dict gets 'result' (first column)
    or 'error', and 'seconds'."""
    out = {}

    def run():
        t0 = time.monotonic()
        try:
            out["result"] = conn.execute(sql).fetchone()[0]
        except psycopg.Error as e:
            out["error"] = e
        out["seconds"] = time.monotonic() - t0

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def phase_local(args):
    with connect(args) as conn:
        s = status(conn)
        check(s["mode"] == "local", f"without preloading, sessions embed locally (mode {s['mode']!r})")
        vectors = embed_all(conn)
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        check(maps_onnxruntime(pid), "in local mode the backend itself loads ONNX Runtime")
        conn.execute("SET inf_ir.inference = worker")
        try:
            conn.execute("SELECT inf_embed('x')")
            check(False, "inf_ir.inference = worker without preloading is an ERROR")
        except psycopg.Error as e:
            hint = e.diag.message_hint or ""
            check("shared_preload_libraries" in hint,
                  f"inf_ir.inference = worker without preloading: {e.diag.message_primary} (hint: {hint})")
    with open(args.vectors, "w") as f:
        json.dump(vectors, f)
    print(f"wrote {len(vectors['single']) + len(vectors['many'])} local-mode vectors to {args.vectors}")


def compare(reference, got, label):
    diffs = [max(abs(a - b) for a, b in zip(x, y)) for x, y in zip(reference, got)]
    same = all(x == y for x, y in zip(reference, got)) and len(reference) == len(got)
    print(f"      {label}: {len(got)} vectors, max |diff| {max(diffs):.3g}, bit-identical: {same}")
    return same


def concurrent_queries(args, clients, per_client):
    """Each client embeds its own queries; returns {(client, i): vector}."""
    results, errors = {}, []
    barrier = threading.Barrier(clients)

    def run(c):
        try:
            with connect(args) as conn:
                barrier.wait()
                for i in range(per_client):
                    v = conn.execute("SELECT inf_embed_query(%s, %s)",
                                     ("Find passages that define the term", f"query {c} number {i}")).fetchone()[0]
                    results[(c, i)] = v
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def phase_worker(args):
    admin = connect(args)
    s = status(admin)
    check(s["mode"] == "worker" and s["state"] == "running",
          f"with preloading, sessions use the worker (mode {s['mode']!r}, state {s['state']!r})")

    # Same vectors as local mode, bit for bit.
    with open(args.vectors) as f:
        reference = json.load(f)
    with connect(args) as conn:
        got = embed_all(conn)
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        check(not maps_onnxruntime(pid), "in worker mode the backend does not load ONNX Runtime")
    check(compare(reference["single"], got["single"], "one text per call")
          and compare(reference["many"], got["many"], "arrays"),
          "worker-mode vectors are bit-identical to local-mode vectors (preload off)")

    # Concurrent sessions share batches; merged batches change nothing that matters.
    before = status(admin)
    results, errors = concurrent_queries(args, clients=8, per_client=12)
    after = status(admin)
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    check(not errors and len(results) == 96, f"8 concurrent sessions x 12 queries: {len(results)} vectors, "
                                             f"errors {errors[:1]}")
    check(batches < requests, f"cross-session batching: {requests} requests in {batches} batches")
    with connect(args) as conn:
        conn.execute("SET inf_ir.inference = local")
        worst = 1.0
        for (c, i), v in list(results.items())[:24]:
            local = conn.execute("SELECT inf_embed_query(%s, %s)",
                                 ("Find passages that define the term", f"query {c} number {i}")).fetchone()[0]
            worst = min(worst, sum(a * b for a, b in zip(v, local)))
    check(worst > 0.99999, f"merged-batch vectors vs local: min cosine {worst:.9f} (24 checked)")
    check("minilm" in after["models"] and after["host_starts"] >= 1,
          f"status lists the loaded model {after['models']} and host starts {after['host_starts']}")
    # inf_ir.embed_device (auto here): each model's device, or why it is the CPU.
    device = after["model_devices"][after["models"].index("minilm")]
    check(after["embed_device"].startswith("auto: ") and (device.startswith("cuda:") or
                                                         (device.startswith("cpu (") and len(device) > 6)),
          f"embed_device {after['embed_device']!r}, minilm on {device!r}")

    # SIGKILL of the model host during a call: ERROR in that call, success in the next.
    host = status(admin)
    victim = connect(args)
    t, outcome = in_background(victim, LONG_CALL.format(n=3000))
    wait_until_computing(admin)
    os.kill(host["host_pid"], signal.SIGKILL)
    t.join(OUTCOME_BOUND)
    e = outcome.get("error")
    check(e is not None and e.sqlstate == "58000" and "worker ended during this call" in str(e),
          f"SIGKILL of the model host during a call: {e.sqlstate if e else None}: "
          f"{str(e).strip() if e else outcome}")
    t0 = time.monotonic()
    v = victim.execute("SELECT inf_embed('after the restart')").fetchone()[0]
    check(len(v) == 384, f"the same session's next call works ({time.monotonic() - t0:.2f} s, "
                         f"including the new host's model load)")
    victim.close()
    restarted = status(admin)
    check(restarted["host_pid"] != host["host_pid"] and restarted["host_starts"] == host["host_starts"] + 1,
          f"a new host (pid {host['host_pid']} -> {restarted['host_pid']}, "
          f"starts {host['host_starts']} -> {restarted['host_starts']})")
    check(admin.execute("SELECT 1").fetchone()[0] == 1, "other sessions were not disturbed")

    # Cancel and statement_timeout while queued behind a long batch.
    for how in ("pg_cancel_backend", "statement_timeout"):
        busy = connect(args)
        queued = connect(args)
        qpid = queued.execute("SELECT pg_backend_pid()").fetchone()[0]
        before = status(admin)
        tb, busy_out = in_background(busy, LONG_CALL.format(n=600))
        wait_until_computing(admin)
        if how == "statement_timeout":
            queued.execute("SET statement_timeout = '2s'")
        tq, queued_out = in_background(queued, "SELECT inf_embed_query('x', 'a queued query')")
        # Until the query waits in the worker's queue (or, for the timeout, has already ended).
        deadline = time.monotonic() + OUTCOME_BOUND
        while status(admin)["queue_length"] < 1 and tq.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        mid = status(admin)
        if how == "pg_cancel_backend":
            cancelled_at = time.monotonic()
            admin.execute("SELECT pg_cancel_backend(%s)", (qpid,))
        tq.join(OUTCOME_BOUND)
        # The outcome, not a speed: the queued call ended while the batch
        # ahead of it was still computing (it did not wait its turn).
        busy_still_running = "result" not in busy_out and "error" not in busy_out
        e = queued_out.get("error")
        stopped = (time.monotonic() - cancelled_at) if how == "pg_cancel_backend" else queued_out.get("seconds")
        check(e is not None and e.sqlstate == "57014" and busy_still_running,
              f"{how} while queued (queue length {mid['queue_length']}): {e.sqlstate if e else None} "
              f"after {stopped:.3f} s, before the batch ahead of it finished")
        tb.join(OUTCOME_BOUND)
        check(busy_out.get("result") == 600, f"the session in the running batch still succeeds: {busy_out}")
        after = status(admin)
        check(after["dropped"] > before["dropped"], f"the worker dropped the abandoned request "
                                                    f"(dropped {before['dropped']} -> {after['dropped']})")
        queued.execute("RESET statement_timeout")
        check(len(queued.execute("SELECT inf_embed('again')").fetchone()[0]) == 384,
              f"the session works after {how}")
        busy.close()
        queued.close()

    # A session may not switch the worker's ONNX Runtime library.
    with connect(args) as conn:
        conn.execute("SET inf_ir.onnxruntime_library = '/tmp/inf_ir_fixtures/libonnxruntime.so.1.20.1'")
        try:
            conn.execute("SELECT inf_embed('x')")
            check(False, "a different library in worker mode is refused")
        except psycopg.Error as e:
            check("cannot switch" in str(e) and "restart" in (e.diag.message_hint or ""),
                  f"a different library in worker mode: {e.diag.message_primary}")

    # SIGKILL of the supervisor (a PostgreSQL process): PostgreSQL restarts the
    # server, as for any process attached to shared memory; the model host
    # must die with its supervisor, and the worker must come back.
    s = status(admin)
    admin.close()
    os.kill(s["worker_pid"], signal.SIGKILL)
    deadline, back = time.monotonic() + OUTCOME_BOUND, None
    while time.monotonic() < deadline and back is None:
        time.sleep(0.5)
        try:
            with connect(args) as conn:
                dims = len(conn.execute("SELECT inf_embed('after a server restart')").fetchone()[0])
                back = (dims, status(conn))
        except psycopg.Error:
            pass
    host_alive = running(s["host_pid"])
    check(back is not None and back[0] == 384 and back[1]["worker_pid"] != s["worker_pid"] and not host_alive,
          f"after SIGKILL of the supervisor (pid {s['worker_pid']}) and PostgreSQL's restart: "
          f"{'embeds again' if back else 'no answer'}, old host {'still alive' if host_alive else 'gone'}, "
          f"new worker pid {back[1]['worker_pid'] if back else None}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dbname", default="postgres")
    ap.add_argument("--phase", choices=["local", "worker"], required=True)
    ap.add_argument("--vectors", required=True)
    args = ap.parse_args()
    with connect(args) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS inf_ir")
    (phase_local if args.phase == "local" else phase_worker)(args)
    if FAILURES:
        sys.exit(f"FAILED: {len(FAILURES)} check(s): {FAILURES}")
    print("all worker checks passed")


if __name__ == "__main__":
    main()
