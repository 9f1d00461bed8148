#!/usr/bin/env python3
"""A corpus sharded over PostgreSQL servers with PL/Proxy (sql/sharding/).

Starts local shard clusters (each preloaded inf_ir with its own worker),
installs sql/sharding/shard.sql there and sql/sharding/proxy.sql in a proxy
database on the test server, and checks against the single-server corpora
that eval_retrieval.py leaves (scifact_eval, dl19_eval):

1. 2 shards: SciFact loaded through the proxy (each passage routed by
   hashtext(external_id)) and embedded on the shards' own workers; top 10
   for all 300 queries equal the single server's; DL19 re-ranked through the
   proxy gives the same rankings and the reference nDCG@10.
2. Failures: a stopped shard is an ERROR naming it within statement_timeout,
   or partial results with a NOTICE naming it; a restarted one serves again
   with no manual step. statement_timeout and a cancel of the proxy session
   end the search on every shard; a slow shard with search_timeout ends
   within statement_timeout.
3. A streaming standby of shard 0 from a base backup answers inf_search
   while its primary takes writes, then equals the primary for 300 queries.
4. A decoder embedder (SmolLM2-135M, --decoder-dir): a corpus made with it
   through the proxy and embedded on the shards' workers answers as the
   same corpus on one server, top 10 for 20 queries.
5. 4 shards (the vectors and metadata moved with put_embedded_passages):
   300 queries equal the single server's; filtered searches equal its exact
   filtered scan, through each shard's filter path and through filter
   indexes made on every shard; metadata loaded with put_passages is found.
Skips cleanly without PL/Proxy or ../shared/data.

Usage: test_sharding.py --port P --pg-bin DIR --home DIR --data DIR [--decoder-dir DIR]
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import psycopg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_retrieval import REFERENCE, TOLERANCE, ndcg_at, read_qrels  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def shell(script):
    """Run bash with the project's helpers (start_cluster, set_preload, ...)."""
    subprocess.run(["bash", "-c", f"source {ROOT}/scripts/lib/common.sh; {script}"], check=True)


def psql_file(port, db, path):
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db, "-X", "-q",
                    "-v", "ON_ERROR_STOP=1", "-f", path], check=True, stdout=subprocess.DEVNULL)


def connect(port, db="postgres"):
    return psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname={db}", autocommit=True)


def fresh_db(port, db):
    with connect(port) as c:
        c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {db}")
    conn = connect(port, db)
    conn.execute("SET client_min_messages = warning")
    conn.execute("CREATE EXTENSION inf_ir")
    return conn


class Shards:
    """Shard clusters on loopback ports: shard i is database inf_ir_shard_i
    (PL/Proxy's errors name a shard by its database)."""

    def __init__(self, args):
        self.args = args
        self.ports, self.clusters = [], []

    def add(self):
        i = len(self.ports)
        port, cluster = self.args.port + 20 + i, os.path.join(self.args.home, f"shard-{i}")
        self.ports.append(port)
        self.clusters.append(cluster)
        shell(f"stop_cluster {cluster}; rm -rf {cluster}; start_cluster {cluster} {port}; set_preload {cluster} yes")
        fresh_db(port, self.db(i)).close()
        psql_file(port, self.db(i), os.path.join(ROOT, "sql", "sharding", "shard.sql"))

    def db(self, i):
        return f"inf_ir_shard_{i}"

    def conninfos(self, n):
        return [f"host=127.0.0.1 port={self.ports[i]} dbname={self.db(i)} user=postgres" for i in range(n)]

    def stop(self, i):
        shell(f"runuser -u postgres -- {self.args.pg_bin}/pg_ctl -D {self.clusters[i]} -m fast -w stop >/dev/null")

    def start(self, i):
        shell(f"start_cluster {self.clusters[i]} {self.ports[i]}")

    def remove_all(self):
        for cluster in self.clusters:
            shell(f"stop_cluster {cluster}; rm -rf {cluster}")


def judged_queries(scifact):
    queries = [json.loads(line) for line in open(os.path.join(scifact, "queries.jsonl"))]
    qrels_dir = os.path.join(scifact, "qrels")
    judged = {line.split("\t")[0] for f in os.listdir(qrels_dir) for line in open(os.path.join(qrels_dir, f))
              if not line.startswith("query")}
    return [q for q in queries if q["_id"] in judged]


