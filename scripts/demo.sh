#!/usr/bin/env bash
# The main job: set up (idempotent), build and install inf_ir, start a local
# PostgreSQL, load the project's sample passages, embed them, and rank them
# for one query under different instructions.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
DEMO_PORT=${INF_IR_DEMO_PORT:-5433}
DEMO_CLUSTER=$INF_IR_HOME/demo-cluster

"$PROJECT_ROOT/scripts/setup.sh"

step "Local PostgreSQL on 127.0.0.1:$DEMO_PORT (data in $DEMO_CLUSTER)"
start_cluster "$DEMO_CLUSTER" "$DEMO_PORT"
PSQL=(psql -h 127.0.0.1 -p "$DEMO_PORT" -U postgres -X -v ON_ERROR_STOP=1)
"${PSQL[@]}" -q -c "DROP DATABASE IF EXISTS inf_ir_demo" -c "CREATE DATABASE inf_ir_demo"

step "Load and embed the sample (examples/sample_passages.tsv)"
"${PSQL[@]}" -d inf_ir_demo <<SQL
CREATE EXTENSION inf_ir;
SELECT name, dimension, pooling, max_tokens, query_template FROM inf_ir.models;
CREATE TABLE demo_passages(id int PRIMARY KEY, body text NOT NULL, embedding real[]);
\copy demo_passages(id, body) FROM '$PROJECT_ROOT/examples/sample_passages.tsv'
UPDATE demo_passages p SET embedding = e.embedding
FROM (SELECT a.ids[m.ord] AS id, m.embedding
      FROM (SELECT array_agg(id ORDER BY id) ids, array_agg(body ORDER BY id) bodies FROM demo_passages) a,
           inf_embed_many(a.bodies) m) e
WHERE p.id = e.id;
SELECT id, left(body, 50) AS passage, (embedding)[1:3] AS first_dims FROM demo_passages ORDER BY id LIMIT 4;
SQL

step "Rank the passages for one query under three instructions"
"${PSQL[@]}" -d inf_ir_demo <<'SQL'
CREATE FUNCTION pg_temp.rank(instruction text, query text)
RETURNS TABLE(rank bigint, score numeric, passage text) LANGUAGE sql AS $$
  WITH q AS (SELECT inf_embed_query(instruction, query) AS v)
  SELECT row_number() OVER (ORDER BY s DESC), round(s::numeric, 4), left(body, 90)
  FROM (SELECT p.body, (SELECT sum(a::float8 * b::float8) FROM unnest(p.embedding, q.v) AS t(a, b)) AS s
        FROM demo_passages p, q) scored
  ORDER BY s DESC LIMIT 3 $$;
\echo 'query: does vitamin d prevent fractures   (no instruction)'
SELECT * FROM pg_temp.rank(NULL, 'does vitamin d prevent fractures');
\echo 'same query, instruction: only meta-analyses that pool many trials'
SELECT * FROM pg_temp.rank('only meta-analyses that pool many trials', 'does vitamin d prevent fractures');
\echo 'same query, instruction: about recommended dosage, not fractures'
SELECT * FROM pg_temp.rank('about recommended dosage, not fractures', 'does vitamin d prevent fractures');
SQL
echo
echo "Done. The server keeps running: psql -h 127.0.0.1 -p $DEMO_PORT -U postgres inf_ir_demo"
echo "Stop it with: runuser -u postgres -- $PG_BIN/pg_ctl -D $DEMO_CLUSTER stop"
