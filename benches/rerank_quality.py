#!/usr/bin/env python3
"""Does LLM re-ranking make instructions count? Two measurements through SQL.

1. An instruction-flip test on TREC DL19 (method below): p-MRR of the
   bi-encoder alone (inf_rerank over BM25's top 100, query side
   "{query} {instruction}") and with its top DEPTH re-ranked by
   inf_rerank_llm through an LLM endpoint.
2. DL19 nDCG@10 (no instruction): BM25 top 100 re-ranked by the bi-encoder,
   then its top DEPTH by the LLM.

Flip method (automatic, so that anyone can rebuild it from the qrels): for
each query, the judged-relevant passages (grade >= 2, else >= 1) in the
bi-encoder's top 10 are split by one content word t (5+ letters, not a stop
word, not in the query) that some of them contain and others do not, t
chosen to make the split most even. Instruction A: 'Only passages that
mention "t" are relevant.' Instruction B: 'Passages that mention "t" are
not relevant.' Under A the relevant passages are the judged-relevant ones
containing t; under B those without it. p-MRR (FollowIR) is taken both ways:
A -> B over A's relevant passages (they should fall under B) and B -> A over
B's; per query the mean over its passages, then the mean over queries, x100.
Queries with no such word are left out (the count is printed).

Needs a server with inf_ir, the corpus model loaded, and an endpoint (e.g.
the local Qwen2.5-1.5B: scripts/lib/common.sh start_llm_server PORT qwen).

Usage: rerank_quality.py --port P --endpoint NAME [--data DIR] [--depth 10]
       [--mode logprobs] [--out results.json] [--max-queries N]
"""
import argparse
import csv
import io
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from eval_retrieval import ndcg_at, psql, read_qrels  # noqa: E402  (the tests' trec_eval definitions)

STOP = set("""about above after again against among another because before being below between
both could does doing during each either every further having itself might other others
ought ourselves should since their theirs them themselves there these they those though
through under until very were what when where which while whom whose would your yours yourself
also many much more most some such than that then this with from into only same just like
include includes including called known used using usually often however therefore""".split())


def lit(text):
    return "'" + text.replace("'", "''") + "'"


def words(text):
    return set(re.findall(r"[a-z]+", text.lower()))


def p_mrr_document(rank_og, rank_new):
    """FollowIR: positive when a passage that stopped being relevant fell."""
    if rank_og > rank_new:
        return rank_new / rank_og - 1.0
    return 1.0 - rank_og / rank_new


def load(args):
    d = os.path.join(args.data, "dl19")
    passages = {}
    for line in open(os.path.join(d, "passages.jsonl")):
        p = json.loads(line)
        passages[p["_id"]] = (p.get("title") or "") + " " + p["text"]
    queries = {json.loads(l)["_id"]: json.loads(l)["text"] for l in open(os.path.join(d, "queries.jsonl"))}
    bm25 = {}
    for row in csv.reader(open(os.path.join(d, "bm25_top100.tsv")), delimiter="\t"):
        if row[0] != "query-id":
            bm25.setdefault(row[0], []).append(row[1])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for q, docs in bm25.items():
        for doc in docs:
            w.writerow([q, doc])
    psql(args, f"""
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS inf_ir;
\\o /dev/null
SELECT * FROM inf_load_jsonl('dl19_rerank', '{os.path.abspath(os.path.join(d, "passages.jsonl"))}')
 WHERE NOT EXISTS (SELECT 1 FROM inf_ir.corpora WHERE name = 'dl19_rerank');
CALL inf_embed_corpus('dl19_rerank', 256);
CREATE TABLE IF NOT EXISTS rerank_cand(qid text, doc text);
TRUNCATE rerank_cand;
COPY rerank_cand FROM STDIN WITH (FORMAT csv);
""" + buf.getvalue() + "\\.\n\\o\n")
    return passages, queries, bm25, read_qrels(os.path.join(d, "qrels.tsv"))


# One line: psql's \copy takes its query from one line.
CANDIDATES = ("(SELECT array_agg(p.passage_id) FROM rerank_cand c JOIN inf_ir.passages p ON p.external_id = c.doc "
              "JOIN inf_ir.corpora co ON co.corpus_id = p.corpus_id AND co.name = 'dl19_rerank' WHERE c.qid = {qid})")


def bi_encoder(args, qid, query, instruction):
    """The bi-encoder's ranking of BM25's top 100: [(external_id, passage_id)]."""
    out = psql(args, f"\\copy (SELECT external_id, passage_id FROM inf_rerank({lit(instruction) if instruction else 'NULL'}, "
                     f"{lit(query)}, {CANDIDATES.format(qid=lit(qid))}) ORDER BY rank) TO STDOUT WITH (FORMAT csv)\n")
    return [(r[0], int(r[1])) for r in csv.reader(io.StringIO(out))]