def compare_with_single(single, proxy, queries, corpus, label):
    differ, took = 0, []
    for q in queries:
        want = [r[0] for r in single.execute(
            "SELECT external_id FROM inf_search(NULL, %s, 10, 'scifact_eval') ORDER BY rank", (q["text"],))]
        t = time.monotonic()
        got = [r[0] for r in proxy.execute(
            "SELECT external_id FROM inf_ir_proxy.inf_search(NULL, %s, 10, %s) ORDER BY rank", (q["text"], corpus))]
        took.append(time.monotonic() - t)
        differ += want != got
    took.sort()
    check(differ == 0, f"{label}: {len(queries)} SciFact queries, proxy top 10 vs single server: {differ} differ "
                       f"(proxy p50 {took[len(took) // 2] * 1000:.1f} ms, query embedding included)")


def copy_embedded(single, proxy, source, target):
    """Move a single-server corpus with its vectors and metadata onto the shards; the
    metadata gains "bucket" (0..7, from a hash of external_id) for the filter checks."""
    fingerprint = single.execute(
        "SELECT m.fingerprint FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model WHERE c.name = %s",
        (source,)).fetchone()[0]
    rows = single.execute(
        f"SELECT p.external_id, p.body, p.title, p.embedding::text, p.metadata || {BUCKET_JSON} FROM inf_ir.passages p "
        "JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = %s AND p.embedded_with = %s ORDER BY p.passage_id",
        (source, fingerprint)).fetchall()
    t0 = time.monotonic()
    stored = 0
    for i in range(0, len(rows), 1000):
        part = rows[i:i + 1000]
        stored += proxy.execute("SELECT inf_ir_proxy.put_embedded_passages(%s, %s, %s, %s, %s, %s, %s::jsonb[])",
                                (target, [r[0] for r in part], [r[1] for r in part], [r[2] for r in part],
                                 [r[3] for r in part], fingerprint, [json.dumps(r[4]) for r in part])).fetchone()[0]
    proxy.execute("CALL inf_ir_proxy.embed_corpus(%s)", (target,))  # nothing to embed: builds each shard's index
    return len(rows), stored, time.monotonic() - t0


# An eighth of the passages per bucket, the same on the single server (computed) and the shards (stored).
BUCKET = "abs(hashtext(p.external_id || '/b')) %% 8"
BUCKET_JSON = f"jsonb_build_object('bucket', {BUCKET})"


def close_rankings(want, got, eps=1e-5):
    """Equal lists of (id, score), but for the order of scores within eps (the shards score
    kept rows in their own loop, the reference with inf_cosine_distance: last bits differ)."""
    if len(want) != len(got) or any(abs(w[1] - g[1]) > eps for w, g in zip(want, got)):
        return False
    clear = [w[0] for w in want if w[1] > want[-1][1] + eps]
    return all(i in {g[0] for g in got} for i in clear)


