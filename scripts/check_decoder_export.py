#!/usr/bin/env python3
"""Check an exported decoder folder (scripts/export_decoder_onnx.py) against
two independent references on the same GGUF file:

1. Tokens: HF tokenizers on the folder's tokenizer.json vs llama.cpp's own
   tokenizer (llama-cpp-python, vocab only), text for text.
2. A float64 numpy forward pass of the dequantised weights, written here
   from the architecture (not from the graph): last-token states of the
   ONNX graph (ONNX Runtime, float32) must agree to cosine >= 0.9999.
3. llama.cpp's own last-token embedding of the quantised file (its compute
   in Q4 / Q8): mean cosine >= 0.98 (min reported).
4. Padding: each text in a left-padded and in a right-padded batch equals
   itself alone (cosine >= 0.99999), position ids from the mask.

Usage: check_decoder_export.py MODEL.gguf FOLDER --llama-python PY [--texts FILE] [--n 24]
(PY: a Python with llama-cpp-python, e.g. $INF_IR_HOME/llm-venv/bin/python)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(__file__))
from export_decoder_onnx import Gguf, unpermute  # noqa: E402

LLAMA_SIDE = r"""
import json, sys
import numpy as np
import llama_cpp
gguf, texts_path, out = sys.argv[1:4]
texts = json.load(open(texts_path))
vocab = llama_cpp.Llama(gguf, vocab_only=True, verbose=False)
tokens = [vocab.tokenize(t.encode(), add_bos=False, special=False) for t in texts]
llm = llama_cpp.Llama(gguf, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST, n_ctx=2048,
                      n_threads=2, verbose=False)
