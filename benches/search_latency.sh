#!/usr/bin/env bash
# inf_search at 5k (SciFact), 100k and 1M passages: latency, load time,
# memory, recall@10, against a plain-SQL exact scan in the same run.
# Usage: benches/search_latency.sh [5k,100k,1m]
# Needs scripts/setup.sh to have run, and ../shared/data/scifact (or SCIFACT_DIR).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
SIZES=${1:-5k,100k,1m}
SCIFACT_DIR=${SCIFACT_DIR:-$PROJECT_ROOT/../shared/data/scifact}
PORT=${INF_IR_BENCH_PORT:-5435}
CLUSTER=$INF_IR_HOME/bench-cluster
[ -f "$SCIFACT_DIR/corpus.jsonl" ] || { echo "skipped: $SCIFACT_DIR/corpus.jsonl not found"; exit 0; }
start_cluster "$CLUSTER" "$PORT"
trap 'stop_cluster "$CLUSTER"' EXIT
# Bulk-load settings for the benchmark's own throwaway cluster only.
psql -h 127.0.0.1 -p "$PORT" -U postgres -X -q -c "ALTER SYSTEM SET synchronous_commit = off" \
  -c "ALTER SYSTEM SET max_wal_size = '8GB'" -c "ALTER SYSTEM SET shared_buffers = '4GB'" >/dev/null
stop_cluster "$CLUSTER"; start_cluster "$CLUSTER" "$PORT"
echo "cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\" cores=$(nproc) threads=inf_ir.threads default ($(nproc))"
"$VENV/bin/python" "$PROJECT_ROOT/benches/search_latency.py" --port "$PORT" --scifact "$SCIFACT_DIR" --sizes "$SIZES"
