#!/usr/bin/env python3
"""Search on the shared worker's device (inf_ir.search_device), against a
real server in worker mode.

--expect cpu       (a host without a GPU): search_device = cuda answers on
                   the CPU index with a NOTICE that says why; auto says
                   nothing; the status view names the CPU and the reason.
--expect emulated  (a server started with INF_IR_GPU_EMULATION=1 and no
                   GPU: the host's copies live in its float16 emulation):
                   auto never uses the emulation; cuda loads the index's
                   copy at the first search and answers the exact float32
                   top k (equal to inf_ir.exact_search) through it; a scan
                   past 256 rows goes on through the CPU index without a
                   duplicate; a session sees its own uncommitted row and no
                   one else's; SIGKILL of the model host and a REINDEX each
                   lead to a fresh copy and the same answers; a corpus larger
                   than the device's memory (the server's
                   INF_IR_GPU_EMULATION_MEMORY, passed as --device-memory)
                   is searched on the CPU with a NOTICE that says so.

Usage: test_device_search.py --port P --expect cpu|emulated [--device-memory BYTES]
"""
import argparse
import os
import random
import signal
import sys
import time

import psycopg
from vectors import unit_vector as vec

CORPUS = "device_search_test"
ROWS = 3000
FAILURES = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        FAILURES.append(what)


def connect(port):
    conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True)
    conn.notices = []
    conn.add_notice_handler(lambda d: conn.notices.append(d.message_primary))
    return conn


def search(conn, q, k=10, device="cuda"):
    conn.execute("SELECT set_config('inf_ir.search_device', %s, false)", (device,))
    return conn.execute("SELECT passage_id, score FROM inf_search_vector(%s::real[], %s, %s) ORDER BY rank",
                        (q, k, CORPUS)).fetchall()


def exact(conn, q, k=10):
    conn.execute("SET inf_ir.exact_search = on")
    try:
        return conn.execute("SELECT passage_id, score FROM inf_search_vector(%s::real[], %s, %s) ORDER BY rank",
                            (q, k, CORPUS)).fetchall()
    finally:
        conn.execute("RESET inf_ir.exact_search")


def same(a, b):
    return [i for i, _ in a] == [i for i, _ in b] and all(abs(x - y) < 1e-6 for (_, x), (_, y) in zip(a, b))


def status(conn):
    row = conn.execute("SELECT host_pid, search_device, search_copies FROM inf_ir.worker_status").fetchone()
    return {"host_pid": row[0], "search_device": row[1], "copies": row[2] or []}


def index_oid(conn):
    return conn.execute("SELECT ('inf_ir.' || inf_corpus_index(%s))::regclass::oid", (CORPUS,)).fetchone()[0]


def copy_of(conn):
    oid = index_oid(conn)
    found = [c for c in status(conn)["copies"] if c["index"] == oid]
    return found[0] if found else None


def make_corpus(conn, rng, name=CORPUS, rows=ROWS):
    conn.execute("SET client_min_messages = warning")
    conn.execute("CREATE EXTENSION IF NOT EXISTS inf_ir")
    conn.execute("SELECT inf_drop_corpus(%s)", (name,))
    conn.execute("SELECT inf_create_corpus(%s)", (name,))
    fp, cid = conn.execute(
        "SELECT m.fingerprint, c.corpus_id FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model "
        "WHERE c.name = %s", (name,)).fetchone()
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with) "
                        "VALUES (%s, %s, 'p', %s::real[], %s)",
                        [(cid, f"d{i}", vec(rng), fp) for i in range(rows)])
    conn.execute("SELECT inf_corpus_index(%s)", (name,))
    conn.execute("RESET client_min_messages")
    return cid, fp


def expect_cpu(conn, rng):
    q = vec(rng)
    conn.notices.clear()
    got = search(conn, q, device="auto")
    check(same(got, search(conn, q, device="cpu")) and not conn.notices,
          f"auto without a device: the CPU index, quietly ({conn.notices})")
    got = search(conn, q, device="cuda")
    why = [n for n in conn.notices if "was searched on the CPU" in n]
    check(len(got) == 10 and why and len(why[0].split("on the CPU: ", 1)[1]) > 5,
          f"cuda without a device: the CPU index, with a NOTICE saying why: {why[:1]}")
    s = status(conn)
    check(s["search_device"].startswith("cpu (") and s["copies"] == [],
          f"status: search_device {s['search_device']!r}, no copies")


