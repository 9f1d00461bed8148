#!/usr/bin/env bash
# inf_search over the inf_ivf index at 5k (SciFact), 100k and 1M passages:
# build, recall@10 and latency per inf_ir.probes, writes, filters, memory,
# restart, concurrent inserts (see benches/search_latency.py).
# Usage: [PROBES=1,2,4,...] [HUGE_PAGES=1] benches/search_latency.sh [5k,100k,1m,10m] [results.json]
# HUGE_PAGES=1 (root): shared_buffers on 2 MB huge pages, reserved for the run
# and handed back after; without it huge_pages = off.
# (10m: 15 GB of vectors streamed in, about 17 GB of table; build and sweep only)
# Needs scripts/setup.sh to have run, and ../shared/data/scifact (or SCIFACT_DIR).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
SIZES=${1:-5k,100k,1m}
SCIFACT_DIR=${SCIFACT_DIR:-$PROJECT_ROOT/../shared/data/scifact}
PORT=${INF_IR_BENCH_PORT:-5435}
CLUSTER=$INF_IR_HOME/bench-cluster
[ -f "$SCIFACT_DIR/corpus.jsonl" ] || { echo "skipped: $SCIFACT_DIR/corpus.jsonl not found"; exit 0; }
start_cluster "$CLUSTER" "$PORT"
HUGE_BEFORE=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)
# After a huge-pages run the setting goes back to off before the pages do:
# the next start of this cluster must not ask for pages that are gone.
trap 'if [ "${HUGE_PAGES:-0}" = 1 ]; then
        psql -h 127.0.0.1 -p "$PORT" -U postgres -X -q -c "ALTER SYSTEM SET huge_pages = off" >/dev/null 2>&1 || true
        stop_cluster "$CLUSTER"; echo "$HUGE_BEFORE" > /proc/sys/vm/nr_hugepages
      else stop_cluster "$CLUSTER"; fi' EXIT
if [ "${HUGE_PAGES:-0}" = 1 ]; then
  # 4 GB of shared_buffers plus PostgreSQL's other shared memory.
  echo 2200 > /proc/sys/vm/nr_hugepages || die "HUGE_PAGES=1 needs root (vm.nr_hugepages)"
  HUGE=on
else
  HUGE=off
fi
# Bulk-load settings for the benchmark's own throwaway cluster only.
psql -h 127.0.0.1 -p "$PORT" -U postgres -X -q -c "ALTER SYSTEM SET synchronous_commit = off" \
  -c "ALTER SYSTEM SET max_wal_size = '8GB'" -c "ALTER SYSTEM SET shared_buffers = '4GB'" \
  -c "ALTER SYSTEM SET huge_pages = $HUGE" >/dev/null
set_preload "$CLUSTER" yes   # the shared worker embeds the queries, as on a served database
stop_cluster "$CLUSTER"; start_cluster "$CLUSTER" "$PORT"
echo "cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\" cores=$(nproc) shared_buffers=4GB huge_pages=$HUGE"
RESTART="env -u RUST_BACKTRACE runuser -u postgres -- $PG_BIN/pg_ctl -D $CLUSTER -l $CLUSTER/server.log -m fast -w restart >/dev/null"
"$VENV/bin/python" "$PROJECT_ROOT/benches/search_latency.py" --port "$PORT" --scifact "$SCIFACT_DIR" --sizes "$SIZES" \
  --restart "$RESTART" ${2:+--json "$2"} ${PROBES:+--probes "$PROBES"} --huge-pages "$HUGE"
