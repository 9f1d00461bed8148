#!/usr/bin/env python3
"""A corpus that follows a table, on a server with inf_ir preloaded (the
background embedder runs):

1. backfill and burst: rows already in the table and a burst of inserts are
   all embedded with no user step, each exactly once, and searchable;
2. metadata updates re-embed nothing and filters see them at once; text
   updates re-embed exactly the rows changed;
3. search under writes: while sessions insert, update (text and metadata)
   and delete rows (20% rolled back) and the embedder works, every search in
   a REPEATABLE READ transaction returns only rows visible in its snapshot,
   whose metadata passes the filter, and (exact mode) exactly what a plain
   SQL scan over the passages joined to the table returns;
4. a switch of model (to a decoder, with --switch-model) and text columns
   while 4 sessions search: no error, every result the old corpus's or the
   new one's; a switch back with writes during it;
5. the vector index made (at inf_ir.background_index_rows) and retrained,
   with a filter index, (when the rows have doubled) by the embedder,
   CONCURRENTLY;
6. kill -9 of the embedder, of the shared worker's model host (and, with
   --pgdata, of the postmaster) mid-backfill: after the restart every row has exactly one current
   passage and the vector index checks out.

Usage: test_source_corpus.py --port P [--rows 2000] [--seconds 20] [--pgdata DIR --pg-bin DIR]
                             [--switch-model DIR]
"""
import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time

import psycopg
from vectors import unit_vector as vec

WORDS = ("cat dog fish bird tree river mountain city music science history ocean garden kitchen train "
         "bridge winter summer forest desert island library market doctor teacher engine planet "
         "coffee bread window storm light stone paper").split()
CORPUS = "source_test"
WAIT_LIMIT = 600  # seconds: only a guard against a hang, never a speed requirement


def sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15)))


def connect(dsn, autocommit=True):
    conn = psycopg.connect(dsn, autocommit=autocommit)
    conn.execute("SET client_min_messages = warning")
    return conn


