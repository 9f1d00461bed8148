#!/usr/bin/env bash
# Optional: Qwen2.5-1.5B (the re-ranker's GGUF, assembled by set-up) as an ONNX
# embedding folder, float32 (6.2 GB, weights in model.onnx_data) and its int8
# copy (3.6 GB), plus its weights as float16 safetensors for the GPU encoder
# (3.1 GB), each checked before it is kept: tokens and states against
# llama.cpp and a float64 forward pass, int8 against float32. About 8 minutes
# and 19 GB of memory at its peak on 2 cores. Already there: does nothing.
# Usage: scripts/export_qwen_embedder.sh
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
[ -f "$QWEN_MODEL_FILE" ] || die "$QWEN_MODEL_FILE is missing: run scripts/setup.sh without INF_IR_SKIP_QWEN"
step "Qwen2.5-1.5B exported to ONNX ($QWEN_EMBED_DIR), and its int8 copy"
export_checked_decoder "$QWEN_MODEL_FILE" "$QWEN_EMBED_DIR"
quantize_checked "$QWEN_EMBED_DIR" "$QWEN_EMBED_INT8_DIR"
# float16 safetensors (3.1 GB) for the GPU encoder (inf_ir.embed_device), after the int8 copy.
if [ ! -f "$QWEN_EMBED_DIR/model.safetensors" ]; then
  "$VENV/bin/python" "$PROJECT_ROOT/scripts/export_decoder_safetensors.py" "$QWEN_MODEL_FILE" "$QWEN_EMBED_DIR"
fi
echo "ok: $QWEN_EMBED_DIR, $QWEN_EMBED_INT8_DIR"