def filter_checks(single, proxy, queries, corpus):
    """Filters through the proxy equal the single server's exact filtered scan: through each
    shard's exact filter path, then through a filter index made on every shard; and metadata
    loaded in bulk through the proxy is what a filter finds."""
    model, fingerprint = single.execute(
        "SELECT c.model, m.fingerprint FROM inf_ir.corpora c JOIN inf_ir.models m ON m.name = c.model "
        "WHERE c.name = 'scifact_eval'").fetchone()

    def exact(text, bucket):
        return single.execute(
            "WITH q AS MATERIALIZED (SELECT inf_embed_query(NULL, %s, %s) AS v) "
            "SELECT p.external_id, (1 - inf_cosine_distance(p.embedding, q.v))::real AS score "
            "FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id), q "
            f"WHERE c.name = 'scifact_eval' AND p.embedded_with = %s AND {BUCKET} = %s "
            "ORDER BY score DESC, p.external_id LIMIT 10", (text, model, fingerprint, bucket)).fetchall()

    def through_proxy(text, bucket):
        return proxy.execute("SELECT external_id, score FROM inf_ir_proxy.inf_search(NULL, %s, 10, %s, "
                             "filter => %s::jsonb) ORDER BY rank",
                             (text, corpus, json.dumps({"bucket": bucket}))).fetchall()

    sample = queries[:100]
    differ = sum(not close_rankings(exact(q["text"], 3), through_proxy(q["text"], 3)) for q in sample)
    check(differ == 0, f"filter {{\"bucket\": 3}} (1/8 of the passages) through the proxy: {len(sample)} queries, "
                       f"{differ} differ from the single server's exact filtered scan")
    names = [r[0] for r in proxy.execute("SELECT inf_ir_proxy.filter_index(%s, '{\"bucket\": 5}')", (corpus,))]
    differ = sum(not close_rankings(exact(q["text"], 5), through_proxy(q["text"], 5)) for q in sample)
    dropped = [r[0] for r in proxy.execute("SELECT inf_ir_proxy.drop_filter_index(%s, '{\"bucket\": 5}')",
                                           (corpus,))]
    check(differ == 0 and len(names) == 4 and all("_f" in n for n in names) and dropped == [True] * 4,
          f"a filter index on every shard (inf_ir_proxy.filter_index: {len(names)} made, e.g. {names[0]}): "
          f"{differ} of {len(sample)} filtered searches differ; drop_filter_index: {dropped}")
    ids = ["bulk-1", "bulk-2", "bulk-3"]
    proxy.execute("SELECT inf_ir_proxy.put_passages(%s, %s, %s, NULL, %s::jsonb[])",
                  (corpus, ids, ["Vitamin D and bone density.", "Coffee and sleep.", "Untagged text."],
                   ['{"tag": "bulk"}', '{"tag": "bulk"}', "{}"]))
    proxy.execute("CALL inf_ir_proxy.embed_corpus(%s)", (corpus,))
    got = sorted(r[0] for r in proxy.execute("SELECT external_id FROM inf_ir_proxy.inf_search(NULL, 'vitamin d', "
                                              "10, %s, filter => '{\"tag\": \"bulk\"}')", (corpus,)))
    check(got == ids[:2], f"metadata loaded with put_passages through the proxy: the filter finds {got}")


def dl19_rerank(args, single, proxy, shards_label):
    d = os.path.join(args.data, "dl19")
    qrels = read_qrels(os.path.join(d, "qrels.tsv"))
    bm25 = {}
    for row in csv.reader(open(os.path.join(d, "bm25_top100.tsv")), delimiter="\t"):
        if row[0] != "query-id":
            bm25.setdefault(row[0], []).append(row[1])
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(os.path.join(d, "queries.jsonl")))}
    proxy.execute("SELECT inf_ir_proxy.create_corpus('dl19')")
    total, stored, took = copy_embedded(single, proxy, "dl19_eval", "dl19")
    check(total == stored and total > 0, f"DL19: {stored} passages with their vectors moved onto {shards_label} "
                                         f"in {took:.1f} s (put_embedded_passages)")
    judged = [q for q in bm25 if q in qrels and q in queries]
    ndcg, same = [], 0
    for q in judged:
        got = [r[0] for r in proxy.execute(
            "SELECT external_id FROM inf_ir_proxy.inf_rerank(NULL, %s, %s, NULL, 'dl19') ORDER BY rank",
            (queries[q], bm25[q]))]
        want = [r[0] for r in single.execute(
            "SELECT r.external_id FROM inf_rerank(NULL, %s, (SELECT array_agg(p.passage_id) FROM inf_ir.passages p "
            "JOIN inf_ir.corpora c USING (corpus_id) WHERE c.name = 'dl19_eval' AND p.external_id = ANY(%s))) r "
            "ORDER BY r.rank", (queries[q], bm25[q]))]
        same += got[:10] == want[:10]
        ndcg.append(ndcg_at(got, qrels[q]))
    score = sum(ndcg) / len(ndcg)
    check(abs(score - REFERENCE["dl19"]) <= TOLERANCE and same == len(judged),
          f"DL19: {len(judged)} queries re-ranked through the proxy: nDCG@10 {score:.4f} (reference "
          f"{REFERENCE['dl19']}); top 10 equal to the single server's inf_rerank for {same}/{len(judged)}")


