#!/usr/bin/env bash
# Optional: Qwen2.5-1.5B (the re-ranker's GGUF, assembled by set-up) as an ONNX
# embedding folder, float32 (6.2 GB, weights in model.onnx_data) and its int8
# copy (3.6 GB), each checked before it is kept: tokens and states against
# llama.cpp and a float64 forward pass, int8 against float32. About 8 minutes
# and 19 GB of memory at its peak on 2 cores. Already there: does nothing.
# Usage: scripts/export_qwen_embedder.sh
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
[ -f "$QWEN_MODEL_FILE" ] || die "$QWEN_MODEL_FILE is missing: run scripts/setup.sh without INF_IR_SKIP_QWEN"
if [ ! -f "$QWEN_EMBED_DIR/model.onnx" ]; then
  step "Qwen2.5-1.5B exported to ONNX ($QWEN_EMBED_DIR)"
  rm -rf "$QWEN_EMBED_DIR.tmp"
  "$VENV/bin/python" "$PROJECT_ROOT/scripts/export_decoder_onnx.py" "$QWEN_MODEL_FILE" "$QWEN_EMBED_DIR.tmp" --max-tokens 512
  "$VENV/bin/python" "$PROJECT_ROOT/scripts/check_decoder_export.py" "$QWEN_MODEL_FILE" "$QWEN_EMBED_DIR.tmp" \
    --llama-python "$LLM_VENV/bin/python" 2>&1 | grep -v '^llama_\|^load\|^print_info'
  mv "$QWEN_EMBED_DIR.tmp" "$QWEN_EMBED_DIR"
fi
if [ ! -f "$QWEN_EMBED_INT8_DIR/model.onnx" ]; then
  step "Its int8 copy ($QWEN_EMBED_INT8_DIR)"
  rm -rf "$QWEN_EMBED_INT8_DIR.tmp"
  "$VENV/bin/python" "$PROJECT_ROOT/scripts/quantize_int8.py" "$QWEN_EMBED_DIR" "$QWEN_EMBED_INT8_DIR.tmp" 2>&1 | grep -v '^WARNING:root'
  mv "$QWEN_EMBED_INT8_DIR.tmp" "$QWEN_EMBED_INT8_DIR"
fi
echo "ok: $QWEN_EMBED_DIR, $QWEN_EMBED_INT8_DIR"