def wait_drained(conn, corpus, rows_expected=None):
    """Until the corpus's queue is empty (and it has rows_expected passages)."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        queued, passages, error = conn.execute(
            "SELECT queued, passages, last_error FROM inf_ir.source_progress WHERE corpus = %s", (corpus,)).fetchone()
        if queued == 0 and (rows_expected is None or passages == rows_expected):
            return
        if time.monotonic() > deadline:
            sys.exit(f"FAILED: {queued} rows still queued, {passages} passages after {WAIT_LIMIT} s (last error: {error})")
        time.sleep(0.2)


def embedded_count(conn, corpus):
    return conn.execute("SELECT coalesce(rows_embedded, 0) FROM inf_ir.source_progress WHERE corpus = %s",
                        (corpus,)).fetchone()[0]


def consistency(conn, corpus, table):
    """Every row with text has one passage with its text and current vector; nothing else."""
    return conn.execute(
        f"""SELECT
              (SELECT count(*) FROM {table} d WHERE coalesce(d.body, '') <> ''),
              (SELECT count(*) FROM inf_ir.passages p WHERE p.corpus_id = c.corpus_id),
              (SELECT count(*) FROM inf_ir.passages p JOIN {table} d ON d.id = p.external_id::bigint
                WHERE p.corpus_id = c.corpus_id AND p.body = d.body AND p.metadata = jsonb_build_object('lang', d.lang)
                  AND p.embedded_with = m.fingerprint AND p.embedding IS NOT NULL)
            FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model WHERE c.name = %s""",
        (corpus,)).fetchone()


def make_corpus(conn, table, rows, rng):
    conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))
    conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text, lang text, views int DEFAULT 0)")
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} (id, body, lang) VALUES (%s, %s, %s)",
                        [(i, sentence(rng), rng.choice(["en", "de", "fr"])) for i in range(1, rows + 1)])
    conn.execute("SELECT inf_create_corpus(%s, source => %s, text => ARRAY['body'], metadata => ARRAY['lang'])",
                 (CORPUS, table))


def passages_written(conn):
    """Inserts and updates of inf_ir.passages that the statistics system has."""
    return conn.execute("SELECT n_tup_ins, n_tup_upd FROM pg_stat_all_tables "
                        "WHERE relid = 'inf_ir.passages'::regclass").fetchone()


def phase_burst_and_updates(dsn, rows, rng, errors):
    table = "source_docs"
    with connect(dsn) as conn:
        inserted_before, updated_before = passages_written(conn)
        make_corpus(conn, table, rows // 2, rng)
        t0 = time.monotonic()
        with conn.cursor() as cur:  # the burst: one insert per statement, as an application writes
            for i in range(rows // 2 + 1, rows + 1):
                cur.execute(f"INSERT INTO {table} (id, body, lang) VALUES (%s, %s, %s)",
                            (i, sentence(rng), rng.choice(["en", "de", "fr"])))
        wait_drained(conn, CORPUS, rows)
        lag = time.monotonic() - t0
        total, passages, good = consistency(conn, CORPUS, table)
        embedded = embedded_count(conn, CORPUS)
        print(f"backfill {rows // 2} rows + burst of {rows - rows // 2} inserts: all searchable {lag:.1f} s after the "
              f"burst began; {passages} passages for {total} rows, {good} current; {embedded} embeddings made")
        if not (total == passages == good == embedded == rows):
            errors.append(f"after the burst: rows={total} passages={passages} current={good} embeddings={embedded}")

        # Metadata: applied in the writer's transaction, nothing queued or re-embedded.
        before = embedded
        conn.execute(f"UPDATE {table} SET lang = 'xx' WHERE id % 2 = 0")
        conn.execute(f"UPDATE {table} SET views = views + 1")
        queued = conn.execute("SELECT queued FROM inf_ir.source_progress WHERE corpus = %s", (CORPUS,)).fetchone()[0]
        seen = conn.execute("SELECT count(*) FROM inf_search_vector(%s::real[], 10000, %s, filter => '{\"lang\": \"xx\"}')",
                            (vec(rng), CORPUS)).fetchone()[0]
        time.sleep(2)  # give the embedder the chance to do wrong
        after = embedded_count(conn, CORPUS)
        print(f"{rows // 2} metadata updates and {rows} updates of an unrelated column: {queued} queued, "
              f"{after - before} re-embedded, the filter finds {seen} rows at once")
        if queued or after != before or seen != rows // 2:
            errors.append(f"metadata updates: queued={queued} re-embedded={after - before} filter saw {seen}")

        # Text: exactly the changed rows are embedded again.
        changed = min(1000, rows // 2)
        conn.execute(f"UPDATE {table} SET body = body || ' again' WHERE id <= %s", (changed,))
        wait_drained(conn, CORPUS)
        after_text = embedded_count(conn, CORPUS)
        total, passages, good = consistency(conn, CORPUS, table)
        print(f"{changed} text updates: {after_text - after} re-embedded; {good} of {passages} passages current")
        if after_text - after != changed or good != total:
            errors.append(f"text updates: {after_text - after} re-embedded for {changed}, {good}/{total} current")

        # The embedder reports its writes to the statistics system (as an idle
        # backend does), so autovacuum sees the passages it writes: only it
        # inserts passages in this phase.
        deadline = time.monotonic() + WAIT_LIMIT
        while True:
            inserted, updated = passages_written(conn)
            inserted, updated = inserted - inserted_before, updated - updated_before
            if inserted >= rows and updated >= changed:
                print(f"statistics of inf_ir.passages since the phase began: {inserted} inserts, {updated} updates")
                break
            if time.monotonic() > deadline:
                errors.append(f"the embedder's writes never reached the statistics: {inserted} inserts, "
                              f"{updated} updates of inf_ir.passages")
                break
            time.sleep(0.2)
        conn.execute(f"DROP TABLE {table} CASCADE")
        conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))


def writer(dsn, table, seed, next_id, stop, counts, errors):
    rng = random.Random(seed)
    try:
        with connect(dsn, autocommit=False) as conn:
            n = 0
            while not stop.is_set():
                op = rng.random()
                target = rng.randint(1, next_id[0])
                if op < 0.35:
                    next_id[0] += 1
                    conn.execute(f"INSERT INTO {table} (id, body, lang) VALUES (%s, %s, %s)",
                                 (next_id[0] + seed * 1_000_000, sentence(rng), rng.choice(["en", "de"])))
                elif op < 0.55:
                    conn.execute(f"UPDATE {table} SET body = %s WHERE id = %s", (sentence(rng), target))
                elif op < 0.8:
                    conn.execute(f"UPDATE {table} SET lang = %s WHERE id = %s", (rng.choice(["en", "de"]), target))
                else:
                    conn.execute(f"DELETE FROM {table} WHERE id = %s", (target,))
                if rng.random() < 0.2:
                    conn.rollback()
                else:
                    conn.commit()
                n += 1
            counts[seed] = n
    except Exception as e:  # noqa: BLE001 - reported by the main thread
        errors.append(f"writer {seed}: {e}")


def phase_concurrency(dsn, rows, seconds, rng, errors):
    table = "source_live"
    with connect(dsn) as conn:
        make_corpus(conn, table, rows, rng)
        wait_drained(conn, CORPUS, rows)
        conn.execute("SELECT inf_corpus_index(%s)", (CORPUS,))
        cid, fp = conn.execute("SELECT c.corpus_id, m.fingerprint FROM inf_ir.corpora c JOIN inf_ir.models m "
                               "ON m.name = c.model WHERE c.name = %s", (CORPUS,)).fetchone()
    stop, counts = threading.Event(), {}
    next_id = [rows]
    threads = [threading.Thread(target=writer, args=(dsn, table, s, next_id, stop, counts, errors)) for s in (1, 2)]
    for t in threads:
        t.start()
    searches = mismatches = 0
    deadline = time.monotonic() + seconds
    with connect(dsn, autocommit=False) as conn:
        while time.monotonic() < deadline:
            q = vec(rng)
            flt = rng.choice([None, '{"lang": "en"}'])
            exact = searches % 2 == 0
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SELECT set_config('inf_ir.exact_search', %s, true)", ("on" if exact else "off",))
            ours = [r[0] for r in conn.execute(
                "SELECT external_id FROM inf_search_vector(%s::real[], 10, %s, filter => %s::jsonb) ORDER BY rank",
                (q, CORPUS, flt)).fetchall()]
            rows_seen = dict(conn.execute(f"SELECT id::text, lang FROM {table} WHERE id::text = ANY(%s)",
                                          (ours,)).fetchall())
            reference = [r[0] for r in conn.execute(
                f"SELECT p.external_id FROM inf_ir.passages p JOIN {table} d ON d.id = p.external_id::bigint "
                f"WHERE p.corpus_id = %s AND p.embedded_with = %s AND (%s::jsonb IS NULL OR p.metadata @> %s::jsonb) "
                f"ORDER BY inf_cosine_distance(p.embedding, %s::real[]), p.passage_id LIMIT 10",
                (cid, fp, flt, flt, q)).fetchall()]
            conn.commit()
            searches += 1
            invisible = [k for k in ours if k not in rows_seen]
            wrong_filter = [k for k in ours if flt and rows_seen.get(k) not in (None, "en")]
            if invisible or wrong_filter or (exact and ours != reference):
                mismatches += 1
                print(f"MISMATCH: ours={ours} reference={reference if exact else '-'} invisible={invisible} "
                      f"wrong_filter={wrong_filter}", file=sys.stderr)
    stop.set()
    for t in threads:
        t.join()
    with connect(dsn) as conn:
        wait_drained(conn, CORPUS)
        total, passages, good = consistency(conn, CORPUS, table)
        check = conn.execute("SELECT ok FROM inf_index_check(('inf_ir.' || inf_corpus_index(%s))::regclass)",
                             (CORPUS,)).fetchone()[0]
        print(f"{searches} searches (half exact) during {sum(counts.values())} write transactions on the table "
              f"(inserts, text and metadata updates, deletes; 20% rolled back): {mismatches} mismatches; "
              f"afterwards {passages} passages for {total} rows, {good} current; index check ok={check}")
        if mismatches or searches < 10 or not (total == passages == good) or not check:
            errors.append(f"concurrency: mismatches={mismatches} rows={total} passages={passages} current={good} "
                          f"index ok={check}")
        conn.execute(f"DROP TABLE {table} CASCADE")
        conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))


def searcher(dsn, queries, exact, stop, seen, errors):
    """inf_search over and over, each result recorded as a tuple of keys."""
    try:
        with connect(dsn) as conn:
            conn.execute("SELECT set_config('inf_ir.exact_search', %s, false)", ("on" if exact else "off",))
            while not stop.is_set():
                for q in queries:
                    keys = tuple(r[0] for r in conn.execute(
                        "SELECT external_id FROM inf_search(NULL, %s, 10, %s) ORDER BY rank", (q, CORPUS)).fetchall())
                    seen.append((exact, q, keys))
    except Exception as e:  # noqa: BLE001 - reported by the main thread
        errors.append(f"searcher (exact={exact}): {e}")


def results(conn, queries, exact):
    conn.execute("SELECT set_config('inf_ir.exact_search', %s, false)", ("on" if exact else "off",))
    return {q: tuple(r[0] for r in conn.execute(
        "SELECT external_id FROM inf_search(NULL, %s, 10, %s) ORDER BY rank", (q, CORPUS)).fetchall()) for q in queries}


def phase_switch(dsn, rows, rng, errors, model_dir=None):
    """A switch of model (with model_dir: to that decoder, registered as
    switch_dec; else none) and text columns while 4 sessions search: no
    error, and every result is exactly the old corpus's or exactly the new
    one's, never a mix or a partial set. Then a switch back to the default
    model with writes during it."""
    table = "source_switch"
    queries = [sentence(rng) for _ in range(6)]
    with connect(dsn) as conn:
        model = None
        if model_dir:
            conn.execute("SELECT inf_unregister_model('switch_dec')")
            model = conn.execute("SELECT name FROM inf_register_model('switch_dec', %s, pooling => 'last', "
                                 "max_tokens => 128)", (model_dir,)).fetchone()[0]
        conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, title text, body text, lang text)")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s)",
                            [(i, " ".join(rng.choice(WORDS) for _ in range(2)), sentence(rng), "en")
                             for i in range(1, rows + 1)])
        conn.execute("SELECT inf_create_corpus(%s, source => %s, text => ARRAY['title'], metadata => ARRAY['lang'])",
                     (CORPUS, table))
        wait_drained(conn, CORPUS, rows)
        conn.execute("SELECT inf_corpus_index(%s)", (CORPUS,))
        old_id = conn.execute("SELECT corpus_id FROM inf_ir.corpora WHERE name = %s", (CORPUS,)).fetchone()[0]
        before = {exact: results(conn, queries, exact) for exact in (True, False)}
    stop, seen = threading.Event(), []
    threads = [threading.Thread(target=searcher, args=(dsn, queries, exact, stop, seen, errors))
               for exact in (True, False, True, False)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    with connect(dsn) as conn:
        time.sleep(1)
        conn.execute("SELECT inf_alter_corpus(%s, model => %s, text => ARRAY['title', 'body'])", (CORPUS, model))
        deadline = time.monotonic() + WAIT_LIMIT
        while conn.execute("SELECT corpus_id FROM inf_ir.corpora WHERE name = %s", (CORPUS,)).fetchone()[0] == old_id:
            if time.monotonic() > deadline:
                errors.append(f"switch: not done after {WAIT_LIMIT} s")
                break
            time.sleep(0.2)
        switched = time.monotonic() - t0
        # The embedder gave the successor a vector index (CONCURRENTLY) before the switch.
        indexed = conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid "
            "WHERE x.relname LIKE 'passages\\_ivf\\_' || (SELECT corpus_id FROM inf_ir.corpora WHERE name = %s) || '\\_%%' "
            "AND i.indisvalid AND i.indisready", (CORPUS,)).fetchone()[0]
        time.sleep(2)  # searches go on after the switch
        stop.set()
        for t in threads:
            t.join()
        after = {exact: results(conn, queries, exact) for exact in (True, False)}
        while conn.execute("SELECT count(*) FROM inf_ir.corpora WHERE retired OR successor_of IS NOT NULL").fetchone()[0]:
            if time.monotonic() > deadline:
                errors.append("switch: the retired corpus was not dropped")
                break
            time.sleep(0.2)
        left = conn.execute("SELECT count(*) FROM inf_ir.passages WHERE corpus_id = %s", (old_id,)).fetchone()[0]
        passages, current = conn.execute(
            f"""SELECT count(*), count(*) FILTER (WHERE p.body = concat_ws(' ', d.title, d.body))
                FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) JOIN {table} d ON d.id = p.external_id::bigint
                WHERE c.name = %s""", (CORPUS,)).fetchone()
        check = conn.execute("SELECT ok FROM inf_index_check(('inf_ir.' || inf_corpus_index(%s))::regclass)",
                             (CORPUS,)).fetchone()[0]
        differ = sum(before[e][q] != after[e][q] for e in (True, False) for q in queries)
        # An approximate search that starts just before the old corpus's index
        # is dropped scans its rows exactly: the old exact result counts as old.
        old_seen = sum(keys in (before[e][q], before[True][q]) for e, q, keys in seen)
        new_seen = sum(keys in (after[e][q], after[True][q]) and keys not in (before[e][q], before[True][q])
                       for e, q, keys in seen)
        mixed = len(seen) - old_seen - new_seen
        print(f"switch of {'model (to ' + model + ') and ' if model else ''}text columns under 4 searching sessions: "
              f"switched {switched:.1f} s after it began; "
              f"{len(seen)} searches, {old_seen} old results, {new_seen} new ones, {mixed} neither; "
              f"{differ} of {2 * len(queries)} query results differ between old and new; {passages} passages "
              f"({current} with the new text), {left} left of the old corpus; {indexed} valid vector index made before the "
              f"switch; index check ok={check}")
        if indexed != 1 or mixed or not new_seen or not old_seen or not differ or passages != rows or current != rows or left or not check:
            errors.append(f"switch: searches={len(seen)} old={old_seen} new={new_seen} mixed={mixed} differ={differ} "
                          f"passages={passages} current={current} left={left} indexed={indexed} index ok={check}")

        # A second switch with writes during it: they reach the new corpus too.
        new_id = conn.execute("SELECT corpus_id FROM inf_ir.corpora WHERE name = %s", (CORPUS,)).fetchone()[0]
        conn.execute("SELECT inf_alter_corpus(%s, model => 'minilm', text => ARRAY['body'])", (CORPUS,))
        conn.execute(f"INSERT INTO {table} SELECT i, 'new', 'inserted during the switch ' || i, 'en' "
                     f"FROM generate_series(%s::bigint, %s::bigint) i", (rows + 1, rows + 50))
        conn.execute(f"UPDATE {table} SET body = body || ' changed' WHERE id <= 50")
        conn.execute(f"UPDATE {table} SET lang = 'de' WHERE id BETWEEN 51 AND 100")
        conn.execute(f"DELETE FROM {table} WHERE id BETWEEN 101 AND 150")
        while conn.execute("SELECT corpus_id FROM inf_ir.corpora WHERE name = %s", (CORPUS,)).fetchone()[0] == new_id:
            if time.monotonic() > deadline:
                errors.append(f"second switch: not done after {WAIT_LIMIT} s")
                break
            time.sleep(0.2)
        wait_drained(conn, CORPUS)
        total, passages, good = consistency(conn, CORPUS, table)
        print(f"a second switch (back to minilm, text body) with inserts, text and metadata updates and deletes "
              f"during it: {passages} passages for {total} rows, {good} current")
        if not (total == passages == good == rows):
            errors.append(f"second switch: rows={total} passages={passages} current={good}")
        conn.execute(f"DROP TABLE {table} CASCADE")
        conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))
        if model:
            while conn.execute("SELECT count(*) FROM inf_ir.corpora WHERE model = %s", (model,)).fetchone()[0]:
                if time.monotonic() > deadline:
                    errors.append("second switch: the retired corpus was not dropped")
                    return
                time.sleep(0.2)
            conn.execute("SELECT inf_unregister_model(%s)", (model,))


def own_index(conn):
    """The corpus's valid vector index, its trained rows (None, 0 while it has none)."""
    row = conn.execute(
        "SELECT x.relname, (SELECT trained_rows FROM inf_index_info(x.oid::regclass)) FROM pg_index i "
        "JOIN pg_class x ON x.oid = i.indexrelid WHERE i.indisvalid AND x.relname ~ ('^passages_ivf_' || "
        "(SELECT corpus_id FROM inf_ir.corpora WHERE name = %s) || '_[0-9a-z]+$')", (CORPUS,)).fetchone()
    return row if row else (None, 0)


