#!/usr/bin/env bash
# The main job: set up (idempotent), build and install inf_ir, start a local
# PostgreSQL, load the project's sample passages into a corpus, embed them,
# and search them with inf_search for one query under different instructions.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
DEMO_PORT=${INF_IR_DEMO_PORT:-5433}
DEMO_CLUSTER=$INF_IR_HOME/demo-cluster

"$PROJECT_ROOT/scripts/setup.sh"

step "Local PostgreSQL on 127.0.0.1:$DEMO_PORT (data in $DEMO_CLUSTER)"
start_cluster "$DEMO_CLUSTER" "$DEMO_PORT"
# Preloaded: one shared worker holds the model for every session.
set_preload "$DEMO_CLUSTER" yes
PSQL=(psql -h 127.0.0.1 -p "$DEMO_PORT" -U postgres -X -v ON_ERROR_STOP=1)
"${PSQL[@]}" -q -c "DROP DATABASE IF EXISTS inf_ir_demo" -c "CREATE DATABASE inf_ir_demo"

step "Load the sample into a corpus and embed it (examples/sample_passages.tsv)"
"${PSQL[@]}" -d inf_ir_demo <<SQL
CREATE EXTENSION inf_ir;
SELECT name, dimension, pooling, max_tokens, query_template FROM inf_ir.models;
SELECT inf_create_corpus('default') AS corpus_id;
CREATE TEMP TABLE sample(id text, body text);
\copy sample FROM '$PROJECT_ROOT/examples/sample_passages.tsv'
INSERT INTO inf_ir.passages(corpus_id, external_id, body)
SELECT (SELECT corpus_id FROM inf_ir.corpora WHERE name = 'default'), id, body FROM sample;
CALL inf_embed_corpus('default', 8);
SELECT corpus, total, embedded, pending FROM inf_ir.embedding_progress;
SELECT external_id, left(body, 50) AS passage, (embedding)[1:3] AS first_dims
FROM inf_ir.passages ORDER BY passage_id LIMIT 3;
SQL

step "inf_search: one query under three instructions"
"${PSQL[@]}" -d inf_ir_demo <<'SQL'
\echo 'query: does vitamin d prevent fractures   (no instruction)'
SELECT rank, round(score::numeric, 4) AS score, left(body, 90) AS passage
FROM inf_search(NULL, 'does vitamin d prevent fractures', 3);
\echo 'same query, instruction: only meta-analyses that pool many trials'
SELECT rank, round(score::numeric, 4) AS score, left(body, 90) AS passage
FROM inf_search('only meta-analyses that pool many trials', 'does vitamin d prevent fractures', 3);
\echo 'same query, instruction: about recommended dosage, not fractures'
SELECT rank, round(score::numeric, 4) AS score, left(body, 90) AS passage
FROM inf_search('about recommended dosage, not fractures', 'does vitamin d prevent fractures', 3);
\echo 'the shared inference worker that embedded all of the above:'
SELECT mode, state, host_pid, models, requests, batches, round(tokens_per_second) AS tokens_per_second
FROM inf_ir.worker_status;
SQL
step "LLM re-ranking: the same query and instructions, the top 10 judged by the local Qwen2.5-1.5B (about a minute)"
if [ -f "$QWEN_MODEL_FILE" ]; then
  QWEN_PORT=${INF_IR_DEMO_QWEN_PORT:-8432}
  start_llm_server "$QWEN_PORT" qwen
  trap stop_llm_server EXIT
  "${PSQL[@]}" -d inf_ir_demo <<SQL
SELECT inf_set_endpoint('qwen', 'http://127.0.0.1:$QWEN_PORT/v1', 'qwen2.5-1.5b', max_concurrency => 2,
                        timeout_ms => 600000);
