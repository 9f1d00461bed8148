#!/usr/bin/env python3
"""inf_search under concurrent writes: while other sessions insert, update
and delete passages (some transactions rolled back) and VACUUM runs, every
search in a REPEATABLE READ transaction must return exactly what an exact
scan in plain SQL returns in the same snapshot: no deleted, invisible or
missing row.

With --search-device cuda the searches rank on the shared worker's device
(on a server started with INF_IR_GPU_EMULATION=1 and no GPU: its float16
emulation), so its copy of the index must follow every write and vacuum.

Usage: test_search_concurrency.py --port P [--seconds 20] [--search-device cuda]
"""
import argparse
import random
import sys
import threading
import time

import psycopg
from vectors import unit_vector as vec

CORPUS = "concurrency_test"


def writer(dsn, seed, stop, counts, errors):
    rng = random.Random(seed)
    try:
        with psycopg.connect(dsn, autocommit=False) as conn:
            fp, cid = conn.execute(
                "SELECT m.fingerprint, c.corpus_id FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model "
                "WHERE c.name = %s", (CORPUS,)).fetchone()
            n = 0
            while not stop.is_set():
                op = rng.random()
                if op < 0.4:
                    conn.execute("INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with) "
                                 "VALUES (%s, %s, 'w', %s::real[], %s)", (cid, f"w{seed}-{n}", vec(rng), fp))
                elif op < 0.7:
                    conn.execute("UPDATE inf_ir.passages SET embedding = %s::real[] WHERE passage_id = "
                                 "(SELECT passage_id FROM inf_ir.passages WHERE corpus_id = %s ORDER BY random() LIMIT 1)",
                                 (vec(rng), cid))
                else:
                    conn.execute("DELETE FROM inf_ir.passages WHERE passage_id = "
                                 "(SELECT passage_id FROM inf_ir.passages WHERE corpus_id = %s ORDER BY random() LIMIT 1)",
                                 (cid,))
                if rng.random() < 0.2:
                    conn.rollback()
                else:
                    conn.commit()
                n += 1
            counts[seed] = n
    except Exception as e:  # noqa: BLE001 - reported by the main thread
        errors.append(f"writer {seed}: {e}")


def vacuumer(dsn, stop, counts, errors):
    """VACUUM the passages now and then: entries leave the index (and the
    device's copy) and their TIDs go to new rows."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            n = 0
            while not stop.wait(0.5):
                conn.execute("VACUUM inf_ir.passages")
                n += 1
            counts["vacuums"] = n
    except Exception as e:  # noqa: BLE001 - reported by the main thread
        errors.append(f"vacuum: {e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--search-device", choices=["auto", "cpu", "cuda"], default=None)
    args = ap.parse_args()
    dsn = f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres"
    rng = random.Random(1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS inf_ir")
        conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))
        conn.execute("SELECT inf_create_corpus(%s)", (CORPUS,))
        fp, cid = conn.execute(
            "SELECT m.fingerprint, c.corpus_id FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model "
            "WHERE c.name = %s", (CORPUS,)).fetchone()
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO inf_ir.passages(corpus_id, external_id, body, embedding, embedded_with) "
                            "VALUES (%s, %s, 'seed', %s::real[], %s)",
                            [(cid, f"s{i}", vec(rng), fp) for i in range(1500)])
        conn.execute("SELECT inf_corpus_index(%s)", (CORPUS,))

    stop, counts, errors = threading.Event(), {}, []
    threads = [threading.Thread(target=writer, args=(dsn, s, stop, counts, errors)) for s in (11, 12)]
    threads.append(threading.Thread(target=vacuumer, args=(dsn, stop, counts, errors)))
    for t in threads:
        t.start()
    searches = mismatches = 0
    deadline = time.monotonic() + args.seconds
    with psycopg.connect(dsn, autocommit=False) as conn:
        if args.search_device:
            conn.execute("SELECT set_config('inf_ir.search_device', %s, false)", (args.search_device,))
            conn.commit()
        while time.monotonic() < deadline:
            q = vec(rng)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            ours = conn.execute("SELECT passage_id, score FROM inf_search_vector(%s::real[], 10, %s) ORDER BY rank",
                                (q, CORPUS)).fetchall()
            exact = conn.execute(
                "SELECT passage_id, s FROM (SELECT p.passage_id, (SELECT sum(a::float8 * b::float8) "
                "FROM unnest(p.embedding, %s::real[]) t(a, b)) s FROM inf_ir.passages p "
                "JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = %s) x ORDER BY s DESC, passage_id LIMIT 10",
                (q, CORPUS)).fetchall()
            visible = conn.execute("SELECT count(*) FROM inf_ir.passages WHERE passage_id = ANY(%s)",
                                   ([i for i, _ in ours],)).fetchone()[0]
            conn.commit()
            searches += 1
            same_scores = len(ours) == len(exact) and all(abs(a[1] - b[1]) < 1e-4 for a, b in zip(ours, exact))
            same_ids = {i for i, _ in ours} == {i for i, _ in exact}
            if visible != len(ours) or not same_scores or not (same_ids or _only_ties(exact)):
                mismatches += 1
                print(f"MISMATCH: ours={ours} exact={exact} visible={visible}", file=sys.stderr)
    stop.set()
    for t in threads:
        t.join()
    with psycopg.connect(dsn, autocommit=True) as conn:
        check = conn.execute("SELECT ok, entries, rows_expected, rows_missing, wrong_entries FROM inf_index_check("
                             "('inf_ir.' || inf_corpus_index(%s))::regclass)", (CORPUS,)).fetchone()
        index = conn.execute("SELECT ('inf_ir.' || inf_corpus_index(%s))::regclass::oid", (CORPUS,)).fetchone()[0]
        device, copies = conn.execute("SELECT search_device, search_copies FROM inf_ir.worker_status").fetchone()
    if args.search_device == "cuda":
        copy = [c for c in copies or [] if c["index"] == index]
        print(f"search device: {device}; the index's copy: {copy}")
        if not copy or copy[0]["searches"] < searches:
            errors.append(f"the searches did not rank on the device (copies: {copies})")
    vacuums = counts.pop("vacuums", 0)
    print(f"{searches} searches during {sum(counts.values())} concurrent write transactions and {vacuums} VACUUMs "
          f"(inserts/updates/deletes, 20% rolled back): {mismatches} mismatches against the exact SQL scan; "
          f"index check afterwards: ok={check[0]} ({check[1]} entries, {check[2]} rows, {check[3]} missing, "
          f"{check[4]} wrong)")
    if not check[0]:
        errors.append("the index check failed")
    if errors or mismatches or searches < 10:
        sys.exit(f"FAILED: {errors or mismatches}")


def _only_ties(exact):
    return len({round(s, 6) for _, s in exact}) < len(exact)


if __name__ == "__main__":
    main()
