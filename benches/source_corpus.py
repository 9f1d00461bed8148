#!/usr/bin/env python3
"""The figures of benches/source_corpus.sh (see there)."""
import argparse
import json
import statistics
import time

import psycopg

CORPUS = "bench_source"


def texts(data, rows):
    base = []
    for path in (f"{data}/dl19/passages.jsonl", f"{data}/msmarco-sample/passages.jsonl"):
        try:
            with open(path) as f:
                base += [json.loads(line)["text"] for line in f]
        except FileNotFoundError:
            pass
    # Cycled past the end with a suffix, so that every row's text differs.
    return [base[i % len(base)] + ("" if i < len(base) else f" ({i // len(base) + 1})") for i in range(rows)]


def connect(dsn):
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET client_min_messages = warning")
    return conn


def insert_rate(conn, table, rows, start_id):
    """Single-row INSERT statements, each its own transaction: rows per second."""
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        for i, (body, lang) in enumerate(rows):
            cur.execute(f"INSERT INTO {table} (id, body, lang) VALUES (%s, %s, %s)", (start_id + i, body, lang))
    return len(rows) / (time.perf_counter() - t0)


def update_rate(conn, table, ids):
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        for i in ids:
            cur.execute(f"UPDATE {table} SET lang = 'xx' WHERE id = %s", (i,))
    return len(ids) / (time.perf_counter() - t0)


def progress(conn):
    return conn.execute("SELECT queued, passages, coalesce(rows_embedded, 0) FROM inf_ir.source_progress "
                        "WHERE corpus = %s", (CORPUS,)).fetchone()