def trained_rows(conn, index_name):
    """The rows an index's lists were trained on (0 while it does not exist)."""
    row = conn.execute("SELECT (SELECT trained_rows FROM inf_index_info(c.oid::regclass)) FROM pg_class c "
                       "WHERE c.oid = to_regclass('inf_ir.' || %s)", (index_name,)).fetchone()
    return row[0] if row and row[0] else 0


def phase_auto_index(dsn, rng, errors):
    """The embedder makes the vector index once the corpus reaches
    inf_ir.background_index_rows (here 300) and retrains it, and a filter
    index, once their rows have doubled, CONCURRENTLY, with no user step."""
    table = "source_indexed"
    with connect(dsn) as conn:
        conn.execute("ALTER SYSTEM SET inf_ir.background_index_rows = 300")
        conn.execute("SELECT pg_reload_conf()")
        try:
            make_corpus(conn, table, 400, rng)
            deadline = time.monotonic() + WAIT_LIMIT
            while own_index(conn)[0] is None and time.monotonic() < deadline:
                time.sleep(0.2)
            name, trained = own_index(conn)
            q = vec(rng)
            indexed = [r[0] for r in conn.execute(
                "SELECT external_id FROM inf_search_vector(%s::real[], 10, %s) ORDER BY rank", (q, CORPUS)).fetchall()]
            conn.execute("SET inf_ir.exact_search = on")
            exact = [r[0] for r in conn.execute(
                "SELECT external_id FROM inf_search_vector(%s::real[], 10, %s) ORDER BY rank", (q, CORPUS)).fetchall()]
            conn.execute("RESET inf_ir.exact_search")
            # A filter index (made by hand): retrained with the own one.
            en_name = conn.execute("SELECT inf_filter_index(%s, '{\"lang\": \"en\"}')", (CORPUS,)).fetchone()[0]
            en_trained = trained_rows(conn, en_name)
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} (id, body, lang) VALUES (%s, %s, 'en')",
                                [(i, sentence(rng)) for i in range(401, 901)])
            wait_drained(conn, CORPUS, 900)
            conn.execute("ANALYZE inf_ir.passages")  # the indexes' row counts, as autovacuum would refresh them
            conn.execute(f"INSERT INTO {table} (id, body, lang) VALUES (901, 'one more row', 'en')")
            en_rows = conn.execute(f"SELECT count(*) FROM {table} WHERE lang = 'en'").fetchone()[0]
            while ((own_index(conn)[1] < 800 or trained_rows(conn, en_name) < en_rows)
                   and time.monotonic() < deadline):
                time.sleep(0.2)
            name2, trained2 = own_index(conn)
            en_trained2 = trained_rows(conn, en_name)
            print(f"auto index at 300 rows: {name} trained on {trained} rows, its top 10 = the exact top 10: "
                  f"{indexed == exact}; after growing to 901 rows: {name2} retrained on {trained2} rows, "
                  f"the filter index {{lang: en}} from {en_trained} to {en_trained2} rows")
            if (name is None or trained != 400 or indexed != exact or name2 != name or trained2 < 800
                    or en_trained2 != en_rows or en_trained * 2 > en_rows):
                errors.append(f"auto index: {name} {trained} same={indexed == exact} then {name2} {trained2}; "
                              f"filter index {en_name} {en_trained} then {en_trained2} of {en_rows}")
        finally:
            conn.execute("ALTER SYSTEM RESET inf_ir.background_index_rows")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
            conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))


