#!/usr/bin/env python3
"""Dataset checks on real data (skip cleanly without ../shared/data):

1. msmarco-sample imports (1,743 queries) and its 9,906 instructions form
   positives; a second import adds nothing.
2. JSONL round trip: export -> import into a fresh database -> export is
   byte-identical.
3. inf_evaluate / inf_evaluate_per_query on a SciFact run agree with the
   independent implementation below to 1e-6 (needs the scifact_eval corpus
   that eval_retrieval.py builds).

Usage: test_dataset.py --port P [--data DIR]
"""
import argparse
import csv
import math
import os
import subprocess
import sys

import psycopg


def dsn(port, db="postgres"):
    return f"host=127.0.0.1 port={port} user=postgres dbname={db}"


def export(port, db):
    r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db, "-X", "-At",
                        "-c", "SELECT * FROM inf_export_tuples_jsonl()"], capture_output=True, check=True)
    return r.stdout


# Independent metric definitions (trec_eval), written here from scratch.
def ndcg(ranked, rels, k):
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0)
    ideal = sorted([r for r in rels.values() if r > 0], reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def mrr(ranked, rels, k):
    return next((1.0 / (i + 1) for i, d in enumerate(ranked[:k]) if rels.get(d, 0) > 0), 0.0)


def recall(ranked, rels, k):
    rel = [d for d, r in rels.items() if r > 0]
    return sum(1 for d in ranked[:k] if d in rel) / len(rel)


def ap(ranked, rels):
    rel = {d for d, r in rels.items() if r > 0}
    hits, total = 0, 0.0
    for i, d in enumerate(ranked):
        if d in rel:
            hits += 1
            total += hits / (i + 1)
    return total / len(rel)


def main():
    ap_ = argparse.ArgumentParser()
    ap_.add_argument("--port", type=int, required=True)
    ap_.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../../shared/data"))
    args = ap_.parse_args()
    data = os.path.abspath(args.data)
    if not os.path.isdir(data):
        print(f"skipped: {data} not found")
        return
    m = os.path.join(data, "msmarco-sample")
    failures = []
    with psycopg.connect(dsn(args.port), autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS inf_ir")
        conn.execute("DROP DATABASE IF EXISTS inf_ir_dataset")
        conn.execute("DROP DATABASE IF EXISTS inf_ir_roundtrip")
        conn.execute("CREATE DATABASE inf_ir_dataset")
        conn.execute("CREATE DATABASE inf_ir_roundtrip")
    with psycopg.connect(dsn(args.port, "inf_ir_dataset"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION inf_ir")
        seed = (f"{m}/queries.jsonl", f"{m}/passages.jsonl", f"{m}/qrels.tsv")
        first = conn.execute("SELECT * FROM inf_import_seed(%s, %s, %s)", seed).fetchone()
        again = conn.execute("SELECT * FROM inf_import_seed(%s, %s, %s)", seed).fetchone()
        pos1 = conn.execute("SELECT * FROM inf_form_positives(%s, 'instructir', 'instructir')",
                            (f"{m}/instructions.jsonl",)).fetchone()
        pos2 = conn.execute("SELECT * FROM inf_form_positives(%s, 'instructir', 'instructir')",
                            (f"{m}/instructions.jsonl",)).fetchone()
        print(f"msmarco-sample seed: queries/passages/qrels added {first}, again {again}; "
              f"positives added {pos1[0]} from {pos1[1]} instructions ({pos1[2]} skipped), again {pos2[0]}")
        if first[0] != 1743 or again != (0, 0, 0) or pos1[0] != 9906 or pos2[0] != 0:
            failures.append("seed import counts")
        # Negatives for the round trip: for each query, the next instruction of the
        # same query as instruction-negative, the next query's text as query-negative.
        conn.execute("""
            WITH g AS (SELECT group_id, seed_query_id, instruction, query, passage,
                              lead(instruction) OVER w AS next_instruction,
                              lead(query) OVER (ORDER BY group_id) AS next_query
                       FROM inf_ir.tuple_groups WINDOW w AS (PARTITION BY seed_query_id ORDER BY group_id))
            SELECT inf_add_negative(group_id, 'instruction', next_instruction, passage || ' (instruction variant)', 'test', 'lead'),
                   inf_add_negative(group_id, 'query', next_query, passage || ' (query variant)', 'test', 'lead')
            FROM g WHERE next_instruction IS NOT NULL AND next_query IS NOT NULL AND next_query <> query
              AND group_id % 7 = 0""")
    a = export(args.port, "inf_ir_dataset")
    path = "/tmp/inf_ir_roundtrip.jsonl"
    with open(path, "wb") as f:
        f.write(a)
    os.chmod(path, 0o644)
    with psycopg.connect(dsn(args.port, "inf_ir_roundtrip"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION inf_ir")
        imported = conn.execute("SELECT * FROM inf_import_tuples_jsonl(%s)", (path,)).fetchone()
    b = export(args.port, "inf_ir_roundtrip")
    print(f"JSONL round trip: {len(a.splitlines())} rows, {len(a)} bytes exported, imported {imported}, "
          f"re-exported {len(b)} bytes, byte-identical: {a == b}")
    if a != b or not a:
        failures.append("round trip")

    # Metrics against the independent implementation, on a SciFact run.
    s = os.path.join(data, "scifact")
    with psycopg.connect(dsn(args.port), autocommit=True) as conn:
        has = conn.execute("SELECT count(*) FROM inf_ir.corpora WHERE name = 'scifact_eval'").fetchone()[0]
        if not has:
            print("skipped metrics check: corpus scifact_eval not built (run eval_retrieval.py first)")
        else:
            import json
            queries = [json.loads(l) for l in open(os.path.join(s, "queries.jsonl"))]
            qrels = {}
            for row in csv.reader(open(os.path.join(s, "qrels", "test.tsv")), delimiter="\t"):
                if row[0] != "query-id":
                    qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            conn.execute("DELETE FROM inf_ir.eval_qrels WHERE qrels_name = 'scifact'")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO inf_ir.eval_qrels VALUES ('scifact', %s, %s, %s)",
                                [(q, d, r) for q, ds in qrels.items() for d, r in ds.items()])
            means = dict((r[0], r[1]) for r in conn.execute(
                "SELECT metric, value FROM inf_evaluate_search('scifact_run', 'scifact_eval', 'scifact', %s, %s)",
                ([q["_id"] for q in queries], [q["text"] for q in queries])).fetchall())
            run = {}
            for q, d in conn.execute("SELECT query_id, doc_id FROM inf_ir.eval_runs WHERE run_name = 'scifact_run' "
                                     "ORDER BY query_id, rank"):
                run.setdefault(q, []).append(d)
            per_query = conn.execute("SELECT * FROM inf_evaluate_per_query('scifact_run', 'scifact', 100)").fetchall()
            worst = 0.0
            for q, n, r_, rc, a_ in per_query:
                ranked = run.get(q, [])
                for ours, ref in ((n, ndcg(ranked, qrels[q], 100)), (r_, mrr(ranked, qrels[q], 100)),
                                  (rc, recall(ranked, qrels[q], 100)), (a_, ap(ranked, qrels[q]))):
                    worst = max(worst, abs(ours - ref))
            ref10 = sum(ndcg(run.get(q, []), qrels[q], 10) for q in qrels) / len(qrels)
            worst = max(worst, abs(means["ndcg@10"] - ref10))
            print(f"SciFact run via inf_evaluate_search: nDCG@10 {means['ndcg@10']:.4f}, MRR@10 {means['mrr@10']:.4f}, "
                  f"MAP {means['map']:.4f}; max |SQL - independent Python| over {len(per_query)} queries x 4 metrics "
                  f"and the mean: {worst:.2e}")
            if worst > 1e-6:
                failures.append("metrics differ")
    if failures:
        sys.exit(f"FAILED: {failures}")


if __name__ == "__main__":
    main()