def wait_drained(conn, passages_wanted):
    # A probe of the queue's index every 250 ms; the passages are counted
    # only once the queue is empty (inf_ir.source_progress counts both, which
    # every 50 ms took CPU from the embedder being measured).
    while True:
        empty = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM inf_ir.source_changes q JOIN inf_ir.corpora c "
                             "USING (corpus_id) WHERE c.name = %s)", (CORPUS,)).fetchone()[0]
        if empty and progress(conn)[1] >= passages_wanted:
            return time.perf_counter()
        time.sleep(0.25)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out")
    args = ap.parse_args()
    dsn = f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres"
    bodies = texts(args.data, args.rows)
    rows = [(b, ["en", "de", "fr"][i % 3]) for i, b in enumerate(bodies)]
    out = {"rows": args.rows}
    with connect(dsn) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS inf_ir")
        # No index build by the embedder in the middle of the insert rounds.
        conn.execute("ALTER SYSTEM SET inf_ir.background_index_rows = 0")
        conn.execute("SELECT pg_reload_conf()")
        for t in ("plain", "docs"):
            conn.execute(f"CREATE TABLE bench_{t} (id bigint PRIMARY KEY, body text, lang text)")
        conn.execute("SELECT inf_create_corpus(%s, source => 'bench_docs', text => ARRAY['body'], "
                     "metadata => ARRAY['lang'])", (CORPUS,))
        inf_embed_many = "SELECT count(*) FROM inf_embed_many(%s::text[])"
        conn.execute(inf_embed_many, (bodies[:64],))  # load the model in the worker

        # 1. The batch embedder on the same texts, in batches of 256 (as CALL
        # inf_embed_corpus); again after the burst, so that a drift of the
        # machine's speed shows (the ratio is to the mean of the two).
        def batch_embedder():
            t0 = time.perf_counter()
            for i in range(0, len(bodies), 256):
                conn.execute(inf_embed_many, (bodies[i:i + 256],))
            return time.perf_counter() - t0
        before_s = batch_embedder()
        out["inf_embed_many_s"] = before_s
        print(f"inf_embed_many, {args.rows} texts in batches of 256: {before_s:.1f} s ({args.rows / before_s:.0f}/s)")

        # 2. The burst: single-row inserts into a plain table, then into the
        # corpus's table with the background embedder following, then into
        # the plain table again once the embedder is done.
        plain_burst = insert_rate(conn, "bench_plain", rows, 1)
        waited_before = conn.execute("SELECT background_wait_seconds FROM inf_worker_status()").fetchone()[0]
        t0 = time.perf_counter()
        burst_rate = insert_rate(conn, "bench_docs", rows, 1)
        inserted = time.perf_counter()
        done = wait_drained(conn, args.rows)
        lag = done - t0
        waited = conn.execute("SELECT background_wait_seconds FROM inf_worker_status()").fetchone()[0] - waited_before
        # The plain burst again once the embedder is idle: the burst's
        # baseline is the mean of the two (a 4 s burst moves with the VM).
        conn.execute("TRUNCATE bench_plain")
        plain_after = insert_rate(conn, "bench_plain", rows, 1)
        plain_mean = (plain_burst + plain_after) / 2
        after_s = batch_embedder()
        batch_s = (before_s + after_s) / 2
        out.update(inf_embed_many_after_s=after_s, inf_embed_many_mean_s=batch_s,
                   inf_embed_many_rate=args.rows / batch_s, plain_burst_insert_rate=plain_burst,
                   plain_burst_after_insert_rate=plain_after, burst_insert_rate=burst_rate,
                   burst_insert_ratio=burst_rate / plain_mean,
                   burst_lag_s=lag, burst_after_last_insert_s=done - inserted, background_wait_s=waited,
                   background_rate=args.rows / lag, rate_ratio=(args.rows / lag) / (args.rows / batch_s))
        print(f"burst of {args.rows} inserts: {burst_rate:.0f}/s while the embedder runs, {plain_burst:.0f}/s and {plain_after:.0f}/s into "
              f"a plain table before and after ({out['burst_insert_ratio']:.2f}x); all searchable {lag:.1f} s after the first "
              f"({done - inserted:.1f} s after the last; background pieces waited {waited:.1f} s for the cores); "
              f"inf_embed_many again: {after_s:.1f} s; background rate {args.rows / lag:.1f}/s = "
              f"{out['rate_ratio']:.2f}x inf_embed_many (mean of the two)")

        # 3. The inserts' own cost: the corpus's trigger, background embedding off (no CPU taken).
        conn.execute("SELECT inf_alter_corpus(%s, background => false)", (CORPUS,))
        conn.execute("TRUNCATE bench_docs")
        conn.execute("TRUNCATE bench_plain")
        plain, with_corpus = [], []
        chunk = max(args.rows // 5, 1)
        for r in range(5):
            part = rows[r * chunk:(r + 1) * chunk]
            plain.append(insert_rate(conn, "bench_plain", part, r * chunk + 1))
            with_corpus.append(insert_rate(conn, "bench_docs", part, r * chunk + 1))
        out.update(insert_rate_plain=statistics.median(plain), insert_rate_corpus=statistics.median(with_corpus))
        out["insert_ratio"] = out["insert_rate_corpus"] / out["insert_rate_plain"]
        print(f"single-row inserts, median of 5 rounds of {chunk}: {out['insert_rate_plain']:.0f}/s into a plain table, "
              f"{out['insert_rate_corpus']:.0f}/s into the corpus's table = {out['insert_ratio']:.2f}x")
        conn.execute("SELECT inf_alter_corpus(%s, background => true)", (CORPUS,))
        wait_drained(conn, args.rows)

        # 4. Metadata updates: no re-embedding, at once.
        before = progress(conn)[2]
        ids = list(range(1, args.rows + 1))
        plain_u = update_rate(conn, "bench_plain", ids)
        corpus_u = update_rate(conn, "bench_docs", ids)
        time.sleep(3)
        queued, _, after = progress(conn)
        seen = conn.execute("SELECT count(*) FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) "
                            "WHERE c.name = %s AND p.metadata @> '{\"lang\": \"xx\"}'", (CORPUS,)).fetchone()[0]
        out.update(metadata_updates=len(ids), metadata_reembedded=after - before, metadata_visible=seen,
                   update_rate_plain=plain_u, update_rate_corpus=corpus_u)
        print(f"{len(ids)} metadata updates: {after - before} re-embedded, {queued} queued, {seen} passages carry the "
              f"new value; {plain_u:.0f}/s on a plain table, {corpus_u:.0f}/s with the corpus ({corpus_u / plain_u:.2f}x)")

        # 5. Text updates: one re-embedding each.
        n = min(1000, args.rows)
        before = after
        conn.execute("UPDATE bench_docs SET body = body || ' (edited)' WHERE id <= %s", (n,))
        wait_drained(conn, args.rows)
        after = progress(conn)[2]
        out.update(text_updates=n, text_reembedded=after - before)
        print(f"{n} text updates: {after - before} re-embedded")

        # 6. One bulk INSERT ... SELECT of all the texts: a plain table, the
        # corpus's table (its row-level C trigger: a bigint key), and a
        # corpus whose INSERT trigger is the statement-level one other keys
        # get (set by hand here, to compare the two on the same key).
        conn.execute("SELECT inf_alter_corpus(%s, background => false)", (CORPUS,))
        conn.execute("CREATE TABLE bench_stmt (id bigint PRIMARY KEY, body text, lang text)")
        conn.execute("SELECT inf_create_corpus('bench_stmt', source => 'bench_stmt', text => ARRAY['body'], "
                     "metadata => ARRAY['lang'])")
        conn.execute("SELECT inf_alter_corpus('bench_stmt', background => false)")
        stmt_id = conn.execute("SELECT corpus_id FROM inf_ir.corpora WHERE name = 'bench_stmt'").fetchone()[0]
        conn.execute(f"DROP TRIGGER inf_ir_corpus_{stmt_id}_insert ON bench_stmt")
        conn.execute(f"CREATE TRIGGER inf_ir_corpus_{stmt_id}_insert AFTER INSERT ON bench_stmt "
                     f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION inf_ir.corpus_{stmt_id}_changed()")
        conn.execute("CREATE TEMP TABLE bulk_texts (n bigint, body text, lang text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bulk_texts VALUES (%s, %s, %s)", [(i, b, l) for i, (b, l) in enumerate(rows)])
        bulk = {"plain": [], "docs": [], "stmt": []}
        for _ in range(3):
            for t in bulk:
                conn.execute(f"TRUNCATE bench_{t}")
                conn.execute("DELETE FROM inf_ir.source_changes")
                conn.execute("VACUUM inf_ir.source_changes")
                t0 = time.perf_counter()
                conn.execute(f"INSERT INTO bench_{t} SELECT n, body, lang FROM bulk_texts")
                bulk[t].append(time.perf_counter() - t0)
        med = {t: statistics.median(v) for t, v in bulk.items()}
        out.update(bulk_insert_s_plain=med["plain"], bulk_insert_s_row_trigger=med["docs"],
                   bulk_insert_s_statement_trigger=med["stmt"])
        print(f"one INSERT ... SELECT of {args.rows} rows, median of 3: plain table {med['plain'] * 1000:.0f} ms, "
              f"with the corpus's row-level C trigger {med['docs'] * 1000:.0f} ms ({med['plain'] / med['docs']:.2f}x), "
              f"with the statement-level trigger {med['stmt'] * 1000:.0f} ms ({med['plain'] / med['stmt']:.2f}x)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
