#!/usr/bin/env python3
"""inf_rerank_llm and inf_search_reranked end to end: against a
fault-injecting endpoint (logprob judgments, graded replies, listwise
windows, the cache and the call log, parallel requests, every failure kind
under both settings of inf_ir.rerank_on_failure, cancel), and against the
real local models: Gemma 3 270M (graded) and, when set-up assembled it,
Qwen2.5-Coder-1.5B (logprobs, the demo's re-ranker).

Usage: test_rerank.py --port P --llm-url URL --key-dir DIR [--qwen-url URL]
"""
import argparse
import json
import os
import pwd
import sys
import time

import psycopg

sys.path.insert(0, os.path.dirname(__file__))
from fault_endpoint import FaultEndpoint  # noqa: E402

DB = "inf_ir_rerank"
KEY = "sk-inf-ir-rerank-7c1e"
INSTRUCTION = "about recommended dosage, not fractures"
QUERY = "does vitamin d prevent fractures"
PASSAGES = [
    ("meta", "A 2019 meta-analysis pooling 81 trials concluded that vitamin D supplementation does not prevent fractures."),
    ("rct", "A randomized trial of 2,400 adults over 70 found that daily vitamin D did not lower the rate of fractures."),
    ("dose", "The recommended daily dose of vitamin D for most adults is 600 to 800 IU; doses above 4,000 IU are not advised."),
    ("rickets", "Vitamin D helps the body absorb calcium; deficiency in children causes rickets."),
    ("sun", "Ten to thirty minutes of midday sun a few times a week lets the skin make enough vitamin D."),
    ("dose2", "For people over 70 the advised vitamin D intake rises to 800 IU a day."),
]
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def dosage_judge(request):
    """P(yes): high for passages about dosage (as the instruction asks)."""
    user = request["messages"][-1]["content"]
    passage = user.split('"""')[1] if '"""' in user else user
    return 0.9 if ("dose" in passage or "intake" in passage) else 0.1