def with_llm(args, query, instruction, ranking):
    """`ranking` with its top depth re-ranked by the LLM; the rest after, as they were."""
    top = ranking[:args.depth]
    ids = ",".join(str(p) for _, p in top)
    out = psql(args, f"\\copy (SELECT external_id FROM inf_rerank_llm({lit(instruction or '')}, {lit(query)}, "
                     f"ARRAY[{ids}]::bigint[], {lit(args.endpoint)}, mode => {lit(args.mode)}) ORDER BY rank) "
                     "TO STDOUT WITH (FORMAT csv)\n")
    reranked = [r[0] for r in csv.reader(io.StringIO(out))]
    return reranked + [e for e, _ in ranking[args.depth:]]


def flip_word(query, relevant, passages):
    """The content word that splits the relevant passages most evenly, or None."""
    qwords = words(query)
    counts = {}
    for d in relevant:
        for w in words(passages[d]):
            if len(w) >= 5 and w not in STOP and not any(w.startswith(q[:5]) for q in qwords if len(q) >= 5):
                counts[w] = counts.get(w, 0) + 1
    best = None
    for w, n in counts.items():
        if 0 < n < len(relevant):
            key = (min(n, len(relevant) - n), len(w), w)
            if best is None or key > best[0]:
                best = (key, w)
    return best[1] if best else None


def flip_test(args, passages, queries, bm25, qrels):
    per_query = []
    left_out = 0
    for qid in [q for q in bm25 if q in qrels][: args.max_queries]:
        query = queries[qid]
        base = bi_encoder(args, qid, query, None)
        grades = qrels[qid]
        threshold = 2 if sum(1 for e, _ in base[:10] if grades.get(e, 0) >= 2) >= 2 else 1
        relevant = [e for e, _ in base[:10] if grades.get(e, 0) >= threshold]
        word = flip_word(query, relevant, passages) if len(relevant) >= 2 else None
        if word is None:
            left_out += 1
            continue
        instr = {
            "A": f'Only passages that mention "{word}" are relevant.',
            "B": f'Passages that mention "{word}" are not relevant.',
        }
        rel = {
            "A": {d for d, g in grades.items() if g >= threshold and d in passages and word in words(passages[d])},
            "B": {d for d, g in grades.items() if g >= threshold and d in passages and word not in words(passages[d])},
        }
        runs = {}
        for side in "AB":
            ranking = bi_encoder(args, qid, query, instr[side])
            runs[("bi", side)] = [e for e, _ in ranking]
            started = time.time()
            runs[("llm", side)] = with_llm(args, query, instr[side], ranking)
            print(f"  {qid} {side} '{word}': judged in {time.time() - started:.1f} s", flush=True)
        scores = {}
        for system in ("bi", "llm"):
            both = []
            for og, new in (("A", "B"), ("B", "A")):
                og_run, new_run = runs[(system, og)], runs[(system, new)]
                docs = [d for d in rel[og] if d in og_run and d in new_run]
                if docs:
                    both.append(sum(p_mrr_document(og_run.index(d) + 1, new_run.index(d) + 1) for d in docs) / len(docs))
            scores[system] = sum(both) / len(both) if both else None
        per_query.append({"qid": qid, "query": query, "word": word, "threshold": threshold,
                          "relevant_A": len(rel["A"]), "relevant_B": len(rel["B"]),
                          "p_mrr_bi": scores["bi"], "p_mrr_llm": scores["llm"]})
        print(f"{qid} {query!r} word {word!r}: p-MRR bi {scores['bi']:+.3f}, with LLM {scores['llm']:+.3f}", flush=True)
    n = len(per_query)
    summary = {
        "queries": n,
        "left_out": left_out,
        "p_mrr_bi_encoder": 100 * sum(q["p_mrr_bi"] for q in per_query) / n if n else None,
        "p_mrr_with_llm": 100 * sum(q["p_mrr_llm"] for q in per_query) / n if n else None,
    }
    return summary, per_query


def dl19_ndcg(args, queries, bm25, qrels):
    before, after = [], []
    for qid in [q for q in bm25 if q in qrels][: args.max_queries]:
        ranking = bi_encoder(args, qid, queries[qid], None)
        before.append(ndcg_at([e for e, _ in ranking], qrels[qid]))
        after.append(ndcg_at(with_llm(args, queries[qid], None, ranking), qrels[qid]))
        print(f"dl19 {qid}: nDCG@10 {before[-1]:.3f} -> {after[-1]:.3f}", flush=True)
    return {"queries": len(before), "ndcg10_bi_encoder": sum(before) / len(before),
            "ndcg10_with_llm": sum(after) / len(after)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", default="postgres")
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--mode", default="logprobs")
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--only", choices=["flip", "dl19"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.data, "dl19")):
        print(f"skipped: no {args.data}/dl19")
        return
    passages, queries, bm25, qrels = load(args)
    result = {"endpoint": args.endpoint, "depth": args.depth, "mode": args.mode}
    started = time.time()
    if args.only in (None, "flip"):
        result["flip"], result["flip_queries"] = flip_test(args, passages, queries, bm25, qrels)
        print(json.dumps(result["flip"]), flush=True)
    if args.only in (None, "dl19"):
        result["dl19"] = dl19_ndcg(args, queries, bm25, qrels)
        print(json.dumps(result["dl19"]), flush=True)
    result["seconds"] = round(time.time() - started)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
