#!/usr/bin/env bash
# inf_search with LLM re-ranking: p50 against plain search, a 200 ms fault
# endpoint, the cache, listwise, and the local Qwen2.5-1.5B (when set-up
# assembled it). See benches/rerank_latency.py.
# Usage: benches/rerank_latency.sh [results.json]
# Needs scripts/setup.sh to have run, and ../shared/data/dl19 (or DATA_DIR).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
DATA_DIR=${DATA_DIR:-$PROJECT_ROOT/../shared/data}
PORT=${INF_IR_BENCH_PORT:-5435}
QWEN_PORT=${INF_IR_BENCH_QWEN_PORT:-8436}
CLUSTER=$INF_IR_HOME/bench-cluster
[ -f "$DATA_DIR/dl19/passages.jsonl" ] || { echo "skipped: $DATA_DIR/dl19/passages.jsonl not found"; exit 0; }
start_cluster "$CLUSTER" "$PORT"
trap 'stop_cluster "$CLUSTER"; stop_llm_server "$QWEN_PORT"' EXIT
set_preload "$CLUSTER" yes
stop_cluster "$CLUSTER"; start_cluster "$CLUSTER" "$PORT"
local_args=()
if [ -f "$QWEN_MODEL_FILE" ]; then
  start_llm_server "$QWEN_PORT" qwen
  local_args=(--local-url "http://127.0.0.1:$QWEN_PORT/v1")
fi
echo "cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\" cores=$(nproc)"
"$VENV/bin/python" "$PROJECT_ROOT/benches/rerank_latency.py" --port "$PORT" --data "$DATA_DIR" \
  "${local_args[@]}" ${1:+--json "$1"}