def decoder_checks(args, single, proxy, shards, docs, queries):
    """A SmolLM2 corpus through the proxy vs the same corpus on one server."""
    if not args.decoder_dir or not os.path.isfile(os.path.join(args.decoder_dir, "model.onnx")):
        print("skip  decoder corpus through the proxy: no --decoder-dir")
        return
    register = "SELECT inf_register_model('smollm2', %s, query_template => '{query} {instruction}', max_tokens => 128)"
    # The proxy embeds queries itself, the shards embed passages: the model
    # is registered wherever inf_ir runs (the same files, so one fingerprint).
    for conn in [single, proxy] + [connect(shards.ports[i], shards.db(i)) for i in range(2)]:
        conn.execute(register, (args.decoder_dir,))
    part = docs[:150]
    ids, bodies = [d["_id"] for d in part], [d["text"] for d in part]
    single.execute("SELECT inf_create_corpus('dec_single', 'smollm2')")
    single.execute("INSERT INTO inf_ir.passages (corpus_id, external_id, body) SELECT c.corpus_id, e, b "
                   "FROM inf_ir.corpora c, unnest(%s::text[], %s::text[]) AS u(e, b) WHERE c.name = 'dec_single'",
                   (ids, bodies))
    single.execute("CALL inf_embed_corpus('dec_single')")
    proxy.execute("SELECT inf_ir_proxy.create_corpus('dec', 'smollm2')")
    proxy.execute("SELECT inf_ir_proxy.put_passages('dec', %s, %s)", (ids, bodies))
    proxy.execute("CALL inf_ir_proxy.embed_corpus('dec', 256)")
    counts = proxy.execute("SELECT total, embedded FROM inf_ir_proxy.corpus_counts('dec')").fetchall()
    differ = 0
    for q in queries[:20]:
        want = [r[0] for r in single.execute(
            "SELECT external_id FROM inf_search('only trials', %s, 10, 'dec_single') ORDER BY rank", (q["text"],))]
        got = [r[0] for r in proxy.execute(
            "SELECT external_id FROM inf_ir_proxy.inf_search('only trials', %s, 10, 'dec') ORDER BY rank",
            (q["text"],))]
        differ += want != got or len(got) != 10
    check(differ == 0 and sum(e for _, e in counts) == len(part),
          f"a SmolLM2 corpus of {len(part)} passages on 2 shards ({', '.join(str(t) for t, _ in counts)}), "
          f"embedded on the shards' workers: top 10 for 20 queries vs one server: {differ} differ")


def search_error(proxy, query="SELECT count(*) FROM inf_ir_proxy.inf_search(NULL, 'vitamin d', 10, 'scifact')",
                 params=None):
    t = time.monotonic()
    try:
        proxy.execute(query, params)
        return None, time.monotonic() - t
    except psycopg.Error as e:
        return e, time.monotonic() - t


def shard_backends(shards, n):
    """Per shard: the proxy's statements running there (state active)."""
    out = []
    for i in range(n):
        with connect(shards.ports[i]) as c:
            out.append(c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                                 "AND pid <> pg_backend_pid()", (shards.db(i),)).fetchone()[0])
    return out