def expect_emulated(conn, other, rng, cid, fp):
    q = vec(rng)
    search(conn, q, device="auto")
    check(copy_of(conn) is None, "auto does not use the emulation (no copy made)")

    queries = [vec(rng) for _ in range(30)]
    mismatches = sum(not same(search(conn, q), exact(conn, q)) for q in queries)
    c = copy_of(conn)
    check(mismatches == 0, f"30 searches on the copy equal inf_ir.exact_search: {mismatches} differ")
    check(c is not None and c["state"] == "ready" and c["rows"] == ROWS and c["searches"] >= 30,
          f"the index's copy is listed: {c}")

    # k = 300: 256 rows from the device, the rest from the CPU index.
    deep = search(conn, q, k=300)
    ids = [i for i, _ in deep]
    check(len(ids) == 300 and len(set(ids)) == 300 and same(deep[:256], exact(conn, q, k=300)[:256]),
          f"a scan past 256 rows goes on through the CPU index ({len(ids)} rows, {len(set(ids))} distinct)")

    # Own uncommitted row: visible to its session only.
    target = vec(rng)
    conn.execute("BEGIN")
    new_id = conn.execute("INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with) "
                          "VALUES (%s, 'uncommitted', 'p', %s::real[], %s) RETURNING passage_id",
                          (cid, target, fp)).fetchone()[0]
    mine = search(conn, target, k=1)
    theirs = search(other, target, k=1)
    conn.execute("ROLLBACK")
    after = search(conn, target, k=1)
    check(mine and mine[0][0] == new_id and abs(mine[0][1] - 1) < 1e-5,
          f"a session finds its own uncommitted row first ({mine})")
    check(theirs and theirs[0][0] != new_id and after[0][0] != new_id,
          "another session, and the same one after ROLLBACK, do not see it")

    # SIGKILL of the model host: the copy dies with it; a later search loads a new one.
    before = status(conn)["host_pid"]
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            pid = status(conn)["host_pid"]
            if pid and pid != before:
                break
        except psycopg.Error:
            pass
        time.sleep(0.2)
    queries = [vec(rng) for _ in range(5)]
    mismatches = sum(not same(search(conn, q), exact(conn, q)) for q in queries)
    c = copy_of(conn)
    # The rolled-back row's entry stays in the index, and so in the copy, until VACUUM.
    check(mismatches == 0 and c is not None and c["rows"] == ROWS + 1,
          f"after SIGKILL of the host: a new copy ({c}), {mismatches} of 5 searches differ")

    # REINDEX: a new build, so a new copy; the answers stay exact.
    conn.execute(f"REINDEX INDEX inf_ir.{conn.execute('SELECT inf_corpus_index(%s)', (CORPUS,)).fetchone()[0]}")
    mismatches = sum(not same(search(conn, q), exact(conn, q)) for q in queries)
    copies = [x for x in status(conn)["copies"] if x["index"] == index_oid(conn)]
    check(mismatches == 0 and len(copies) == 1 and copies[0]["rows"] == ROWS and copies[0]["searches"] == 5,
          f"after REINDEX: {mismatches} of 5 differ; one new copy of the index {copies}")


def too_large(conn, rng, memory):
    """A corpus whose copy needs more than the device's memory: the CPU index
    answers, and says why."""
    rows = memory // (384 * 2 + 1) + 100
    make_corpus(conn, rng, name=CORPUS + "_large", rows=rows)
    conn.notices.clear()
    q = vec(rng)
    conn.execute("SET inf_ir.search_device = cuda")
    got = conn.execute("SELECT passage_id FROM inf_search_vector(%s::real[], 10, %s)", (q, CORPUS + "_large")).fetchall()
    conn.execute("SET inf_ir.search_device = cpu")
    cpu = conn.execute("SELECT passage_id FROM inf_search_vector(%s::real[], 10, %s)", (q, CORPUS + "_large")).fetchall()
    why = [n for n in conn.notices if "was searched on the CPU" in n]
    check(got == cpu and len(got) == 10 and why and "MB on the GPU" in why[0] and "is free" in why[0],
          f"a corpus of {rows} rows in {memory} bytes of device memory: the CPU index, NOTICE {why[:1]}")
    conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS + "_large",))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--expect", choices=["cpu", "emulated"], required=True)
    ap.add_argument("--device-memory", type=int, default=None)
    args = ap.parse_args()
    rng = random.Random(7)
    with connect(args.port) as conn, connect(args.port) as other:
        cid, fp = make_corpus(conn, rng)
        if args.expect == "cpu":
            expect_cpu(conn, rng)
        else:
            expect_emulated(conn, other, rng, cid, fp)
            if args.device_memory:
                too_large(conn, rng, args.device_memory)
        conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))
    if FAILURES:
        sys.exit(f"FAILED: {len(FAILURES)} checks")


if __name__ == "__main__":
    main()
