#!/usr/bin/env bash
# Decoder embedders on the CPU: passages/s at 128 tokens and query latency
# for MiniLM, SmolLM2-135M fp32/int8 and Qwen2.5-1.5B fp32/int8 through SQL
# (the shared worker), raw ONNX Runtime on the same graphs, llama.cpp's
# embedding mode on the same GGUFs; the worker's memory with 8 sessions.
# See benches/decoder_embed.py. Makes the Qwen folders first if missing
# (scripts/export_qwen_embedder.sh, about 8 minutes).
# Usage: benches/decoder_embed.sh [results.json]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
PORT=${INF_IR_BENCH_PORT:-5435}
CLUSTER=$INF_IR_HOME/bench-cluster
models="minilm=$MODEL_DIR@256,smollm2=$SMOLLM_DIR:$SMOLLM_GGUF@128,smollm2_int8=$SMOLLM_INT8_DIR@128"
memory_model=smollm2
if [ -f "$QWEN_MODEL_FILE" ]; then
  "$PROJECT_ROOT/scripts/export_qwen_embedder.sh"
  models="$models,qwen2_5_1_5b=$QWEN_EMBED_DIR:$QWEN_MODEL_FILE@16,qwen2_5_1_5b_int8=$QWEN_EMBED_INT8_DIR@16"
  memory_model=qwen2_5_1_5b
fi
start_cluster "$CLUSTER" "$PORT"
trap 'stop_cluster "$CLUSTER"' EXIT
set_preload "$CLUSTER" yes
stop_cluster "$CLUSTER"; start_cluster "$CLUSTER" "$PORT"
echo "cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\" cores=$(nproc)"
"$VENV/bin/python" "$PROJECT_ROOT/benches/decoder_embed.py" --port "$PORT" --models "$models" \
  --llama-python "$LLM_VENV/bin/python" --memory-model "$memory_model" ${1:+--out "$1"}
