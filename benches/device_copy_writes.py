#!/usr/bin/env python3
"""The writers' cost of a search copy (see device_copy_writes.sh).

Three rounds, interleaved so that drift hits both states alike: 2,000
single-row INSERTs (autocommit, one client) into an indexed corpus without
a copy, then with one (made by a search under inf_ir.search_device = cuda,
dropped again by restarting the model host). Also: how long the first
search takes when it loads the copy, against a search that finds it loaded.
"""
import argparse
import json
import os
import random
import signal
import statistics
import sys
import time

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from vectors import unit_vector as vec  # noqa: E402

CORPUS = "copy_bench"
INSERTS = 2000


def status(conn):
    return conn.execute("SELECT host_pid, search_copies FROM inf_ir.worker_status").fetchone()


def restart_host(conn):
    """SIGKILL of the model host: its copies go with it."""
    pid = status(conn)[0]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            now = status(conn)[0]
            if now and now != pid:
                return
        except psycopg.Error:
            pass
        time.sleep(0.2)
    sys.exit("the model host did not come back")


def inserts(conn, rng, cid, fp, tag):
    rows = [(cid, f"{tag}-{i}", vec(rng), fp) for i in range(INSERTS)]
    start = time.perf_counter()
    for row in rows:
        conn.execute("INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with) "
                     "VALUES (%s, %s, 'b', %s::real[], %s)", row)
    return INSERTS / (time.perf_counter() - start)


def search(conn, rng):
    start = time.perf_counter()
    conn.execute("SELECT count(*) FROM inf_search_vector(%s::real[], 10, %s)", (vec(rng), CORPUS)).fetchone()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--out")
    args = ap.parse_args()
    rng = random.Random(5)
    conn = psycopg.connect(f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres", autocommit=True)
    conn.execute("SET client_min_messages = warning")
    conn.execute("CREATE EXTENSION IF NOT EXISTS inf_ir")
    conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))
    conn.execute("SELECT inf_create_corpus(%s)", (CORPUS,))
    fp, cid = conn.execute(
        "SELECT m.fingerprint, c.corpus_id FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model "
        "WHERE c.name = %s", (CORPUS,)).fetchone()
    with conn.cursor() as cur:
        for start in range(0, args.rows, 10_000):
            cur.executemany("INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with) "
                            "VALUES (%s, %s, 'p', %s::real[], %s)",
                            [(cid, f"p{i}", vec(rng), fp) for i in range(start, min(start + 10_000, args.rows))])
    conn.execute("SELECT inf_corpus_index(%s)", (CORPUS,))
    conn.execute("SET inf_ir.search_device = cuda")
    without, with_copy, loads, loaded = [], [], [], []
    for round_ in range(3):
        restart_host(conn)
        without.append(inserts(conn, rng, cid, fp, f"n{round_}"))
        loads.append(search(conn, rng))          # loads the copy
        loaded.append(min(search(conn, rng) for _ in range(5)))
        with_copy.append(inserts(conn, rng, cid, fp, f"c{round_}"))
    copies = status(conn)[1]
    result = {
        "corpus_rows": args.rows,
        "inserts_per_round": INSERTS,
        "inserts_per_s_without_copy": [round(x) for x in without],
        "inserts_per_s_with_copy": [round(x) for x in with_copy],
        "ratio_median": round(statistics.median(with_copy) / statistics.median(without), 3),
        "first_search_with_load_s": [round(x, 3) for x in loads],
        "search_on_loaded_copy_s": [round(x, 4) for x in loaded],
        "copies": copies,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))


if __name__ == "__main__":
    main()
