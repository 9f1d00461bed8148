#!/usr/bin/env python3
"""Write a GGUF decoder's weights (Llama or Qwen2) as OUT_DIR/model.safetensors
with Hugging Face's names and [out, in] layout, float16 by default: what the
GPU encoder reads (engine::gpu::encoder::decoder). The same dequantisation
and Q/K un-permutation as export_decoder_onnx.py, so the GPU and the ONNX
graph compute with the same weights (up to float16 rounding).

Usage: export_decoder_safetensors.py MODEL.gguf OUT_DIR [--dtype float16|float32]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_decoder_onnx import Gguf, unpermute  # noqa: E402

try:
    from safetensors.numpy import save_file
except ImportError as e:
    sys.exit(f"{e}: pip install safetensors (scripts/requirements.txt)")

PARTS = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    args = ap.parse_args()
    gg = Gguf(args.gguf)
    heads = int(gg.arch_field("attention.head_count"))
    kv_heads = int(gg.arch_field("attention.head_count_kv", heads))
    dtype = np.float16 if args.dtype == "float16" else np.float32
    out = {"model.embed_tokens.weight": gg.weight("token_embd.weight"),
           "model.norm.weight": gg.weight("output_norm.weight")}
    for i in range(int(gg.arch_field("block_count"))):
        for part, name in PARTS.items():
            for kind in ("weight", "bias"):
                w = gg.weight(f"blk.{i}.{part}.{kind}")
                if w is None:
                    continue
                if gg.arch == "llama" and part in ("attn_q", "attn_k"):
                    w = unpermute(w, heads if part == "attn_q" else kv_heads)
                out[f"model.layers.{i}.{name}.{kind}"] = w
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model.safetensors")
    save_file({k: np.ascontiguousarray(v, dtype=dtype) for k, v in out.items()}, path + ".tmp")
    os.replace(path + ".tmp", path)
    os.chmod(path, 0o644)
    print(f"{path}: {len(out)} tensors, {args.dtype}")


if __name__ == "__main__":
    main()
