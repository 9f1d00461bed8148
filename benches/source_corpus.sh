#!/usr/bin/env bash
# A corpus that follows a table, on a throwaway server with inf_ir preloaded:
# a burst of single-row inserts embedded by the background embedder (lag and
# rate, against inf_embed_many on the same texts before and after it; the
# burst's insert rate against the same burst into a plain table before it and
# after the embedder is done), the inserts' own cost with and without a
# corpus, metadata updates (no re-embedding) and text updates (one
# re-embedding each). Texts: TREC DL19 and MS MARCO sample
# passages from ../shared/data, cycled to the number of rows.
# Usage: benches/source_corpus.sh [rows, default 10000] [results.json]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
ROWS=${1:-10000}
PORT=${INF_IR_SOURCE_BENCH_PORT:-5441}
CLUSTER=$INF_IR_HOME/source-bench-cluster
DATA=${INF_IR_SHARED_DATA:-$PROJECT_ROOT/../shared/data}
[ -f "$DATA/dl19/passages.jsonl" ] || die "needs $DATA/dl19/passages.jsonl (TREC DL19 passages)"
stop_cluster "$CLUSTER" 2>/dev/null || true
rm -rf "$CLUSTER"
start_cluster "$CLUSTER" "$PORT"
trap 'stop_cluster "$CLUSTER"' EXIT
set_preload "$CLUSTER" yes
echo "cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\" cores=$(nproc) postgres=$("$PG_BIN/postgres" --version)"
"$VENV/bin/python" "$PROJECT_ROOT/benches/source_corpus.py" --port "$PORT" --rows "$ROWS" --data "$DATA" ${2:+--out "$2"}
