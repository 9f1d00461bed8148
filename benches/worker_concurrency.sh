#!/usr/bin/env bash
# Shared worker vs per-backend models under concurrency: pgbench clients
# calling inf_embed_query, worker mode (inf_ir preloaded) and local mode (not
# preloaded) interleaved in the same run. Throughput, p50/p99 latency and the
# total memory of all PostgreSQL processes.
# Usage: benches/worker_concurrency.sh [clients, default 1,8,32] [seconds per run, default 30]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
CLIENTS=${1:-1,8,32}
SECONDS_PER_RUN=${2:-30}
PORT=${INF_IR_WORKER_BENCH_PORT:-5438}
CLUSTER=$INF_IR_HOME/worker-bench-cluster
start_cluster "$CLUSTER" "$PORT"
trap 'stop_cluster "$CLUSTER"' EXIT
echo "cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\" cores=$(nproc) postgres=$("$PG_BIN/postgres" --version)"
"$VENV/bin/python" "$PROJECT_ROOT/benches/worker_concurrency.py" --port "$PORT" --cluster "$CLUSTER" \
  --clients "$CLIENTS" --seconds "$SECONDS_PER_RUN" --project "$PROJECT_ROOT"
