#!/usr/bin/env python3
"""Latency of inf_search with LLM re-ranking, client-side, p50 over DL19's
43 queries (each with an instruction of its own, so that the first round
finds nothing cached):

- plain:   inf_search(instruction, query, 10, corpus)
- fault:   inf_search_reranked(..., 'fault', rerank_depth => 20), every
           judgment answered by a fault endpoint after 200 ms (max_concurrency
           20: one round of parallel requests, not 20 in a row)
- cached:  the same calls again, every judgment from inf_ir.rerank_judgments
- listwise: mode listwise against the same endpoint (windows one after another)
- local:   rerank_depth 20 through the local model (Qwen2.5-1.5B on this
           machine's CPU; --local-url; a few queries, each is tens of seconds)

Usage: rerank_latency.py --port P --data DIR [--local-url URL] [--local-queries 3] [--json out.json]
"""
import argparse
import json
import os
import statistics
import sys
import time

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from fault_endpoint import FaultEndpoint  # noqa: E402

DELAY = 0.2
DEPTH = 20


def timed(conn, sql, params):
    t = time.perf_counter()
    rows = conn.execute(sql, params).fetchall()
    return (time.perf_counter() - t) * 1000, rows


def p50(xs):
    return round(statistics.median(xs), 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--local-url", default=None)
    ap.add_argument("--local-queries", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    conn = psycopg.connect(f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres", autocommit=True)
    conn.execute("SET client_min_messages = warning")
    conn.execute("CREATE EXTENSION IF NOT EXISTS inf_ir")
    passages = os.path.abspath(os.path.join(args.data, "dl19", "passages.jsonl"))
    if not conn.execute("SELECT 1 FROM inf_ir.corpora WHERE name = 'dl19'").fetchone():
        t = time.time()
        conn.execute("SELECT * FROM inf_load_jsonl('dl19', %s)", (passages,))
        conn.execute("CALL inf_embed_corpus('dl19')")
        print(f"loaded and embedded dl19 in {time.time() - t:.0f} s", flush=True)
    count = conn.execute("SELECT count(*) FROM inf_ir.passages JOIN inf_ir.corpora USING (corpus_id) "
                         "WHERE name = 'dl19'").fetchone()[0]
    queries = [json.loads(l)["text"] for l in open(os.path.join(args.data, "dl19", "queries.jsonl"))]
    work = [(f"Passages must answer: {q}.", q) for q in queries]
    result = {"passages": count, "queries": len(work), "depth": DEPTH, "fault_delay_ms": DELAY * 1000}

    plain = "SELECT passage_id FROM inf_search(%s, %s, 10, 'dl19')"
    reranked = ("SELECT passage_id, relevance FROM inf_search_reranked(%s, %s, %s, k => 10, corpus => 'dl19', "
                "rerank_depth => %s, rerank_mode => %s)")
    for instruction, query in work[:5]:  # warm-up: model, plans, caches
        conn.execute(plain, (instruction, query)).fetchall()
    result["plain"] = p50([timed(conn, plain, w)[0] for w in work for _ in range(3)])
    print(f"plain inf_search: p50 {result['plain']} ms", flush=True)

    judge = lambda request: 0.9 if "water" in request["messages"][-1]["content"] else 0.2  # noqa: E731
    fault = FaultEndpoint([("yesno", DELAY)], judge=judge)
    conn.execute("SELECT inf_set_endpoint('fault', %s, 'fault-model', max_concurrency => 20)", (fault.base_url,))
    conn.execute("DELETE FROM inf_ir.rerank_judgments")
    conn.execute("DELETE FROM inf_ir.rerank_calls")
    first = []
    for instruction, query in work:
        ms, rows = timed(conn, reranked, (instruction, query, "fault", DEPTH, "logprobs"))
        assert len(rows) == 10 and all(r[1] is not None for r in rows), rows
        first.append(ms)
    result["fault"] = p50(first)
    result["fault_max_in_flight"] = fault.max_in_flight
    print(f"re-ranked through a {DELAY * 1000:.0f} ms endpoint: p50 {result['fault']} ms "
          f"({fault.max_in_flight} requests in flight at most)", flush=True)
    sent = len(fault.requests)
    again = [timed(conn, reranked, (instruction, query, "fault", DEPTH, "logprobs"))[0]
             for instruction, query in work for _ in range(3)]
    result["cached"] = p50(again)
    result["cached_requests"] = len(fault.requests) - sent
    result["cached_ratio"] = round(result["cached"] / result["plain"], 2)
    print(f"the same again, from the cache: p50 {result['cached']} ms, {result['cached_ratio']}x plain, "
          f"{result['cached_requests']} requests", flush=True)
    usage = conn.execute("SELECT calls, cache_hit_rate, requests FROM inf_ir.rerank_usage WHERE endpoint = 'fault'").fetchone()
    result["usage"] = {"calls": int(usage[0]), "cache_hit_rate": float(usage[1]), "requests": int(usage[2])}
    print(f"inf_ir.rerank_usage: {result['usage']}", flush=True)
    fault.close()

    fault = FaultEndpoint([("slow", DELAY)], good={"ranking": list(range(10, 0, -1))})
    conn.execute("SELECT inf_set_endpoint('fault', %s, 'fault-model', max_concurrency => 20)", (fault.base_url,))
    result["listwise"] = p50([timed(conn, reranked, (i, q, "fault", DEPTH, "listwise"))[0] for i, q in work[:10]])
    print(f"listwise (3 windows of 10, one after another): p50 {result['listwise']} ms", flush=True)
    fault.close()
    conn.execute("SELECT inf_drop_endpoint('fault')")

    if args.local_url:
        conn.execute("SELECT inf_set_endpoint('local-qwen', %s, 'qwen2.5-1.5b', max_concurrency => 1, "
                     "timeout_ms => 600000)", (args.local_url,))
        conn.execute("DELETE FROM inf_ir.rerank_judgments")  # a run before this one must not answer from the cache
        conn.execute("DELETE FROM inf_ir.rerank_calls WHERE endpoint = 'local-qwen'")
        local = []
        for instruction, query in work[: args.local_queries]:
            ms, rows = timed(conn, reranked, (instruction, query, "local-qwen", DEPTH, "logprobs"))
            assert len(rows) == 10 and all(r[1] is not None for r in rows), rows
            local.append(ms)
            print(f"  local model: {ms / 1000:.1f} s", flush=True)
        result["local"] = p50(local)
        result["local_queries"] = len(local)
        tokens = conn.execute("SELECT sum(prompt_tokens), sum(completion_tokens), sum(judged) FROM inf_ir.rerank_calls "
                              "WHERE endpoint = 'local-qwen'").fetchone()
        result["local_tokens_per_judgment"] = round(float(tokens[0] + tokens[1]) / float(tokens[2]), 1)
        print(f"local Qwen2.5-1.5B (CPU): p50 {result['local'] / 1000:.1f} s for {DEPTH} judgments, "
              f"{result['local_tokens_per_judgment']} tokens per judgment", flush=True)
        conn.execute("SELECT inf_drop_endpoint('local-qwen')")
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