def failures_checks(args, single, proxy, shards, queries):
    notices = []
    proxy.add_notice_handler(lambda d: notices.append(d.message_primary))
    proxy.execute("SET client_min_messages = notice")
    proxy.execute("SET statement_timeout = '5s'")

    # Bad input is refused on the proxy, as on one server, before any shard is asked.
    refused = []
    for call in ("inf_search(NULL, 'vitamin d', 0, 'scifact')",
                 "inf_search(NULL, 'vitamin d', NULL, 'scifact', partial => true)",
                 "inf_search_vector(array_fill(0.1::real, ARRAY[384]), 10001, 'scifact')",
                 "inf_search(NULL, NULL, 10, 'scifact')"):
        e, _ = search_error(proxy, f"SELECT count(*) FROM inf_ir_proxy.{call}")
        refused.append(f"{e.sqlstate}: {e.diag.message_primary}" if e else "no error")
    check(refused[:3] == ["22023: k must be between 1 and 10000, not 0",
                          "22023: k must be between 1 and 10000, not NULL",
                          "22023: k must be between 1 and 10000, not 10001"]
          and refused[3].startswith("22004: query must not be NULL"),
          f"bad input through the proxy: {refused}")

    # Connection strings with a password are refused however libpq would
    # read it (stored in pg_foreign_server, which every role reads).
    base = shards.conninfos(2)
    kept = proxy.execute("SELECT srvoptions::text FROM pg_foreign_server WHERE srvname = 'inf_ir_shards'").fetchone()[0]
    refused = []
    for bad in ("postgresql://127.0.0.1:1/x?pass%77ord=pw", "postgresql://u:pw@127.0.0.1:1/x",
                "host=127.0.0.1 password = 'pw'",
                "host=127.0.0.1 sslpassword=pw", "postgresql://127.0.0.1:1/x?%70assword=pw"):
        e, _ = search_error(proxy, "SELECT inf_ir_proxy.set_shards(%s)", params=([base[0], bad],))
        refused.append(e is not None and e.sqlstate == "22023" and "holds a password" in e.diag.message_primary
                       and "pw" not in e.diag.message_primary)
    e, _ = search_error(proxy, "SELECT inf_ir_proxy.set_shards(%s)",
                        params=([base[0], "host=127.0.0.1 nonsense=1"],))
    after = proxy.execute("SELECT srvoptions::text FROM pg_foreign_server WHERE srvname = 'inf_ir_shards'").fetchone()[0]
    check(all(refused) and e is not None and "libpq cannot read" in e.diag.message_primary and after == kept,
          f"set_shards refuses passwords as libpq reads them (percent-encoded, URI user info, sslpassword): "
          f"{refused}; an unreadable string: {e.diag.message_primary if e else None!r}; shards unchanged")

    # A stopped shard: a clear ERROR within statement_timeout; partial results on request.
    shards.stop(1)
    for attempt in ("first (its cached connection dies)", "next (no server to connect to)"):
        e, took = search_error(proxy)
        message = e.diag.message_primary if e else ""
        check(e is not None and "inf_ir_shard_1" in message and took < 5.5,
              f"shard 1 stopped, {attempt} search: ERROR after {took:.2f} s: {message[:150]!r}")
    on_shard0 = [r[0] for r in single.execute(
        "SELECT external_id FROM inf_search(NULL, 'vitamin d', 100, 'scifact_eval') "
        "WHERE hashtext(external_id) & 1 = 0 ORDER BY rank LIMIT 10")]
    notices.clear()
    t = time.monotonic()
    got = [r[0] for r in proxy.execute(
        "SELECT external_id FROM inf_ir_proxy.inf_search(NULL, 'vitamin d', 10, 'scifact', partial => true) "
        "ORDER BY rank")]
    named = [n for n in notices if "missing: shard 1" in n]
    check(got == on_shard0 and len(named) == 1,
          f"shard 1 stopped, partial => true: shard 0's top 10 in {time.monotonic() - t:.2f} s, NOTICE "
          f"{named[0][:110] if named else None!r}")
    shards.start(1)
    rows = proxy.execute("SELECT count(*) FROM inf_ir_proxy.inf_search(NULL, 'vitamin d', 10, 'scifact')").fetchone()[0]
    check(rows == 10, f"the restarted shard serves again without a manual step: {rows} rows")

    # statement_timeout and cancel reach every shard: both shards wait on a lock.
    lockers = [connect(shards.ports[i], shards.db(i)) for i in range(2)]
    for c in lockers:
        c.autocommit = False
        c.execute("LOCK TABLE inf_ir.passages IN ACCESS EXCLUSIVE MODE")
    try:
        for how in ("statement_timeout 1s", "pg_cancel_backend after 1 s"):
            waiting = []
            sampler = threading.Timer(0.6, lambda: waiting.append(shard_backends(shards, 2)))
            sampler.start()
            if how.startswith("statement_timeout"):
                proxy.execute("SET statement_timeout = '1s'")
            else:
                proxy.execute("SET statement_timeout = 0")
                pid = proxy.execute("SELECT pg_backend_pid()").fetchone()[0]
                threading.Timer(1.0, lambda: connect(args.port).execute("SELECT pg_cancel_backend(%s)",
                                                                         (pid,))).start()
            e, took = search_error(proxy)
            sampler.join()
            time.sleep(0.3)
            after = shard_backends(shards, 2)
            check(e is not None and e.sqlstate == "57014" and took < 1.5 and waiting == [[1, 1]] and after == [0, 0],
                  f"{how}: {e.sqlstate if e else None} after {took:.2f} s; the shards' statements waiting before: "
                  f"{waiting[0] if waiting else None}, still running after: {after}")

        # A slow shard (only shard 1 locked) with search_timeout: within statement_timeout.
        lockers[0].rollback()
        proxy.execute("SELECT inf_ir_proxy.set_shards(%s, '1s')", (shards.conninfos(2),))
        proxy.execute("SET statement_timeout = '5s'")
        named, partials, took_all = 0, 0, []
        for partial in (False, False, False, True, True, True):
            notices.clear()
            e, took = search_error(proxy, "SELECT array_agg(external_id ORDER BY rank) FROM inf_ir_proxy.inf_search("
                                          f"NULL, 'vitamin d', 10, 'scifact', partial => {partial})")
            took_all.append(took)
            if not partial:
                named += e is not None and "inf_ir_shard_1" in e.diag.message_primary and took < 2
            else:
                partials += e is None and any("missing: shard 1" in n for n in notices) and took < 3
        got = proxy.execute("SELECT array_agg(external_id ORDER BY rank) FROM inf_ir_proxy.inf_search("
                            "NULL, 'vitamin d', 10, 'scifact', partial => true)").fetchone()[0]
        after = shard_backends(shards, 2)
        check(named == 3 and partials == 3 and got == on_shard0 and after == [0, 0],
              f"shard 1 slow (locked), search_timeout 1s: {named}/3 searches an ERROR naming it, {partials}/3 "
              f"partial searches shard 0's top 10 with a NOTICE naming it (slowest {max(took_all):.2f} s); "
              f"shard statements left running: {after}")
    finally:
        for c in lockers:
            c.close()
    proxy.execute("SELECT inf_ir_proxy.set_shards(%s)", (shards.conninfos(2),))
    proxy.execute("SET statement_timeout = 0")
    rows = proxy.execute("SELECT count(*) FROM inf_ir_proxy.inf_search(NULL, 'vitamin d', 10, 'scifact')").fetchone()[0]
    check(rows == 10, f"after the locks are gone the proxy serves again: {rows} rows")


