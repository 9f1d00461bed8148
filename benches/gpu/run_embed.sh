#!/usr/bin/env bash
# The GPU encoder against ONNX Runtime and against sentence-transformers on
# torch, without PostgreSQL. Two halves:
#
# Here (cargo, ONNX Runtime, the model, ../shared/data):
#   benches/gpu/run_embed.sh --prepare
#   builds target/gpu/gpu_embed, writes MiniLM's weights in float16
#   (target/gpu/minilm-fp16, 45 MB: the float32 file is over what travels)
#   and the reference: 1,000 SciFact passages and 1,000 MS MARCO queries with
#   instructions, tokenized and embedded by ONNX Runtime (target/gpu/embed-data).
# On the device machine (torch, a CUDA driver; no registry, no cargo):
#   OUT=... benches/gpu/run_embed.sh
#   gpu_embed's cosine and passages/s, then embed_torch.py's; then a decoder
#   made there (decoder_torch.py: SmolLM2's shape, random weights) checked
#   against transformers and timed against it; JSON in $OUT.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
GPU_DIR=${GPU_DIR:-$ROOT/target/gpu}
if [ "${1:-}" = --prepare ]; then
  set -e
  source "$ROOT/scripts/lib/common.sh"
  SHARED=${SHARED_DATA:-$ROOT/../shared/data}
  cd "$ROOT"
  built=$(cargo bench --bench gpu_embed --no-run --message-format=json 2>/dev/null | "$VENV/bin/python" -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu_embed" and m.get("executable"):
        print(m["executable"])')
  [ -n "$built" ] || die "gpu_embed did not build"
  mkdir -p "$GPU_DIR" && cp "$built" "$GPU_DIR/gpu_embed"
  rm -rf "$GPU_DIR/minilm-fp16" && mkdir -p "$GPU_DIR/minilm-fp16"
  (cd "$MODEL_DIR" && cp -r config.json tokenizer.json tokenizer_config.json special_tokens_map.json modules.json \
     sentence_bert_config.json config_sentence_transformers.json 1_Pooling "$GPU_DIR/minilm-fp16/")
  "$VENV/bin/python" - "$MODEL_DIR/model.safetensors" "$GPU_DIR/minilm-fp16/model.safetensors" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
weights = load_file(sys.argv[1])
save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in weights.items()}, sys.argv[2])
PY
  "$GPU_DIR/gpu_embed" reference --model "$MODEL_DIR" --ort "$ORT_LIBRARY" --scifact "$SHARED/scifact" \
    --msmarco "$SHARED/msmarco-sample" --count "${COUNT:-1000}" --out "$GPU_DIR/embed-data"
  du -sh "$GPU_DIR"
  exit 0
fi
[ -x "$GPU_DIR/gpu_embed" ] || { echo "error: run benches/gpu/run_embed.sh --prepare first" >&2; exit 1; }
OUT=${OUT:-$ROOT/benches/results/gpu-embed}
PYTHON=${PYTHON:-python3}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
mkdir -p "$OUT"
failed=0
echo "== inf_ir's GPU encoder"
timeout "$STEP_TIMEOUT" "$GPU_DIR/gpu_embed" run --model "$GPU_DIR/minilm-fp16" --data "$GPU_DIR/embed-data" \
  --out "$OUT" ${TOKENS:+--tokens $TOKENS} ${BATCHES:+--batches $BATCHES} 2>"$OUT/gpu_embed.log" || failed=1
cat "$OUT/gpu_embed.log"
echo "== sentence-transformers (torch, fp16)"
timeout "$STEP_TIMEOUT" "$PYTHON" "$ROOT/benches/gpu/embed_torch.py" --model "$GPU_DIR/minilm-fp16" \
  --data "$GPU_DIR/embed-data" --out "$OUT" ${TOKENS:+--tokens $TOKENS} ${BATCHES:+--batches $BATCHES} \
  >"$OUT/embed_torch.log" 2>&1 || failed=1
tail -3 "$OUT/embed_torch.log"
echo "== a decoder (SmolLM2's shape, random weights made here): inf_ir vs transformers"
DEC=$(mktemp -d "${TMPDIR:-/tmp}/decoder.XXXXXX")
if timeout "$STEP_TIMEOUT" "$PYTHON" "$ROOT/benches/gpu/decoder_torch.py" make --out "$DEC" >"$OUT/decoder_make.log" 2>&1; then
  mkdir -p "$OUT/decoder"
  timeout "$STEP_TIMEOUT" "$GPU_DIR/gpu_embed" run --model "$DEC" --data "$DEC" --out "$OUT/decoder" --pooling last \
    --tokens 128 --batches 32,128,512 2>"$OUT/decoder/gpu_embed.log" || failed=1
  cat "$OUT/decoder/gpu_embed.log"
  timeout "$STEP_TIMEOUT" "$PYTHON" "$ROOT/benches/gpu/decoder_torch.py" baseline --model "$DEC" \
    --out "$OUT/decoder/torch.json" >"$OUT/decoder/torch.log" 2>&1 || failed=1
  tail -1 "$OUT/decoder/torch.log"
else
  tail -5 "$OUT/decoder_make.log"; failed=1
fi
rm -rf "$DEC"
exit $failed