def dosage_ranking(request):
    """A listwise reply: the window's dosage passages first, then the rest, in order."""
    user = request["messages"][-1]["content"]
    shown = [line for line in user.split("\n") if line.startswith("[")]
    numbers = [int(line[1:line.index("]")]) for line in shown]
    about_dose = [n for n, line in zip(numbers, shown) if "dose" in line or "intake" in line]
    return {"ranking": about_dose + [n for n in numbers if n not in about_dose]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--llm-url", required=True)
    ap.add_argument("--key-dir", required=True)
    ap.add_argument("--qwen-url", default=None)
    args = ap.parse_args()
    admin = psycopg.connect(f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres", autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DB}")
    admin.execute(f"CREATE DATABASE {DB}")
    conn = psycopg.connect(f"host=127.0.0.1 port={args.port} user=postgres dbname={DB}", autocommit=True)
    warnings = []
    conn.add_notice_handler(lambda d: warnings.append((d.severity, d.message_primary)))
    conn.execute("CREATE EXTENSION inf_ir")
    conn.execute("SELECT inf_create_corpus('rr')")
    for ext, body in PASSAGES:
        conn.execute("INSERT INTO inf_ir.passages (corpus_id, external_id, body) "
                     "SELECT corpus_id, %s, %s FROM inf_ir.corpora WHERE name = 'rr'", (ext, body))
    conn.execute("CALL inf_embed_corpus('rr')")
    ids = [r[0] for r in conn.execute(
        "SELECT passage_id FROM inf_search(%s, %s, 10, 'rr') ORDER BY rank", (INSTRUCTION, QUERY)).fetchall()]
    bi_order = [r[0] for r in conn.execute(
        "SELECT external_id FROM inf_search(%s, %s, 10, 'rr') ORDER BY rank", (INSTRUCTION, QUERY)).fetchall()]
    key_file = os.path.join(args.key_dir, "inf_ir_test_rerank.key")
    with open(key_file, "w") as f:
        f.write(KEY + "\n")
    pg = pwd.getpwnam("postgres")
    os.chown(key_file, pg.pw_uid, pg.pw_gid)
    os.chmod(key_file, 0o600)

    def endpoint(script, name="faults", **kw):
        server = FaultEndpoint(script, **{k: kw.pop(k) for k in ("good", "judge") if k in kw})
        opts = "".join(f", {k} => {v}" for k, v in kw.items())
        conn.execute(f"SELECT inf_set_endpoint(%s, %s, 'm', api_key_file => %s{opts})",
                     (name, server.base_url, key_file))
        return server

    def rerank(name="faults", k=None, mode="auto"):
        t = time.monotonic()
        try:
            rows = conn.execute("SELECT external_id, score, relevance, rank FROM inf_rerank_llm(%s, %s, %s, %s, %s, %s)",
                                (INSTRUCTION, QUERY, ids, name, k, mode)).fetchall()
            return rows, None, time.monotonic() - t
        except psycopg.Error as e:
            return None, e, time.monotonic() - t

    # Logprob judgments: the dosage passages first, ties by the bi-encoder's order.
    server = endpoint(["yesno"], judge=dosage_judge, max_concurrency=8)
    rows, e, took = rerank()
    order = [r[0] for r in rows] if rows else None
    want = [x for x in bi_order if x.startswith("dose")] + [x for x in bi_order if not x.startswith("dose")]
    check(e is None and order == want and abs(rows[0][2] - 0.9) < 1e-9 and abs(rows[-1][2] - 0.1) < 1e-9
          and all(r[1] == "Bearer " + KEY for r in server.requests),
          f"logprob judgments (auto mode): {order} in {took:.2f} s, {len(server.requests)} requests "
          f"(1 to learn the endpoint gives logprobs, then {len(server.requests) - 1}); bi-encoder: {bi_order}")
    before = len(server.requests)
    rows2, e, took2 = rerank(k=3)
    check(e is None and [r[0] for r in rows2] == want[:3] and len(server.requests) == before,
          f"the same search again: every judgment from the cache, 0 requests, {took2 * 1000:.0f} ms; k = 3 keeps 3")
    cached = conn.execute("SELECT count(*), count(DISTINCT passage_hash), min(mode) FROM inf_ir.rerank_judgments").fetchone()
    check(cached == (len(PASSAGES), len(PASSAGES), "logprobs"),
          f"inf_ir.rerank_judgments holds one row per passage (hashes, no text): {cached}")
    # inf_search_reranked: the same order and relevance as inf_rerank_llm
    # over inf_search's top candidates, from the cache; the call log says so.
    conn.execute("DELETE FROM inf_ir.rerank_calls")
    searched = conn.execute("SELECT external_id, score, relevance, rank FROM inf_search_reranked(%s, %s, 'faults', "
                            "k => 4, corpus => 'rr', rerank_depth => 10)", (INSTRUCTION, QUERY)).fetchall()
    calls = conn.execute("SELECT mode, candidates, cached, judged, requests FROM inf_ir.rerank_calls").fetchall()
    same = (len(searched) == 4 and all(a[0] == b[0] and a[2] == b[2] and a[3] == b[3] and abs(a[1] - b[1]) < 1e-5
                                       for a, b in zip(searched, rows)))
    check(same and calls == [("logprobs", len(PASSAGES), len(PASSAGES), 0, 0)],
          f"inf_search_reranked(..., 'faults', k => 4): {[r[0] for r in searched]}, as inf_rerank_llm; "
          f"logged as (mode, candidates, cached, judged, requests) {calls}")
    server.close()

    # Listwise: one window of six, the model's ranking applied; not cached, logged.
    conn.execute("DELETE FROM inf_ir.rerank_calls")
    server = endpoint(["judged"], judge=dosage_ranking)
    rows, e, took = rerank(mode="listwise")
    order = [r[0] for r in rows] if rows else None
    calls = conn.execute("SELECT mode, candidates, cached, judged, requests FROM inf_ir.rerank_calls").fetchall()
    check(e is None and order == want and len(server.requests) == 1 and rows[0][2] == 1.0
          and calls == [("listwise", len(PASSAGES), 0, len(PASSAGES), 1)],
          f"listwise: {order} from {len(server.requests)} request; logged {calls}")
    server.close()

    # Parallel: 6 judgments at 0.3 s each with max_concurrency 8 are in flight together.
    conn.execute("DELETE FROM inf_ir.rerank_judgments")
    server = endpoint([("slow", 0.3)], judge=dosage_judge, max_concurrency=8, good={"relevance": 2})
    rows, e, took = rerank(mode="graded")
    check(e is None and server.max_in_flight >= 4 and all(abs(r[2] - 2 / 3) < 1e-9 for r in rows)
          and [r[0] for r in rows] == bi_order,
          f"graded mode: {len(rows) if rows else 0} judgments of 2/3 (ties keep the bi-encoder's order), "
          f"{server.max_in_flight} in flight at once, {took:.2f} s")
    server.close()

    # Auto mode on an endpoint without logprobs: one probe, then graded replies.
    conn.execute("DELETE FROM inf_ir.rerank_judgments")
    server = endpoint(["good"], name="nologprobs", good={"relevance": 3})
    rows, e, _ = rerank(name="nologprobs")
    modes = conn.execute("SELECT DISTINCT mode FROM inf_ir.rerank_judgments").fetchall()
    check(e is None and len(rows) == len(PASSAGES) and len(server.requests) == len(PASSAGES) + 1
          and modes == [("graded",)],
          f"auto mode without logprobs: graded after one probe ({len(server.requests)} requests for "
          f"{len(PASSAGES)} passages), cached as {modes}")
    server.close()
    conn.execute("SELECT inf_drop_endpoint('nologprobs')")

    # Failures: an ERROR by default, the bi-encoder's order with a WARNING on request; never partial.
    conn.execute("DELETE FROM inf_ir.rerank_judgments")
    dead = FaultEndpoint(["good"])
    dead_url = dead.base_url
    dead.close()
    conn.execute("SELECT inf_set_endpoint('faults', %s, 'm', api_key_file => %s, max_attempts => 2)", (dead_url, key_file))
    cases = [("unreachable", None)]
    for script, label in [(["malformed"], "malformed replies"), ([("429", 0)], "429 past the retries"),
                          (["500"], "5xx past the retries"), (["yesno", "malformed"], "one of six unusable")]:
        cases.append((label, script))
    for label, script in cases:
        server = endpoint(script, judge=dosage_judge, max_attempts=2, max_concurrency=1) if script else None
        conn.execute("RESET inf_ir.rerank_on_failure")
        _, e, _ = rerank(mode="logprobs")
        conn.execute("SET inf_ir.rerank_on_failure = retriever")
        warnings.clear()
        rows, e2, _ = rerank(mode="logprobs")
        conn.execute("RESET inf_ir.rerank_on_failure")
        fell_back = (rows is not None and [r[0] for r in rows] == bi_order and all(r[2] is None for r in rows)
                     and any(s == "WARNING" and "bi-encoder's order" in m for s, m in warnings))
        check(e is not None and e.sqlstate == "38000" and "failed" in e.diag.message_primary
              and KEY not in str(e) and e2 is None and fell_back,
              f"{label}: ERROR {e.diag.message_primary[:110] if e else None!r}; with rerank_on_failure = "
              f"retriever the bi-encoder's order, relevance NULL, and a WARNING")
        if server:
            server.close()

    # Cancel and statement_timeout while the endpoint stalls.
    server = endpoint([("stall", 60)], judge=dosage_judge)
    conn.execute("SET statement_timeout = '1s'")
    _, e, took = rerank(mode="logprobs")
    conn.execute("RESET statement_timeout")
    check(e is not None and e.sqlstate == "57014" and took < 30,
          f"statement_timeout 1s while the endpoint stalls: {e.sqlstate if e else None} after {took:.2f} s")
    server.close()

    # The real local model: judgments in [0, 1] for every candidate. Gemma 3
    # 270M (the fast test model) does not start its answer with Yes or No,
    # so it is asked for graded replies, which its server constrains to the
    # schema (json_object); Qwen2.5 1.5B answers Yes/No (see BENCHMARKS.md).
    conn.execute("SELECT inf_set_endpoint('local', %s, 'gemma3-270m', reply_format => 'json_object', "
                 "max_output_tokens => 16, temperature => 0, max_concurrency => 1, timeout_ms => 600000)",
                 (args.llm_url,))
    conn.execute("DELETE FROM inf_ir.rerank_judgments")
    rows, e, took = rerank(name="local", mode="graded")
    check(e is None and rows is not None and len(rows) == len(PASSAGES)
          and all(r[2] is not None and 0 <= r[2] <= 1 for r in rows),
          f"the real local model: {len(rows) if rows else 0} judgments in {took:.1f} s: "
          f"{[(r[0], round(r[2], 3)) for r in rows] if rows else e}")
    conn.execute("SELECT inf_drop_endpoint('local')")

    # Qwen2.5-Coder-1.5B, the demo's re-ranker: Yes/No logprobs (its server
    # keeps all logits), one request per passage.
    if args.qwen_url:
        conn.execute("SELECT inf_set_endpoint('qwen', %s, 'qwen2.5-1.5b', max_concurrency => 1, "
                     "timeout_ms => 600000)", (args.qwen_url,))
        rows, e, took = rerank(name="qwen", mode="logprobs")
        check(e is None and rows is not None and len(rows) == len(PASSAGES)
              and all(r[2] is not None and 0 <= r[2] <= 1 for r in rows)
              and len({round(r[2], 6) for r in rows}) > 1,
              f"Qwen2.5-1.5B, logprobs: {len(rows) if rows else 0} judgments in {took:.1f} s: "
              f"{[(r[0], round(r[2], 3)) for r in rows] if rows else e}")
        conn.execute("SELECT inf_drop_endpoint('qwen')")
    else:
        print("skip  Qwen2.5-1.5B (not assembled: INF_IR_SKIP_QWEN was set at set-up)")
    conn.execute("SELECT inf_drop_endpoint('faults')")
    os.unlink(key_file)
    conn.close()
    admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    if failures:
        sys.exit(f"FAILED: {len(failures)} check(s)")


if __name__ == "__main__":
    main()
