#!/usr/bin/env python3
"""Export a decoder LLM in GGUF form (Llama or Qwen2 architecture) as an ONNX
embedding model folder, the way a user's exported decoder embedder looks:

    OUT/model.onnx (+ model.onnx_data when the weights pass 2 GB)
        inputs  input_ids, attention_mask, position_ids   int64 [batch, seq]
        output  last_hidden_state                         float32 [batch, seq, hidden]
    OUT/tokenizer.json        the GGUF's BPE vocabulary and merges, for HF tokenizers
    OUT/config.json           architecture, sizes, token ids (HF names)
    OUT/modules.json, OUT/1_Pooling/config.json (pooling_mode_lasttoken),
    OUT/config_sentence_transformers.json      a sentence-transformers folder

The weights are dequantised to float32 (the `gguf` package's dequantize), so
the graph computes in full precision what the quantised file approximates;
Llama's Q/K rows, which llama.cpp's converter permutes for its rotary
layout, are put back in Hugging Face's order, and rotary positions use
rotate-half as transformers does. Causal attention with the padding mask;
position ids come from the caller (cumsum of the mask - 1, as transformers
makes them), so left and right padding both work.

Usage: export_decoder_onnx.py MODEL.gguf OUT_DIR [--max-tokens 512] [--append-eos]
"""
import argparse
import json
import os
import sys

import numpy as np

try:
    import gguf
    import onnx
    from gguf import quants
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:
    sys.exit(f"{e}: pip install gguf onnx (scripts/requirements.txt)")

OPSET = 17
IR_VERSION = 8  # what ONNX Runtime 1.31 and older read (onnx 1.23 would write 14)
MASKED = -1e9  # finite: a row with every key masked (left padding) stays finite


class Gguf:
    """The parts of a GGUF file the export needs."""

    def __init__(self, path):
        self.reader = gguf.GGUFReader(path)
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.arch = self.field("general.architecture")
        if self.arch not in ("llama", "qwen2"):
            sys.exit(f"{path}: architecture {self.arch!r}; this exporter knows llama and qwen2")

    def field(self, key, default=None):
        f = self.reader.fields.get(key)
        return f.contents() if f is not None else default

    def arch_field(self, key, default=None):
        return self.field(f"{self.arch}.{key}", default)

    def weight(self, name):
        """A tensor as float32 in Hugging Face's [out, in] layout, or None."""
        t = self.tensors.get(name)
        if t is None:
            return None
        return np.ascontiguousarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)


def unpermute(w, n_head):
    """Undo llama.cpp's Q/K row permutation (convert_hf_to_gguf's `permute`)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def post_processor(g, tokens, append_eos):
    """BOS / EOS added around each text when the GGUF says so (or EOS when
    asked: Qwen3-Embedding and Promptriever pool the appended EOS token)."""
    add_bos = bool(g.field("tokenizer.ggml.add_bos_token", False))
    add_eos = append_eos or bool(g.field("tokenizer.ggml.add_eos_token", False))
    if not (add_bos or add_eos):
        return None
    single, specials = [{"Sequence": {"id": "A", "type_id": 0}}], {}
    for flag, key, front in ((add_bos, "bos", True), (add_eos, "eos", False)):
        if not flag:
            continue
        token_id = g.field(f"tokenizer.ggml.{key}_token_id")
        if token_id is None:
            sys.exit(f"the GGUF has no tokenizer.ggml.{key}_token_id to add")
        token = tokens[token_id]
        item = {"SpecialToken": {"id": token, "type_id": 0}}
        single = [item] + single if front else single + [item]
        specials[token] = {"id": token, "ids": [int(token_id)], "tokens": [token]}
    return {"type": "TemplateProcessing", "single": single, "pair": single + [{"Sequence": {"id": "B", "type_id": 0}}],
            "special_tokens": specials}


def tokenizer_json(g, append_eos=False):
    """An HF tokenizers file from the GGUF's BPE vocabulary (gpt2 model)."""
    if g.field("tokenizer.ggml.model") != "gpt2":
        sys.exit(f"tokenizer model {g.field('tokenizer.ggml.model')!r}: only BPE (gpt2) vocabularies are exported")
    tokens = g.field("tokenizer.ggml.tokens")
    types = g.field("tokenizer.ggml.token_type")
    merges = g.field("tokenizer.ggml.merges")
    pre = g.field("tokenizer.ggml.pre")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    if pre == "smollm":
        # SmolLM: digits one by one, then GPT-2's byte-level split.
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            dict(byte_level, use_regex=True)]}
        normalizer = None
    elif pre == "qwen2":
        pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                   r"|\s*[\r\n]+|\s+(?!\S)|\s+")
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            byte_level]}
        normalizer = {"type": "NFC"}
    else:
        sys.exit(f"pre-tokenizer {pre!r}: this exporter knows smollm and qwen2")
    # Control (3) and user-defined (4) tokens are matched whole, before BPE.
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == 3}
             for i, t in enumerate(tokens) if types[i] in (3, 4)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor(g, tokens, append_eos),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": [m.split(" ", 1) for m in merges]},
    }


