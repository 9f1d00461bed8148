# Builds the broken model folders and libraries that the error-path tests use
# (sourced by scripts/test.sh). Paths are fixed because pg_regress files
# name them: /tmp/inf_ir_fixtures/...
FIXTURES=/tmp/inf_ir_fixtures

make_fixtures() {
  rm -rf "$FIXTURES" && mkdir -p "$FIXTURES"
  local f
  # corrupt: the real folder, but model.onnx cut to its first 4 KiB.
  mkdir -p "$FIXTURES/corrupt/1_Pooling"
  for f in tokenizer.json config.json modules.json sentence_bert_config.json 1_Pooling/config.json; do
    cp "$MODEL_DIR/$f" "$FIXTURES/corrupt/$f"
  done
  head -c 4096 "$MODEL_DIR/model.onnx" > "$FIXTURES/corrupt/model.onnx"
  # noonnx: configs only.
  cp -r "$FIXTURES/corrupt" "$FIXTURES/noonnx" && rm "$FIXTURES/noonnx/model.onnx"
  # prompts: the real model with E5-style prompts, to check template defaults.
  cp -r "$FIXTURES/noonnx" "$FIXTURES/prompts"
  ln -s "$MODEL_DIR/model.onnx" "$FIXTURES/prompts/model.onnx"
  printf '{"prompts": {"query": "query: ", "passage": "passage: "}}' > "$FIXTURES/prompts/config_sentence_transformers.json"
  # changed: registered, then its tokenizer is edited by the test (fingerprint).
  cp -r "$FIXTURES/prompts" "$FIXTURES/changed"
  # A library that is not ONNX Runtime, and ONNX Runtime 1.20 (too old for ort rc.15).
  cp "$(ldconfig -p | awk '/libz\.so\.1 /{print $NF; exit}')" "$FIXTURES/libnotort.so"
  local cache=$INF_IR_HOME/cache old=$INF_IR_HOME/cache/libonnxruntime.so.1.20.1
  if [ ! -f "$old" ]; then
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.11 --platform manylinux_2_28_x86_64 onnxruntime==1.20.1 -d "$cache"
    "$VENV/bin/python" -c "
import glob, zipfile, sys
w = sorted(glob.glob('$cache/onnxruntime-1.20.1-*.whl'))[-1]
with zipfile.ZipFile(w) as z:
    open('$old', 'wb').write(z.read('onnxruntime/capi/libonnxruntime.so.1.20.1'))"
  fi
  cp "$old" "$FIXTURES/libonnxruntime.so.1.20.1"
  chmod -R a+rX "$FIXTURES"
}
