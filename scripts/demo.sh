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
echo
echo "Done. The server keeps running: psql -h 127.0.0.1 -p $DEMO_PORT -U postgres inf_ir_demo"
echo "Stop it with: runuser -u postgres -- $PG_BIN/pg_ctl -D $DEMO_CLUSTER stop"