vectors = [llm.embed(t, normalize=True) for t in texts]
np.save(out + ".npy", np.array(vectors, dtype=np.float64))
json.dump(tokens, open(out + ".json", "w"))
"""


def reference_forward(gg, ids):
    """Last-token hidden state of one unpadded sequence, float64 numpy."""
    a = gg.arch_field
    hidden, layers = int(a("embedding_length")), int(a("block_count"))
    heads = int(a("attention.head_count"))
    kv = int(a("attention.head_count_kv", heads))
    d = hidden // heads
    eps = float(a("attention.layer_norm_rms_epsilon"))
    theta = float(a("rope.freq_base", 10000.0))
    w = lambda n: (lambda x: None if x is None else x.astype(np.float64))(gg.weight(n))  # noqa: E731
    x = w("token_embd.weight")[ids]
    n = len(ids)
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = np.outer(np.arange(n), inv)
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))

    def rope(t):  # t: [heads, n, d]
        rot = np.concatenate([-t[..., d // 2:], t[..., : d // 2]], -1)
        return t * cos + rot * sin

    def norm(t, g):
        return t / np.sqrt((t * t).mean(-1, keepdims=True) + eps) * g

    causal = np.tril(np.ones((n, n), bool))
    for i in range(layers):
        p = f"blk.{i}."
        h = norm(x, w(p + "attn_norm.weight"))
        wq, wk = w(p + "attn_q.weight"), w(p + "attn_k.weight")
        if gg.arch == "llama":
            wq, wk = unpermute(wq, heads), unpermute(wk, kv)
        q, k, v = h @ wq.T, h @ wk.T, h @ w(p + "attn_v.weight").T
        for t, name in ((q, "attn_q"), (k, "attn_k"), (v, "attn_v")):
            b = w(p + name + ".bias")
            if b is not None:
                t += b
        q = rope(q.reshape(n, heads, d).transpose(1, 0, 2))
        k = rope(k.reshape(n, kv, d).transpose(1, 0, 2))
        v = v.reshape(n, kv, d).transpose(1, 0, 2)
        k, v = np.repeat(k, heads // kv, 0), np.repeat(v, heads // kv, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        s = np.where(causal, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = x + o @ w(p + "attn_output.weight").T
        h = norm(x, w(p + "ffn_norm.weight"))
        gate = h @ w(p + "ffn_gate.weight").T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ w(p + "ffn_up.weight").T)) @ w(p + "ffn_down.weight").T
    return norm(x, w("output_norm.weight"))[-1]


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def run_batch(session, seqs, left, pad_id):
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, np.int64)
    mask = np.zeros((len(seqs), width), np.int64)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl], mask[i, sl] = s, 1
    pos = np.clip(np.cumsum(mask, 1) - 1, 0, None)  # transformers' position ids (pads at 0)
    out = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "position_ids": pos})[0]
    last = [width - 1 if left else len(s) - 1 for s in seqs]
    return [unit(out[i, j]) for i, j in enumerate(last)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("folder")
    ap.add_argument("--llama-python", required=True)
    ap.add_argument("--texts", default=None, help="a JSONL file with a 'text' field (default: the repo's sample)")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args()
    if args.texts:
        texts = [json.loads(l)["text"] for l in open(args.texts)][: args.n]
    else:
        sample = os.path.join(os.path.dirname(__file__), "..", "examples", "sample_passages.tsv")
        texts = [line.split("\t", 1)[1].strip() for line in open(sample)][: args.n]
    texts += ["does vitamin d prevent fractures about recommended dosage, not fractures", "Hi", "2024-12-05: 3.14 π ok"]
    tok = Tokenizer.from_file(os.path.join(args.folder, "tokenizer.json"))
    ours = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    with tempfile.TemporaryDirectory() as tmp:
        json.dump(texts, open(os.path.join(tmp, "texts.json"), "w"))
        subprocess.run([args.llama_python, "-c", LLAMA_SIDE, args.gguf, os.path.join(tmp, "texts.json"),
                        os.path.join(tmp, "llama")], check=True)
        theirs = json.load(open(os.path.join(tmp, "llama.json")))
        llama_vectors = np.load(os.path.join(tmp, "llama.npy"))
    same = sum(a == b for a, b in zip(ours, theirs))
    print(f"tokens: {same}/{len(texts)} texts tokenised identically to llama.cpp")
    ok = same == len(texts)
    gg = Gguf(args.gguf)
    config = json.load(open(os.path.join(args.folder, "config.json")))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(os.path.join(args.folder, "model.onnx"), opts, providers=["CPUExecutionProvider"])
    seqs = [s[: args.max_tokens] for s in ours]
    alone = [run_batch(session, [s], False, config["pad_token_id"] or 0)[0] for s in seqs]
    ref = [unit(reference_forward(gg, np.array(s))) for s in seqs[:8]]
    cos_ref = [float(a @ b) for a, b in zip(alone, ref)]
    print(f"ONNX vs float64 numpy forward ({len(ref)} texts): min cosine {min(cos_ref):.7f}, mean {np.mean(cos_ref):.7f}")
    ok &= min(cos_ref) >= 0.9999
    full = [s for s, t in zip(seqs, ours) if len(t) <= args.max_tokens]
    llama_full = [unit(v) for v, t in zip(llama_vectors, ours) if len(t) <= args.max_tokens]
    cos_llama = [float(a @ b) for a, b in zip([alone[i] for i, t in enumerate(ours) if len(t) <= args.max_tokens],
                                                 llama_full)]
    print(f"ONNX vs llama.cpp's quantised last-token embedding ({len(full)} texts): min cosine {min(cos_llama):.4f}, "
          f"mean {np.mean(cos_llama):.4f}")
    ok &= np.mean(cos_llama) >= 0.98
    for left in (False, True):
        batch = run_batch(session, seqs, left, config["pad_token_id"] or 0)
        c = [float(a @ b) for a, b in zip(batch, alone)]
        print(f"{'left' if left else 'right'}-padded batch of {len(seqs)} vs each alone: min cosine {min(c):.7f}")
        ok &= min(c) >= 0.99999
    print("ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
