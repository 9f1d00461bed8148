#!/usr/bin/env bash
# What keeping a search copy in step costs the writers (inf_ir.search_device):
# single-row INSERT throughput into an indexed corpus with no copy, then with
# the model host holding a copy of the index; and the time to load a copy.
# On a server without a GPU the host's copies live in the float16 emulation
# (INF_IR_GPU_EMULATION=1), so the figures are the round trip and the
# host's bookkeeping; on a GPU each row also costs one small upload.
# Usage: benches/device_copy_writes.sh [rows in the corpus, default 100000] [results.json]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
ROWS=${1:-100000}
PORT=${INF_IR_COPY_BENCH_PORT:-5439}
CLUSTER=$INF_IR_HOME/copy-bench-cluster
start_cluster "$CLUSTER" "$PORT"
trap 'stop_cluster "$CLUSTER"' EXIT
(export INF_IR_GPU_EMULATION=1; set_preload "$CLUSTER" yes)
echo "cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\" cores=$(nproc) postgres=$("$PG_BIN/postgres" --version)"
"$VENV/bin/python" "$PROJECT_ROOT/benches/device_copy_writes.py" --port "$PORT" --rows "$ROWS" ${2:+--out "$2"}