\echo 'query: does vitamin d prevent fractures   (no instruction), re-ranked'
SELECT rank, round(relevance::numeric, 3) AS relevance, round(score::numeric, 4) AS score, left(body, 80) AS passage
FROM inf_search_reranked(NULL, 'does vitamin d prevent fractures', 'qwen', k => 3, rerank_depth => 10);
\echo 'same query, instruction: only meta-analyses that pool many trials, re-ranked'
SELECT rank, round(relevance::numeric, 3) AS relevance, round(score::numeric, 4) AS score, left(body, 80) AS passage
FROM inf_search_reranked('only meta-analyses that pool many trials', 'does vitamin d prevent fractures', 'qwen', k => 3, rerank_depth => 10);
\echo 'same query, instruction: about recommended dosage, not fractures, re-ranked'
SELECT rank, round(relevance::numeric, 3) AS relevance, round(score::numeric, 4) AS score, left(body, 80) AS passage
FROM inf_search_reranked('about recommended dosage, not fractures', 'does vitamin d prevent fractures', 'qwen', k => 3, rerank_depth => 10);
\echo 'what the re-ranking cost (inf_ir.rerank_usage; a repeated search is answered from the cache):'
SELECT endpoint, mode, calls, candidates, cache_hit_rate, requests, prompt_tokens, completion_tokens, p50_ms
FROM inf_ir.rerank_usage;
SQL
  stop_llm_server "$QWEN_PORT"
else
  echo "skipped: Qwen2.5-1.5B was not assembled (INF_IR_SKIP_QWEN was set at set-up)"
fi

step "The InF-IR synthesis stages from SQL, with the small local LLM (Gemma 3 270M via llama-cpp-python)"
LLM_PORT=${INF_IR_DEMO_LLM_PORT:-8433}
start_llm_server "$LLM_PORT"
trap stop_llm_server EXIT
"${PSQL[@]}" -d inf_ir_demo <<SQL
-- Three seed pairs: a query and the sample passage that answers it.
INSERT INTO inf_ir.seed_queries(query_id, text, source) VALUES
  ('q1', 'does vitamin d prevent fractures', 'demo'), ('q2', 'is coffee good for you', 'demo'),
  ('q3', 'when was the eiffel tower built', 'demo');
INSERT INTO inf_ir.seed_passages(passage_id, text, source)
  SELECT external_id, body, 'demo' FROM inf_ir.passages WHERE external_id IN ('5', '8', '10');
INSERT INTO inf_ir.seed_qrels VALUES ('q1', '5', 1), ('q2', '8', 1), ('q3', '10', 1);
SELECT inf_set_endpoint('gemma', 'http://127.0.0.1:$LLM_PORT/v1', 'gemma3-270m', reply_format => 'json_object',
                        max_concurrency => 1, max_output_tokens => 160, max_attempts => 2);
CALL inf_synthesize('instruction', 'gemma');
CALL inf_synthesize('negatives', 'gemma');
CALL inf_synthesize('judge', 'gemma');
SELECT run_id, stage, state, done, failed, skipped, items_per_second, prompt_tokens + completion_tokens AS tokens
FROM inf_ir.llm_progress ORDER BY run_id;
SELECT stage, item, left(failure, 70) AS failure FROM inf_ir.llm_failures;
SELECT group_id, query, left(instruction, 70) AS instruction, generator FROM inf_ir.tuple_groups ORDER BY group_id;
SELECT group_id, kind, left(altered, 50) AS altered, left(passage, 50) AS passage FROM inf_ir.tuple_negatives
ORDER BY group_id, kind;
SELECT group_id, evaluator, pos_pos, ineg_pos, ineg_own, qneg_pos, qneg_own, ambiguous FROM inf_ir.validation_scores;
SELECT left(line, 160) AS exported FROM inf_export_tuples_jsonl() AS line;
SQL
stop_llm_server

echo
echo "Done. The server keeps running: psql -h 127.0.0.1 -p $DEMO_PORT -U postgres inf_ir_demo"
echo "Stop it with: runuser -u postgres -- $PG_BIN/pg_ctl -D $DEMO_CLUSTER stop"
