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
  # Decoder folders around SmolLM2's export (set-up makes it).
  # decoder_optimum: laid out as optimum-cli exports one: no sentence-transformers files.
  mkdir -p "$FIXTURES/decoder_optimum"
  cp "$SMOLLM_DIR/tokenizer.json" "$SMOLLM_DIR/config.json" "$FIXTURES/decoder_optimum/"
  ln -s "$SMOLLM_DIR/model.onnx" "$FIXTURES/decoder_optimum/model.onnx"
  # decoder_left: its tokenizer_config.json pads on the left (as Qwen3-Embedding's does).
  cp -r "$FIXTURES/decoder_optimum" "$FIXTURES/decoder_left"
  printf '{"padding_side": "left"}' > "$FIXTURES/decoder_left/tokenizer_config.json"
  # decoder_eos: says add_eos_token, but its tokenizer.json does not append EOS.
  cp -r "$FIXTURES/decoder_optimum" "$FIXTURES/decoder_eos"
  printf '{"add_eos_token": true, "eos_token": "<|im_end|>"}' > "$FIXTURES/decoder_eos/tokenizer_config.json"
  # encoder_left: MiniLM (no position_ids input) told to pad on the left.
  cp -r "$FIXTURES/prompts" "$FIXTURES/encoder_left"
  printf '{"padding_side": "left"}' > "$FIXTURES/encoder_left/tokenizer_config.json"
  # too_large: MiniLM beside a sparse 1 TB external weights file (takes no disk).
  cp -r "$FIXTURES/prompts" "$FIXTURES/too_large"
  truncate -s 1T "$FIXTURES/too_large/model.onnx_data"
  # logits_only: a graph whose one output is per-token logits, not states.
  cp -r "$FIXTURES/noonnx" "$FIXTURES/logits_only"
  "$VENV/bin/python" - "$FIXTURES/logits_only/model.onnx" <<'PY'
import sys
import numpy as np
from onnx import TensorProto, helper, numpy_helper, save_model
table = numpy_helper.from_array(np.zeros((30522, 7), np.float32), "lm_head")
ints = lambda n: helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
graph = helper.make_graph([helper.make_node("Gather", ["lm_head", "input_ids"], ["logits"])], "logits_only",
                          [ints("input_ids"), ints("attention_mask")],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", 7])], [table])
save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), sys.argv[1])
PY
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
