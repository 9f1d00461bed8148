#!/usr/bin/env python3
"""Check an exported ONNX encoder against a float64 numpy forward pass.

The numpy pass below is written from the BERT definition and the safetensors
weights alone; it shares no code with the exporter, so agreement means the
graph computes what the checkpoint defines. Compares mean-pooled, L2-normalised
embeddings (what inf_ir uses) and the raw hidden states.

Usage: check_onnx_export.py MODEL_DIR [--min-cosine 0.99999]
Exit status 1 when a text falls below the threshold.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file
from tokenizers import Tokenizer

TEXTS = [
    "what is the capital of france",
    "",
    "Instruct: find peer-reviewed sources\nQuery: does vitamin D prevent fractures?",
    "Les chats dorment beaucoup pendant la journée. 猫は一日中寝ています。 🐱🐱",
    "0-dimensional biomaterials show inductive properties. " * 40,
]


def erf(x):
    return np.vectorize(math.erf)(x)


def numpy_forward(config, w, ids, mask, types):
    def get(name):
        for key in (name, "bert." + name):
            if key in w:
                return w[key].astype(np.float64)
        raise KeyError(name)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + config.get("layer_norm_eps", 1e-12)) * get(p + ".weight") + get(p + ".bias")

    def dense(x, p):
        return x @ get(p + ".weight").T + get(p + ".bias")

    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    dh = hidden // heads
    seq = ids.shape[1]
    x = get("embeddings.word_embeddings.weight")[ids] + get("embeddings.position_embeddings.weight")[np.arange(seq)][None]
    x = x + get("embeddings.token_type_embeddings.weight")[types]
    x = ln(x, "embeddings.LayerNorm")
    bias = (1.0 - mask[:, None, None, :]) * -1e9
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        def heads_of(t):
            return t.reshape(t.shape[0], seq, heads, dh).transpose(0, 2, 1, 3)
        q = heads_of(dense(x, p + ".attention.self.query"))
        k = heads_of(dense(x, p + ".attention.self.key"))
        v = heads_of(dense(x, p + ".attention.self.value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(x.shape[0], seq, hidden)
        x = ln(dense(ctx, p + ".attention.output.dense") + x, p + ".attention.output.LayerNorm")
        h = dense(x, p + ".intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = ln(dense(h, p + ".output.dense") + x, p + ".output.LayerNorm")
    return x


def mean_pool(hidden, mask):
    m = mask[:, :, None].astype(np.float64)
    v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--min-cosine", type=float, default=0.99999)
    args = parser.parse_args()
    with open(os.path.join(args.model_dir, "config.json")) as f:
        config = json.load(f)
    weights = load_file(os.path.join(args.model_dir, "model.safetensors"))
    tok = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    encs = tok.encode_batch(TEXTS)
    seq = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), seq), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    types = np.zeros_like(ids)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(os.path.join(args.model_dir, "model.onnx"), opts, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in {i.name for i in sess.get_inputs()}:
        feeds["token_type_ids"] = types
    onnx_hidden = sess.run(["last_hidden_state"], feeds)[0].astype(np.float64)
    ref_hidden = numpy_forward(config, weights, ids, mask.astype(np.float64), types)

    a, b = mean_pool(onnx_hidden, mask), mean_pool(ref_hidden, mask)
    cos = (a * b).sum(1)
    valid = mask.astype(bool)
    max_abs = np.abs(onnx_hidden - ref_hidden)[valid].max()
    print(f"ONNX vs float64 numpy forward: {len(TEXTS)} texts, min cosine {cos.min():.9f}, "
          f"max |hidden diff| {max_abs:.2e}")
    if cos.min() < args.min_cosine:
        print(f"FAILED: cosine below {args.min_cosine}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