def phase_kill(dsn, rows, rng, errors, victim, pgdata=None, pg_bin=None):
    """kill -9 of the embedder (victim 'embedder': the postmaster resets every
    process), of the shared worker's model host (victim 'host': its
    supervisor starts a new one; the batch in flight fails and is retried) or
    of the postmaster (victim 'postmaster': restarted here with pg_ctl) once
    the backfill is under way."""
    table = "source_kill"
    with connect(dsn) as conn:
        conn.execute("ALTER SYSTEM SET inf_ir.background_batch = 64")
        conn.execute("SELECT pg_reload_conf()")
        make_corpus(conn, table, rows, rng)
        deadline = time.monotonic() + WAIT_LIMIT
        while True:
            done, = conn.execute("SELECT passages FROM inf_ir.source_progress WHERE corpus = %s", (CORPUS,)).fetchone()
            pid = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'inf_ir embedder' "
                               "AND datname = current_database()").fetchone()
            if done > 0 and pid:
                break
            if time.monotonic() > deadline:
                sys.exit("FAILED: the embedder never started")
            time.sleep(0.05)
    if victim == "host":
        with connect(dsn) as conn:
            host, = conn.execute("SELECT host_pid FROM inf_ir.worker_status").fetchone()
        os.kill(host, signal.SIGKILL)
        print(f"killed the worker's model host (pid {host}) with {done} of {rows} rows embedded")
    elif victim == "embedder":
        watcher = connect(dsn)
        os.kill(pid[0], signal.SIGKILL)  # the postmaster restarts every process after this
        print(f"killed the embedder (pid {pid[0]}) with {done} of {rows} rows embedded")
        wait_reset(watcher)
    else:
        with open(os.path.join(pgdata, "postmaster.pid")) as f:
            postmaster = int(f.readline())
        os.kill(postmaster, signal.SIGKILL)
        print(f"killed the postmaster (pid {postmaster}) with {done} of {rows} rows embedded")
        restart(pgdata, pg_bin)
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        try:
            with connect(dsn) as conn:
                conn.execute("SELECT 1 FROM inf_ir.source_progress").fetchall()
                break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                sys.exit("FAILED: the server did not come back")
            time.sleep(0.5)
    with connect(dsn) as conn:
        wait_drained(conn, CORPUS, rows)
        total, passages, good = consistency(conn, CORPUS, table)
        duplicates = conn.execute("SELECT count(*) - count(DISTINCT external_id) FROM inf_ir.passages p "
                                  "JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = %s", (CORPUS,)).fetchone()[0]
        check = conn.execute("SELECT ok FROM inf_index_check(('inf_ir.' || inf_corpus_index(%s))::regclass)",
                             (CORPUS,)).fetchone()[0]
        print(f"after the restart: {passages} passages for {total} rows, {good} current, {duplicates} duplicates; "
              f"index check ok={check}")
        if not (total == passages == good == rows) or duplicates or not check:
            errors.append(f"kill: rows={total} passages={passages} current={good} duplicates={duplicates} ok={check}")
        conn.execute("ALTER SYSTEM RESET inf_ir.background_batch")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(f"DROP TABLE {table} CASCADE")
        conn.execute("SELECT inf_drop_corpus(%s)", (CORPUS,))