class Graph:
    """A small helper over onnx.helper: named nodes, initializers, constants."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def const(self, array, hint="c"):
        return self.init(self.name(hint), array)

    def op(self, kind, inputs, hint=None, **attrs):
        out = self.name(hint or kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out


def rms_norm(g, x, weight, eps):
    sq = g.op("Mul", [x, x])
    mean = g.op("ReduceMean", [sq], axes=[-1], keepdims=1)
    inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [mean, g.const(np.float32(eps))])])])
    return g.op("Mul", [g.op("Mul", [x, inv]), weight])


def linear(g, x, w_name, b_name=None):
    y = g.op("MatMul", [x, w_name])
    return g.op("Add", [y, b_name]) if b_name else y


def rotate_half(g, x, half):
    first = g.op("Slice", [x, g.const(np.array([0], np.int64)), g.const(np.array([half], np.int64)),
                           g.const(np.array([-1], np.int64))])
    second = g.op("Slice", [x, g.const(np.array([half], np.int64)), g.const(np.array([2 * half], np.int64)),
                            g.const(np.array([-1], np.int64))])
    return g.op("Concat", [g.op("Neg", [second]), first], axis=-1)


def repeat_kv(g, x, repeat, heads, head_dim):
    """[batch, kv_heads, seq, dim] -> [batch, heads, seq, dim], each head `repeat` times in a row."""
    wide = g.op("Expand", [g.op("Unsqueeze", [x, g.const(np.array([2], np.int64))]),
                           g.const(np.array([1, 1, repeat, 1, 1], np.int64))])
    return g.op("Reshape", [wide, g.const(np.array([0, heads, -1, head_dim], np.int64))])


def build(gg, max_tokens):
    a = gg.arch_field
    hidden = int(a("embedding_length"))
    layers = int(a("block_count"))
    heads = int(a("attention.head_count"))
    kv_heads = int(a("attention.head_count_kv", heads))
    head_dim = hidden // heads
    eps = float(a("attention.layer_norm_rms_epsilon"))
    theta = float(a("rope.freq_base", 10000.0))
    g = Graph()
    embed = gg.weight("token_embd.weight")
    vocab = embed.shape[0]
    g.init("embed_tokens", embed)
    x = g.op("Gather", ["embed_tokens", "input_ids"], axis=0, hint="embeddings")
    # Rotary tables from position_ids: [batch, 1, seq, head_dim].
    inv_freq = (1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)).astype(np.float32)
    pos = g.op("Unsqueeze", [g.op("Cast", ["position_ids"], to=TensorProto.FLOAT), g.const(np.array([-1], np.int64))])
    freqs = g.op("Mul", [pos, g.const(inv_freq, "inv_freq")])
    emb = g.op("Concat", [freqs, freqs], axis=-1)
    axis1 = g.const(np.array([1], np.int64))
    cos = g.op("Unsqueeze", [g.op("Cos", [emb]), axis1])
    sin = g.op("Unsqueeze", [g.op("Sin", [emb]), axis1])
    # Additive mask [batch, 1, seq, seq]: causal and padding (keys only).
    seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const(np.array(1, np.int64))], axis=0)
    square = g.op("Concat", [g.op("Unsqueeze", [seq, g.const(np.array([0], np.int64))])] * 2, axis=0)
    ones = g.op("ConstantOfShape", [square], value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
    causal = g.op("Trilu", [ones], upper=0)
    keys = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const(np.array([1, 2], np.int64))])],
                to=TensorProto.FLOAT)
    allowed = g.op("Mul", [causal, keys])
    mask = g.op("Mul", [g.op("Sub", [g.const(np.float32(1.0)), allowed]), g.const(np.float32(-MASKED))])
    mask = g.op("Neg", [mask])
    heads_shape = g.const(np.array([0, 0, heads, head_dim], np.int64))
    kv_shape = g.const(np.array([0, 0, kv_heads, head_dim], np.int64))
    merged_shape = g.const(np.array([0, 0, hidden], np.int64))
    scale = g.const(np.float32(1.0 / np.sqrt(head_dim)))
    repeat = heads // kv_heads
    for i in range(layers):
        p = f"blk.{i}."
        names = {}
        for part in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            w = gg.weight(p + part + ".weight")
            if gg.arch == "llama" and part == "attn_q":
                w = unpermute(w, heads)
            if gg.arch == "llama" and part == "attn_k":
                w = unpermute(w, kv_heads)
            names[part] = g.init(f"layers.{i}.{part}.weight", np.ascontiguousarray(w.T))
            b = gg.weight(p + part + ".bias")
            names[part + ".bias"] = g.init(f"layers.{i}.{part}.bias", b) if b is not None else None
        attn_norm = g.init(f"layers.{i}.attn_norm.weight", gg.weight(p + "attn_norm.weight"))
        ffn_norm = g.init(f"layers.{i}.ffn_norm.weight", gg.weight(p + "ffn_norm.weight"))
        h = rms_norm(g, x, attn_norm, eps)
        q = g.op("Transpose", [g.op("Reshape", [linear(g, h, names["attn_q"], names["attn_q.bias"]), heads_shape])],
                 perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [linear(g, h, names["attn_k"], names["attn_k.bias"]), kv_shape])],
                 perm=[0, 2, 1, 3])
        v = g.op("Transpose", [g.op("Reshape", [linear(g, h, names["attn_v"], names["attn_v.bias"]), kv_shape])],
                 perm=[0, 2, 1, 3])
        q = g.op("Add", [g.op("Mul", [q, cos]), g.op("Mul", [rotate_half(g, q, head_dim // 2), sin])])
        k = g.op("Add", [g.op("Mul", [k, cos]), g.op("Mul", [rotate_half(g, k, head_dim // 2), sin])])
        if repeat > 1:
            # Grouped-query attention: each key/value head serves `repeat` query heads.
            k = repeat_kv(g, k, repeat, heads, head_dim)
            v = repeat_kv(g, v, repeat, heads, head_dim)
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]), scale]),
                              mask])
        attn = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        attn = g.op("Reshape", [g.op("Transpose", [attn], perm=[0, 2, 1, 3]), merged_shape])
        x = g.op("Add", [x, linear(g, attn, names["attn_output"], names["attn_output.bias"])])
        h = rms_norm(g, x, ffn_norm, eps)
        gate = linear(g, h, names["ffn_gate"])
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
        x = g.op("Add", [x, linear(g, g.op("Mul", [silu, linear(g, h, names["ffn_up"])]), names["ffn_down"])])
    out_norm = g.init("norm.weight", gg.weight("output_norm.weight"))
    final = rms_norm(g, x, out_norm, eps)
    g.nodes.append(helper.make_node("Identity", [final], ["last_hidden_state"]))
    for i, node in enumerate(g.nodes):
        node.name = f"{node.op_type}_{i}_{node.output[0]}"  # what quantize_int8.py's exclusions go by
    ints = lambda n: helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])  # noqa: E731
    graph = helper.make_graph(
        g.nodes, f"{gg.arch}-embedder",
        [ints("input_ids"), ints("attention_mask"), ints("position_ids")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="inf_ir",
                              ir_version=IR_VERSION)
    config = {
        "architectures": ["Qwen2Model" if gg.arch == "qwen2" else "LlamaModel"],
        "model_type": gg.arch, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "rms_norm_eps": eps,
        "rope_theta": theta, "vocab_size": vocab, "max_position_embeddings": int(a("context_length", 2048)),
        "intermediate_size": int(a("feed_forward_length")),
        "bos_token_id": gg.field("tokenizer.ggml.bos_token_id"), "eos_token_id": gg.field("tokenizer.ggml.eos_token_id"),
        "pad_token_id": gg.field("tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32", "inf_ir_source": {"gguf_name": gg.field("general.name"),
                                                     "file_type": gg.field("general.file_type")},
    }
    return model, config, max_tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--append-eos", action="store_true",
                    help="append the EOS token to every text (embedders trained that way: Qwen3-Embedding, Promptriever)")
    args = ap.parse_args()
    gg = Gguf(args.gguf)
    model, config, max_tokens = build(gg, args.max_tokens)
    os.makedirs(os.path.join(args.out, "1_Pooling"), exist_ok=True)
    size = sum(t.ByteSize() for t in model.graph.initializer)
    path = os.path.join(args.out, "model.onnx")
    if size > 1_800_000_000:
        # Past protobuf's 2 GB: weights in one external file beside the graph.
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx_data", size_threshold=1024)
        # onnx writes the data file 0600: the PostgreSQL server's OS user must read it.
        os.chmod(os.path.join(args.out, "model.onnx_data"), 0o644)
    else:
        onnx.save_model(model, path)
    with open(os.path.join(args.out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(gg, args.append_eos), f, ensure_ascii=False)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(args.out, "modules.json"), "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
                  f, indent=1)
    with open(os.path.join(args.out, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": config["hidden_size"], "pooling_mode_cls_token": False,
                   "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
                   "pooling_mode_lasttoken": True, "include_prompt": True}, f, indent=1)
    with open(os.path.join(args.out, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": max_tokens, "do_lower_case": False}, f, indent=1)
    with open(os.path.join(args.out, "config_sentence_transformers.json"), "w") as f:
        json.dump({"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}, f, indent=1)
    print(f"wrote {args.out}: {gg.arch}, {config['num_hidden_layers']} layers, {config['hidden_size']}-d, "
          f"{size / 1e6:.0f} MB of float32 weights")


if __name__ == "__main__":
    main()
