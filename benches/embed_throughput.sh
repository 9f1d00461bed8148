#!/usr/bin/env bash
# Embedding throughput: 1,000 SciFact passages (title + " " + text) through
# SQL (inf_embed_many, and one inf_embed call per row) against raw ONNX
# Runtime (benches/raw_ort.rs) on the same model and thread count, in one run,
# alternating the two so that machine noise hits both.
#
# Usage: benches/embed_throughput.sh [ROUNDS]   (default 2)
# Needs scripts/setup.sh to have run, and ../shared/data/scifact (or SCIFACT_DIR).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
ROUNDS=${1:-2}
THREADS=${INF_IR_BENCH_THREADS:-2}
N=${INF_IR_BENCH_PASSAGES:-1000}
SCIFACT_DIR=${SCIFACT_DIR:-$PROJECT_ROOT/../shared/data/scifact}
PORT=${INF_IR_BENCH_PORT:-5435}
CLUSTER=$INF_IR_HOME/bench-cluster
[ -f "$SCIFACT_DIR/corpus.jsonl" ] || { echo "skipped: $SCIFACT_DIR/corpus.jsonl not found"; exit 0; }

cd "$PROJECT_ROOT"
work=$(mktemp -d)
chmod 755 "$work"
"$VENV/bin/python" - "$SCIFACT_DIR/corpus.jsonl" "$N" "$work" <<'PY'
import json, sys
src, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
docs = [json.loads(l) for l in open(src)][:n]
with open(out + "/texts.jsonl", "w") as f:
    for d in docs:
        f.write(json.dumps(d["title"] + " " + d["text"]) + "\n")
PY
raw_bin=$(cargo bench --no-run --bench raw_ort 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
[ -x "$raw_bin" ] || die "could not build benches/raw_ort.rs"

start_cluster "$CLUSTER" "$PORT"
trap 'stop_cluster "$CLUSTER"; rm -rf "$work"' EXIT
PSQL=(psql -h 127.0.0.1 -p "$PORT" -U postgres -X -q -At -v ON_ERROR_STOP=1)
"${PSQL[@]}" <<SQL
DROP DATABASE IF EXISTS inf_ir_bench;
CREATE DATABASE inf_ir_bench;
\c inf_ir_bench
CREATE EXTENSION inf_ir;
CREATE TABLE bench_passages(id serial PRIMARY KEY, body text NOT NULL);
CREATE TEMP TABLE raw(j json);
\copy raw FROM '$work/texts.jsonl' WITH (FORMAT csv, QUOTE e'\x01', DELIMITER e'\x02')
INSERT INTO bench_passages(body) SELECT j #>> '{}' FROM raw;
SQL

# sql_rate COUNTING_QUERY: passages per second of one timed statement that
# returns the number of vectors made as "count", after a warm-up call.
sql_rate() {
  "${PSQL[@]}" -d inf_ir_bench <<SQL
SET inf_ir.threads = $THREADS;
SELECT count(*) FROM inf_embed_many(ARRAY['warm up the model']);
SELECT extract(epoch FROM clock_timestamp()) \gset t0_
$1 \gset n_
SELECT round(:n_count / (extract(epoch FROM clock_timestamp()) - :t0_extract)::numeric, 2) AS passages_per_s;
SQL
}

echo "passages=$N threads=$THREADS rounds=$ROUNDS cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\""
for r in $(seq "$ROUNDS"); do
  raw=$("$raw_bin" "$work/texts.jsonl" "$MODEL_DIR" "$ORT_LIBRARY" "$THREADS" | sed -n 's/.*passages_per_s=\([0-9.]*\).*/\1/p')
  many=$(sql_rate "SELECT count(embedding) FROM inf_embed_many((SELECT array_agg(body ORDER BY id) FROM bench_passages))" | tail -1)
  rows=$(sql_rate "SELECT count(inf_embed(body)) FROM bench_passages" | tail -1)
  echo "round $r: raw_ort=$raw/s  sql_inf_embed_many=$many/s  sql_inf_embed_per_row=$rows/s  $(awk -v m="$many" -v r="$rows" -v b="$raw" 'BEGIN { printf "ratio_many=%.3f  ratio_rows=%.3f", m / b, r / b }')"
done