def wait_reset(watcher):
    """Until the postmaster's crash reset has ended the watcher's session: a
    connection made before that could still reach the old, dying server."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        try:
            watcher.execute("SELECT 1")
        except psycopg.OperationalError:
            watcher.close()
            return
        if time.monotonic() > deadline:
            sys.exit("FAILED: the server never reset after the embedder was killed")
        time.sleep(0.1)


def restart(pgdata, pg_bin):
    """Start the server again once the killed postmaster's children are gone
    (until then its shared memory is still in use and pg_ctl refuses)."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        r = subprocess.run(["runuser", "-u", "postgres", "--", f"{pg_bin}/pg_ctl", "-D", pgdata, "-l",
                            os.path.join(pgdata, "server.log"), "-w", "start"], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"})
        if r.returncode == 0:
            return
        if time.monotonic() > deadline:
            sys.exit(f"FAILED: the server did not start again: {r.stdout} {r.stderr}")
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--pgdata", help="the server's data directory: also kill -9 the postmaster mid-backfill")
    ap.add_argument("--pg-bin", help="where pg_ctl is (with --pgdata)")
    ap.add_argument("--switch-model", help="a decoder model folder: the switch under searches goes to it")
    args = ap.parse_args()
    dsn = f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres"
    rng = random.Random(7)
    errors = []
    with connect(dsn) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS inf_ir")
    phase_burst_and_updates(dsn, args.rows, rng, errors)
    phase_concurrency(dsn, 1000, args.seconds, rng, errors)
    phase_switch(dsn, 1000, rng, errors, args.switch_model)
    phase_auto_index(dsn, rng, errors)
    phase_kill(dsn, args.rows, rng, errors, "embedder")
    phase_kill(dsn, args.rows, rng, errors, "host")
    if args.pgdata:
        phase_kill(dsn, args.rows, rng, errors, "postmaster", args.pgdata, args.pg_bin)
    if errors:
        sys.exit(f"FAILED: {errors}")
    print("ok")


if __name__ == "__main__":
    main()
