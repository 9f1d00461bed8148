#!/usr/bin/env python3
"""Crash safety of the inf_ivf index, and a streaming standby.

1. While 4 sessions insert embedded passages (each its own commit), every
   process of the cluster gets SIGKILL, as in a power cut. After PostgreSQL's
   crash recovery, inf_index_check must report every visible row reachable
   and no wrong entry (the corpus's index and a filter index alike), every
   acknowledged commit must be there, and searches through the indexes (all
   lists probed) must equal an exact scan.
2. A standby made by pg_basebackup streams from the primary while it takes
   more writes; once caught up, its inf_search_vector results equal the
   primary's for 50 queries, and inf_index_check passes there too.

Usage: test_index_crash.py --port P --cluster DIR --pg-bin DIR --standby-port P2
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import psycopg
from vectors import unit_vector as vec

CORPUS = "crash_test"


def corpus_ids(conn):
    return conn.execute("SELECT m.fingerprint, c.corpus_id FROM inf_ir.corpora c JOIN inf_ir.models m "
                        "ON m.name = c.model WHERE c.name = %s", (CORPUS,)).fetchone()


def inserter(dsn, seed, stop, acknowledged):
    rng = random.Random(seed)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            fp, cid = corpus_ids(conn)
            n = 0
            while not stop.is_set():
                ext = f"i{seed}-{n}"
                conn.execute("INSERT INTO inf_ir.passages(corpus_id, external_id, body, metadata, embedding, "
                             "embedded_with) VALUES (%s, %s, 'crash', jsonb_build_object('tenant', %s), %s::real[], %s)",
                             (cid, ext, n % 3, vec(rng), fp))
                acknowledged.append(ext)
                n += 1
    except psycopg.Error:
        pass  # the server went away: expected


def cluster_pids(cluster):
    """The postmaster and every child of it."""
    with open(os.path.join(cluster, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
    return [postmaster] + [int(c) for c in children]


def pg_ctl(pg_bin, cluster, *args):
    subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(pg_bin, "pg_ctl"), "-D", cluster,
                    "-l", os.path.join(cluster, "server.log"), "-w", *args],
                   check=True, stdout=subprocess.DEVNULL, env={k: v for k, v in os.environ.items()
                                                               if k != "RUST_BACKTRACE"})


def check_indexes(conn, label):
    """inf_index_check of every vector index of the corpus (its own and the filter index)."""
    ok = True
    for name in index_names(conn):
        row = conn.execute("SELECT ok, entries, dead_entries, rows_expected, rows_reachable, rows_missing, "
                           "wrong_entries, duplicate_entries FROM inf_index_check(('inf_ir.' || %s)::regclass)",
                           (name,)).fetchone()
        kind = "filter index" if name.count("_") == 4 else "corpus index"  # passages_ivf_<id>_<fp>[_f<md5>]
        print(f"  {label}, {kind}: inf_index_check ok={row[0]}: {row[1]} entries ({row[2]} dead), {row[3]} rows "
              f"expected, {row[4]} reachable, {row[5]} missing, {row[6]} wrong, {row[7]} duplicate")
        ok = ok and row[0]
    return ok


def index_names(conn):
    fp, cid = corpus_ids(conn)
    names = [r[0] for r in conn.execute("SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = "
                                        "'inf_ir'::regnamespace AND c.relname LIKE %s ORDER BY 1",
                                        (f"passages\\_ivf\\_{cid}\\_%",))]
    if len(names) != 2:
        sys.exit(f"FAILED: expected the corpus's index and one filter index, found {names}")
    return names


# Keeps a third of the rows: inf_search answers it exactly through the
# corpus's metadata index (GIN), so that index's WAL is checked too.
TENANT = '{"tenant": 1}'
# Another third, with a filter index of its own (a partial inf_ivf index).
INDEXED_TENANT = '{"tenant": 2}'


def search_ids(conn, q, exact, filt=None):
    conn.execute(f"SET inf_ir.exact_search = {'on' if exact else 'off'}")
    return [r[0] for r in conn.execute("SELECT passage_id FROM inf_search_vector(%s::real[], 10, %s, %s::jsonb) "
                                       "ORDER BY rank", (q, CORPUS, filt)).fetchall()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--pg-bin", required=True)
    ap.add_argument("--standby-port", type=int, required=True)
    args = ap.parse_args()
    dsn = f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres"
    rng = random.Random(5)
    failures = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))
        conn.execute("SELECT inf_create_corpus(%s)", (CORPUS,))
        fp, cid = corpus_ids(conn)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO inf_ir.passages(corpus_id, external_id, body, metadata, embedding, "
                            "embedded_with) VALUES (%s, %s, 'seed', jsonb_build_object('tenant', %s), %s::real[], %s)",
                            [(cid, f"s{i}", i % 3, vec(rng), fp) for i in range(4000)])
        conn.execute("SELECT inf_corpus_index(%s)", (CORPUS,))  # 4 lists, trained on the seed rows
        conn.execute("SELECT inf_filter_index(%s, %s)", (CORPUS, INDEXED_TENANT))

    # 1. SIGKILL of every server process during a stream of inserts.
    stop, acknowledged = threading.Event(), []
    threads = [threading.Thread(target=inserter, args=(dsn, s, stop, acknowledged)) for s in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    pids = cluster_pids(args.cluster)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    stop.set()
    for t in threads:
        t.join()
    print(f"  SIGKILL to {len(pids)} server processes after {len(acknowledged)} acknowledged inserts")
    deadline = time.time() + 30  # until they are reaped: a pid that exists keeps its lock files
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.time() < deadline:
        time.sleep(0.1)
    pg_ctl(args.pg_bin, args.cluster, "start")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        if not check_indexes(conn, "after crash recovery"):
            failures.append("index check after crash recovery")
        present = conn.execute("SELECT count(*) FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) "
                               "WHERE c.name = %s AND external_id = ANY(%s)", (CORPUS, acknowledged)).fetchone()[0]
        print(f"  acknowledged inserts present after recovery: {present} of {len(acknowledged)}")
        if present != len(acknowledged):
            failures.append("acknowledged inserts lost")
        conn.execute("SET inf_ir.probes = 1000")
        queries = [vec(rng) for _ in range(30)]
        differ = sum(search_ids(conn, q, False) != search_ids(conn, q, True) for q in queries)
        print(f"  index search (all lists) vs exact scan after recovery: {differ} of {len(queries)} differ")
        if differ:
            failures.append("searches differ from the exact scan after recovery")
        fdiffer = sum(search_ids(conn, q, False, TENANT) != search_ids(conn, q, True, TENANT) for q in queries)
        print(f"  filtered search (metadata index) vs exact filtered scan after recovery: {fdiffer} of "
              f"{len(queries)} differ")
        if fdiffer:
            failures.append("filtered searches differ from the exact filtered scan after recovery")
        idiffer = sum(search_ids(conn, q, False, INDEXED_TENANT) != search_ids(conn, q, True, INDEXED_TENANT)
                      for q in queries)
        print(f"  filtered search (filter index) vs exact filtered scan after recovery: {idiffer} of "
              f"{len(queries)} differ")
        if idiffer:
            failures.append("searches through the filter index differ from the exact filtered scan after recovery")

    # 2. A streaming standby from a base backup.
    standby = args.cluster.rstrip("/") + "-standby"
    subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(args.pg_bin, "pg_ctl"), "-D", standby,
                    "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(standby, ignore_errors=True)
    os.makedirs(standby, mode=0o700)
    shutil.chown(standby, "postgres", "postgres")
    backup = subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(args.pg_bin, "pg_basebackup"), "-h",
                             "127.0.0.1", "-p", str(args.port), "-U", "postgres", "-D", standby, "-R", "-X", "stream",
                             "-c", "fast"], capture_output=True, text=True)
    if backup.returncode != 0:
        sys.exit(f"FAILED: pg_basebackup: {backup.stderr.strip()}")
    with open(os.path.join(standby, "postgresql.auto.conf"), "a") as f:
        f.write(f"port = {args.standby_port}\nunix_socket_directories = '{standby}'\nhot_standby = on\n")
    pg_ctl(args.pg_bin, standby, "start")
    try:
        stop.clear()
        threads = [threading.Thread(target=inserter, args=(dsn, 10 + s, stop, acknowledged)) for s in range(2)]
        for t in threads:
            t.start()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(200):  # updates and deletes stream too
                conn.execute("UPDATE inf_ir.passages SET embedding = %s::real[] WHERE passage_id = (SELECT passage_id "
                             "FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = %s "
                             "ORDER BY random() LIMIT 1)", (vec(rng), CORPUS))
            conn.execute("DELETE FROM inf_ir.passages WHERE passage_id IN (SELECT passage_id FROM inf_ir.passages p "
                         "JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = %s ORDER BY random() LIMIT 300)",
                         (CORPUS,))
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
        sdsn = f"host=127.0.0.1 port={args.standby_port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as p, psycopg.connect(sdsn, autocommit=True) as s:
            lsn = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            deadline = time.time() + 60
            while s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0] is not True:
                if time.time() > deadline:
                    sys.exit("FAILED: the standby did not catch up within 60 s")
                time.sleep(0.2)
            for c in (p, s):
                c.execute("SET client_min_messages = warning")
            rows = [c.execute("SELECT count(*) FROM inf_ir.passages").fetchone()[0] for c in (p, s)]
            queries = [vec(rng) for _ in range(50)]
            differ = sum(search_ids(p, q, False) != search_ids(s, q, False) for q in queries)
            differ += sum(search_ids(p, q, False, TENANT) != search_ids(s, q, False, TENANT) for q in queries)
            differ += sum(search_ids(p, q, False, INDEXED_TENANT) != search_ids(s, q, False, INDEXED_TENANT)
                          for q in queries)
            print(f"  standby caught up ({rows[1]} passages, primary {rows[0]}): {differ} of {3 * len(queries)} "
                  f"inf_search_vector results (unfiltered, filtered, through the filter index) differ from the "
                  f"primary's")
            if differ or rows[0] != rows[1]:
                failures.append("the standby's searches differ from the primary's")
            if not check_indexes(s, "on the standby"):
                failures.append("index check on the standby")
            texts = s.execute("SELECT count(*) FROM inf_search(NULL, 'a query embedded on the standby', 5, %s)",
                              (CORPUS,)).fetchone()[0]
            print(f"  inf_search with a text query on the standby: {texts} rows")
            if texts != 5:
                failures.append("inf_search on the standby")
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(args.pg_bin, "pg_ctl"), "-D", standby,
                        "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(standby, ignore_errors=True)
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