def standby_checks(args, proxy, shards, queries):
    """A streaming standby of shard 0 from a base backup."""
    primary_port, standby_port = shards.ports[0], args.port + 30
    standby = os.path.join(args.home, "shard-0-standby")
    shell(f"stop_cluster {standby}; rm -rf {standby}")
    os.makedirs(standby, mode=0o700)
    shutil.chown(standby, "postgres", "postgres")
    subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(args.pg_bin, "pg_basebackup"), "-h", "127.0.0.1",
                    "-p", str(primary_port), "-U", "postgres", "-D", standby, "-R", "-X", "stream", "-c", "fast"],
                   check=True, capture_output=True)
    with open(os.path.join(standby, "postgresql.auto.conf"), "a") as f:
        f.write(f"port = {standby_port}\nunix_socket_directories = '{standby}'\nhot_standby = on\n")
    try:
        shell(f"start_cluster {standby} {standby_port}")
        db = shards.db(0)
        primary, replica = connect(primary_port, db), connect(standby_port, db)
        for c in (primary, replica):
            c.execute("SET client_min_messages = warning")
        docs = primary.execute("SELECT external_id, body FROM inf_ir.passages ORDER BY passage_id LIMIT 300").fetchall()

        # Writes on the primary (new passages, changed texts, deletes, each
        # embedded there) while the standby answers searches.
        done, errors, answered = threading.Event(), [], [0]

        def write():
            with connect(primary_port, db) as w:
                w.execute("SET client_min_messages = warning")
                for j, (ext, body) in enumerate(docs[:100]):
                    w.execute("SELECT inf_ir_shard.put_passage('scifact', %s, %s)", (f"copy-{ext}", body[::-1]))
                for ext, body in docs[100:160]:
                    w.execute("SELECT inf_ir_shard.put_passage('scifact', %s, %s)", (ext, "Revised: " + body))
                w.execute("DELETE FROM inf_ir.passages WHERE external_id = ANY(%s)", ([d[0] for d in docs[160:220]],))
                while w.execute("SELECT inf_ir_shard.embed_pending('scifact', 64)").fetchone()[0]:
                    pass
            done.set()

        writer = threading.Thread(target=write)
        t0 = time.monotonic()
        writer.start()
        i = 0
        while not done.is_set():
            try:
                replica.execute("SELECT count(*) FROM inf_search(NULL, %s, 10, 'scifact')", (queries[i % 300]["text"],))
                answered[0] += 1
            except psycopg.Error as e:
                errors.append(e.diag.message_primary)
            i += 1
        writer.join()
        wrote = time.monotonic() - t0
        lsn = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.time() + 60
        while replica.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0] is not True:
            if time.time() > deadline:
                check(False, "the standby caught up within 60 s")
                return
            time.sleep(0.2)
        check(not errors and answered[0] > 0,
              f"standby of shard 0: {answered[0]} inf_search calls answered during {wrote:.0f} s of writes on the "
              f"primary (100 new, 60 changed, 60 deleted, embedded there), {len(errors)} errors "
              f"{errors[:1] if errors else ''}")
        differ = 0
        for q in queries:
            sql = "SELECT external_id, score FROM inf_search(NULL, %s, 10, 'scifact') ORDER BY rank"
            differ += primary.execute(sql, (q["text"],)).fetchall() != replica.execute(sql, (q["text"],)).fetchall()
        counts = [c.execute("SELECT count(*) FROM inf_ir.passages WHERE embedding IS NOT NULL").fetchone()[0]
                  for c in (primary, replica)]
        check(differ == 0 and counts[0] == counts[1],
              f"after replay: {len(queries)} queries embedded on each server, standby top 10 (ids and scores) vs "
              f"primary: {differ} differ ({counts[1]} embedded passages on both)")
        # A read-only proxy: shard 0's standby with shard 1's primary, against the main proxy.
        ro = fresh_db(args.port, "inf_ir_proxy_ro")
        psql_file(args.port, "inf_ir_proxy_ro", os.path.join(ROOT, "sql", "sharding", "proxy.sql"))
        ro.execute("SELECT inf_ir_proxy.set_shards(%s)",
                   ([f"host=127.0.0.1 port={standby_port} dbname={db} user=postgres"] + shards.conninfos(2)[1:],))
        sql = "SELECT external_id, score FROM inf_ir_proxy.inf_search(NULL, %s, 10, 'scifact') ORDER BY rank"
        differ = sum(ro.execute(sql, (q["text"],)).fetchall() != proxy.execute(sql, (q["text"],)).fetchall()
                     for q in queries[:50])
        check(differ == 0, f"a read-only proxy over shard 0's standby and shard 1: 50 queries, {differ} differ "
                           f"from the proxy over the primaries")
        ro.close()
        primary.close()
        replica.close()
    finally:
        shell(f"stop_cluster {standby}; rm -rf {standby}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pg-bin", required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--quick", action="store_true",
                    help="move SciFact's vectors onto the 2 shards instead of embedding there (saves ~5 min)")
    ap.add_argument("--decoder-dir", default=None, help="a decoder embedder folder (SmolLM2's export)")
    args = ap.parse_args()
    if not os.path.exists("/usr/share/postgresql/15/extension/plproxy.control"):
        print("skip  sharding: PL/Proxy (postgresql-15-plproxy) is not installed")
        return
    scifact = os.path.join(args.data, "scifact")
    if not os.path.exists(os.path.join(scifact, "corpus.jsonl")):
        print(f"skip  sharding: {scifact} is not there")
        return
    single = connect(args.port)
    single.execute("SET client_min_messages = warning")
    have = {r[0] for r in single.execute("SELECT name FROM inf_ir.corpora")}
    if not {"scifact_eval", "dl19_eval"} <= have:
        print("skip  sharding: the single-server scifact_eval and dl19_eval corpora are not built "
              "(eval_retrieval.py first)")
        return

    shards = Shards(args)
    try:
        for _ in range(2):
            shards.add()
        proxy = fresh_db(args.port, "inf_ir_proxy")
        psql_file(args.port, "inf_ir_proxy", os.path.join(ROOT, "sql", "sharding", "proxy.sql"))
        n = proxy.execute("SELECT inf_ir_proxy.set_shards(%s)", (shards.conninfos(2),)).fetchone()[0]
        proxy.execute("SELECT inf_ir_proxy.create_corpus('scifact')")

        # 1. Load through the proxy: each passage goes to its shard; embed there.
        docs = [json.loads(line) for line in open(os.path.join(scifact, "corpus.jsonl"))]
        t0 = time.monotonic()
        for i in range(0, len(docs), 1000):
            part = docs[i:i + 1000]
            proxy.execute("SELECT inf_ir_proxy.put_passages('scifact', %s, %s, %s)",
                          ([d["_id"] for d in part], [d["text"] for d in part],
                           [d.get("title") or None for d in part]))
        loaded = time.monotonic() - t0
        counts = proxy.execute("SELECT total FROM inf_ir_proxy.corpus_counts('scifact')").fetchall()
        check(sum(c[0] for c in counts) == len(docs) and all(c[0] > 0 for c in counts),
              f"{len(docs)} SciFact passages loaded through the proxy onto {n} shards "
              f"({', '.join(str(c[0]) for c in counts)}) in {loaded:.1f} s")
        t0 = time.monotonic()
        if args.quick:
            copy_embedded(single, proxy, "scifact_eval", "scifact")
        proxy.execute("CALL inf_ir_proxy.embed_corpus('scifact', 256)")
        embedded = proxy.execute("SELECT sum(embedded) FROM inf_ir_proxy.corpus_counts('scifact')").fetchone()[0]
        check(embedded == len(docs), f"embedded on the shards' own workers: {embedded} in {time.monotonic() - t0:.0f} s")
        queries = judged_queries(scifact)
        proxy.execute("SET client_min_messages = warning")
        compare_with_single(single, proxy, queries, "scifact", "2 shards")
        q = proxy.execute("SELECT inf_embed_query(NULL, %s)", (queries[0]["text"],)).fetchone()[0]
        by_vector = proxy.execute("SELECT external_id, score FROM inf_ir_proxy.inf_search_vector(%s::real[], 10, "
                                  "'scifact') ORDER BY rank", (q,)).fetchall()
        by_text = proxy.execute("SELECT external_id, score FROM inf_ir_proxy.inf_search(NULL, %s, 10, 'scifact') "
                                "ORDER BY rank", (queries[0]["text"],)).fetchall()
        check(by_vector == by_text and len(by_text) == 10,
              "inf_ir_proxy.inf_search_vector with the query's vector equals inf_ir_proxy.inf_search")
        dl19_rerank(args, single, proxy, "2 shards")
        decoder_checks(args, single, proxy, shards, docs, queries)

        # 2. Failures.
        failures_checks(args, single, proxy, shards, queries)

        # 3. A streaming standby of shard 0.
        standby_checks(args, proxy, shards, queries)

        # 5. Four shards: the same passages and vectors, moved from the single server.
        for _ in range(2):
            shards.add()
        proxy.execute("SELECT inf_ir_proxy.set_shards(%s)", (shards.conninfos(4),))
        proxy.execute("SELECT inf_ir_proxy.create_corpus('scifact4')")
        total, stored, took = copy_embedded(single, proxy, "scifact_eval", "scifact4")
        counts = proxy.execute("SELECT total FROM inf_ir_proxy.corpus_counts('scifact4')").fetchall()
        check(stored == total == len(docs) and len(counts) == 4 and all(c[0] > 0 for c in counts),
              f"4 shards: {stored} SciFact passages with their vectors moved from the single server in {took:.1f} s "
              f"({', '.join(str(c[0]) for c in counts)})")
        compare_with_single(single, proxy, queries, "scifact4", "4 shards")
        filter_checks(single, proxy, queries, "scifact4")
        proxy.close()
    finally:
        shards.remove_all()
        with connect(args.port) as c:
            c.execute("DROP DATABASE IF EXISTS inf_ir_proxy WITH (FORCE)")
            c.execute("DROP DATABASE IF EXISTS inf_ir_proxy_ro WITH (FORCE)")
    if failures:
        sys.exit(f"FAILED: {len(failures)} check(s)")


if __name__ == "__main__":
    main()
