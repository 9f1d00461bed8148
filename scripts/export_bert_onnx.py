#!/usr/bin/env python3
"""Export a BERT-family sentence-transformers folder to ONNX without torch.

Reads `config.json` and `model.safetensors` from a sentence-transformers
folder and writes `model.onnx` next to them: a plain encoder graph of standard
ONNX ops (opset 17) whose single output is `last_hidden_state`
[batch, seq, hidden]. Pooling and normalisation are done by inf_ir itself, as
the folder's `1_Pooling/config.json` says, so one graph serves every pooling.

Supported: `model_type` bert (and the BERT-shaped encoders that share its
weight names: MiniLM, BGE, E5, GTE-base style checkpoints), with absolute
position embeddings and `hidden_act` gelu / gelu_new / relu.

Usage: export_bert_onnx.py MODEL_DIR [--output FILE] [--force]
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OPSET = 17


def fail(msg):
    print(f"export_bert_onnx: {msg}", file=sys.stderr)
    sys.exit(2)


def load_weights(model_dir):
    path = os.path.join(model_dir, "model.safetensors")
    if not os.path.exists(path):
        fail(f"{path} not found (only safetensors checkpoints are supported)")
    weights = load_file(path)
    # Checkpoints saved from BertForX carry a "bert." prefix; sentence-transformers
    # folders usually do not. Normalise to the bare BertModel names.
    out = {}
    for name, value in weights.items():
        for prefix in ("bert.", "model."):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        out[name] = value.astype(np.float32)
    return out


class GraphBuilder:
    def __init__(self):
        self.nodes = []
        self.initializers = []
        self.counter = 0

    def name(self, hint):
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, hint, array):
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, hint=None, **attrs):
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def linear(self, x, weight, bias, hint):
        # torch Linear stores [out, in]; MatMul wants [in, out].
        w = self.const(hint + "_w", weight.T.copy())
        b = self.const(hint + "_b", bias)
        return self.op("Add", [self.op("MatMul", [x, w]), b], hint)

    def layer_norm(self, x, gamma, beta, eps, hint):
        g = self.const(hint + "_g", gamma)
        b = self.const(hint + "_b", beta)
        return self.op("LayerNormalization", [x, g, b], hint, axis=-1, epsilon=eps)

    def activation(self, x, act):
        if act == "gelu":
            # Exact GELU: 0.5 * x * (1 + erf(x / sqrt(2))).
            scaled = self.op("Mul", [x, self.const("inv_sqrt2", np.float32(1 / math.sqrt(2)))])
            erf = self.op("Erf", [scaled])
            one_plus = self.op("Add", [erf, self.const("one", np.float32(1.0))])
            half_x = self.op("Mul", [x, self.const("half", np.float32(0.5))])
            return self.op("Mul", [half_x, one_plus], "gelu")
        if act in ("gelu_new", "gelu_pytorch_tanh"):
            cube = self.op("Mul", [self.op("Mul", [x, x]), x])
            inner = self.op("Add", [x, self.op("Mul", [cube, self.const("c", np.float32(0.044715))])])
            tanh = self.op("Tanh", [self.op("Mul", [inner, self.const("s", np.float32(math.sqrt(2 / math.pi)))])])
            one_plus = self.op("Add", [tanh, self.const("one", np.float32(1.0))])
            return self.op("Mul", [self.op("Mul", [x, self.const("half", np.float32(0.5))]), one_plus], "gelu")
        if act == "relu":
            return self.op("Relu", [x])
        fail(f"hidden_act {act!r} is not supported")


def build(config, w):
    if config.get("model_type") not in ("bert", None):
        fail(f"model_type {config.get('model_type')!r} is not supported (bert only)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        fail("only absolute position embeddings are supported")
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    layers = config["num_hidden_layers"]
    eps = float(config.get("layer_norm_eps", 1e-12))
    act = config.get("hidden_act", "gelu")
    head_dim = hidden // heads

    g = GraphBuilder()
    has_types = "embeddings.token_type_embeddings.weight" in w

    # Embeddings: word + position + token type, then LayerNorm.
    word = g.op("Gather", [g.const("word_emb", w["embeddings.word_embeddings.weight"]), "input_ids"], axis=0)
    seq_len = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const("idx1", np.int64(1))], axis=0)
    positions = g.op("Range", [g.const("zero", np.int64(0)), seq_len, g.const("step", np.int64(1))])
    pos = g.op("Gather", [g.const("pos_emb", w["embeddings.position_embeddings.weight"]), positions], axis=0)
    x = g.op("Add", [word, pos])
    if has_types:
        types = g.op("Gather", [g.const("type_emb", w["embeddings.token_type_embeddings.weight"]), "token_type_ids"], axis=0)
        x = g.op("Add", [x, types])
    x = g.layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps, "emb_ln")

    # Additive attention bias [batch, 1, 1, seq]: 0 for tokens, -1e4 for padding.
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask = g.op("Unsqueeze", [mask, g.const("axes12", np.array([1, 2], dtype=np.int64))])
    inverted = g.op("Sub", [g.const("one", np.float32(1.0)), mask])
    bias = g.op("Mul", [inverted, g.const("neg", np.float32(-10000.0))], "attn_bias")

    split_heads = g.const("split_shape", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_heads = g.const("merge_shape", np.array([0, 0, hidden], dtype=np.int64))
    scale = g.const("scale", np.float32(1.0 / math.sqrt(head_dim)))

    for i in range(layers):
        p = f"encoder.layer.{i}."
        q = g.linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"], f"l{i}_q")
        k = g.linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"], f"l{i}_k")
        v = g.linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"], f"l{i}_v")
        q = g.op("Transpose", [g.op("Reshape", [q, split_heads])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, split_heads])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, split_heads])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), bias])
        probs = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_heads])
        attn = g.linear(ctx, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"], f"l{i}_ao")
        x = g.layer_norm(g.op("Add", [attn, x]), w[p + "attention.output.LayerNorm.weight"],
                         w[p + "attention.output.LayerNorm.bias"], eps, f"l{i}_ln1")
        inter = g.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"], f"l{i}_in")
        inter = g.activation(inter, act)
        out = g.linear(inter, w[p + "output.dense.weight"], w[p + "output.dense.bias"], f"l{i}_out")
        x = g.layer_norm(g.op("Add", [out, x]), w[p + "output.LayerNorm.weight"],
                         w[p + "output.LayerNorm.bias"], eps, f"l{i}_ln2")

    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
    ]
    if has_types:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "seq"]))
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden])]
    graph = helper.make_graph(g.nodes, "bert_encoder", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="inf_ir export_bert_onnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--output", help="default: MODEL_DIR/model.onnx")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args()
    output = args.output or os.path.join(args.model_dir, "model.onnx")
    if os.path.exists(output) and not args.force:
        print(f"{output} exists; keeping it (use --force to rebuild)")
        return
    with open(os.path.join(args.model_dir, "config.json")) as f:
        config = json.load(f)
    model = build(config, load_weights(args.model_dir))
    tmp = output + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, output)  # never leave a half-written model behind
    print(f"wrote {output} ({os.path.getsize(output) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
