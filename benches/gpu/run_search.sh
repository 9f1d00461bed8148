#!/usr/bin/env bash
# Exact top-k on a CUDA device, without PostgreSQL: for each corpus size,
# search_torch.py makes the data, the float64 reference and the torch
# baseline (fp16 matmul + topk, copy bandwidth); gpu_search (engine::gpu)
# uploads, answers every query exactly and times one query and batches of 32;
# search_torch.py compare checks its answers. Results (JSON, logs) in $OUT.
#
# Here (with cargo):      benches/gpu/run_search.sh --build
#   builds target/gpu/gpu_search, the one file that travels to the device.
# On the device machine:  OUT=... benches/gpu/run_search.sh
#   (torch and a CUDA driver there; no registry, no PostgreSQL, no cargo)
# Dry run on the CPU:     SIZES=20000 EMULATE=1 benches/gpu/run_search.sh
#   (the device's arithmetic emulated, numpy for the reference; needs numpy)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${GPU_SEARCH_BIN:-$ROOT/target/gpu/gpu_search}
if [ "${1:-}" = --build ]; then
  cd "$ROOT" && cargo bench --bench gpu_search --no-run 2>&1 | tail -1
  built=$(cargo bench --bench gpu_search --no-run --message-format=json 2>/dev/null \
          | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu_search" and m.get("executable"):
        print(m["executable"])')
  [ -n "$built" ] || { echo "error: gpu_search did not build" >&2; exit 1; }
  mkdir -p "$(dirname "$BIN")" && cp "$built" "$BIN" && ls -la "$BIN"
  exit 0
fi
[ -x "$BIN" ] || { echo "error: $BIN not found: run benches/gpu/run_search.sh --build first" >&2; exit 1; }
OUT=${OUT:-$ROOT/benches/results/gpu-search}
SIZES=${SIZES:-"1000000 10000000"}
QUERIES=${QUERIES:-1000}
PYTHON=${PYTHON:-python3}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
EMULATE_FLAG=$([ "${EMULATE:-0}" = 1 ] && echo --emulate || true)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_search.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/card.csv" 2>/dev/null || echo "no nvidia-smi" >"$OUT/card.csv"
failed=0
for n in $SIZES; do
  dir=$WORK/$n
  echo "== $n rows: data, reference, torch baseline"
  timeout "$STEP_TIMEOUT" "$PYTHON" "$ROOT/benches/gpu/search_torch.py" data --dir "$dir" --rows "$n" --queries "$QUERIES" \
    >"$OUT/torch_$n.json" 2>"$OUT/torch_$n.log" || { echo "data step failed (see $OUT/torch_$n.log)"; failed=1; continue; }
  cat "$OUT/torch_$n.json"
  echo "== $n rows: inf_ir"
  timeout "$STEP_TIMEOUT" "$BIN" --rows "$dir/rows.f32" --queries "$dir/queries.f32" --dimension 384 --k 10 \
    --out "$dir/out" $EMULATE_FLAG >"$OUT/inf_ir_$n.json" 2>"$OUT/inf_ir_$n.log"
  rc=$?
  cat "$OUT/inf_ir_$n.log" "$OUT/inf_ir_$n.json"
  [ $rc = 0 ] || { echo "gpu_search failed (rc $rc)"; failed=1; continue; }
  echo "== $n rows: check against the float64 reference"
  "$PYTHON" "$ROOT/benches/gpu/search_torch.py" compare --dir "$dir" --dimension 384 \
    --answers "$dir/out/top_k.bin" --result "$OUT/check_$n.json" || failed=1
  rm -rf "$dir"
done
exit $failed
