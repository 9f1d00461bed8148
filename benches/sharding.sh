#!/usr/bin/env bash
# A corpus sharded with PL/Proxy at 1, 2 and 4 local shards next to the same
# corpus on one server: latency, recall@10, throughput against clients, load
# rates (see benches/sharding.py). Needs scripts/setup.sh (with
# postgresql-15-plproxy) and ../shared/data/scifact (or SCIFACT_DIR).
# Usage: [ROWS=100000] [PROBES=n] benches/sharding.sh [results.json]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
SCIFACT_DIR=${SCIFACT_DIR:-$PROJECT_ROOT/../shared/data/scifact}
PORT=${INF_IR_BENCH_PORT:-5435}
CLUSTER=$INF_IR_HOME/bench-cluster
[ -f "$SCIFACT_DIR/corpus.jsonl" ] || { echo "skipped: $SCIFACT_DIR/corpus.jsonl not found"; exit 0; }
[ -f /usr/share/postgresql/15/extension/plproxy.control ] || { echo "skipped: PL/Proxy is not installed"; exit 0; }
start_cluster "$CLUSTER" "$PORT"
trap 'stop_cluster "$CLUSTER"' EXIT
set_preload "$CLUSTER" yes   # the shared worker embeds the queries, as on a served database
echo "cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\" cores=$(nproc)"
"$VENV/bin/python" "$PROJECT_ROOT/benches/sharding.py" ${PROBES:+--probes "$PROBES"} --port "$PORT" --home "$INF_IR_HOME" --scifact "$SCIFACT_DIR" \
  --rows "${ROWS:-100000}" ${1:+--json "$1"}
