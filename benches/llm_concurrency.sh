#!/usr/bin/env bash
# inf_llm_batch throughput against a fixed-delay endpoint (1 to 8 requests in
# flight) and requests_per_minute accuracy; see benches/llm_concurrency.py.
# Usage: benches/llm_concurrency.sh [results.json]   (after scripts/setup.sh)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
PORT=${INF_IR_BENCH_PORT:-5435}
CLUSTER=$INF_IR_HOME/bench-cluster
start_cluster "$CLUSTER" "$PORT"
trap 'stop_cluster "$CLUSTER"' EXIT
"$VENV/bin/python" "$PROJECT_ROOT/benches/llm_concurrency.py" --port "$PORT" ${1:+--json "$1"}
