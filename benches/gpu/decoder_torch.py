"""A decoder for the GPU embedding benchmark, made on the device (no model
hub there, and SmolLM2's 270 MB cannot travel): transformers' LlamaModel
with SmolLM2-135M's shape and seeded random weights, saved as a model
folder (config.json, model.safetensors in float16), with 64 texts of random
token ids (5 to 60 tokens) and their embeddings from transformers' own
forward pass in float32 on the same float16-rounded weights (last token,
L2-normalised): the reference gpu_embed checks inf_ir's decoder against.
Then `baseline`: transformers in fp16, passages/s at the given shapes.

Usage: decoder_torch.py make --out DIR
       decoder_torch.py baseline --model DIR --out FILE [--tokens 128] [--batches 32,128,512]
"""
import argparse
import json
import os
import struct
import time

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaModel

SMOLLM2 = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
               intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5,
               rope_theta=100000.0)


def last_token(states, mask):
    last = mask.sum(1) - 1
    v = states[torch.arange(states.shape[0]), last].float()
    return torch.nn.functional.normalize(v, dim=-1)


def make(args):
    torch.manual_seed(7)
    config = LlamaConfig(**SMOLLM2, attn_implementation="eager")
    model = LlamaModel(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(1.0).add_(0.1 * torch.randn_like(p))  # norms near 1, not all equal
            else:
                p.normal_(0.0, 0.05)
        # The reference runs on exactly the float16 weights that are saved.
        for p in model.parameters():
            p.copy_(p.half().float())
    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()},
              os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "architectures": ["LlamaModel"], **SMOLLM2}, f)
    model = model.cuda().eval()
    g = torch.Generator().manual_seed(11)
    lengths = torch.randint(5, 61, (64,), generator=g)
    texts = [torch.randint(3, 49152, (int(n),), generator=g) for n in lengths]
    ids = torch.zeros((64, int(lengths.max())), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, t in enumerate(texts):
        ids[i, :len(t)], mask[i, :len(t)] = t, 1
    with torch.no_grad():
        states = model(input_ids=ids.cuda(), attention_mask=mask.cuda()).last_hidden_state
        reference = last_token(states, mask.cuda()).cpu().numpy()
    data = struct.pack("<I", len(texts))
    for t in texts:
        data += struct.pack("<I", len(t)) + np.stack([t.numpy(), np.zeros(len(t), np.int64)], 1).astype("<u4").tobytes()
    open(os.path.join(args.out, "tokens.bin"), "wb").write(data)
    reference.astype("<f4").tofile(os.path.join(args.out, "reference.f32"))
    print(f"{args.out}: SmolLM2-shaped Llama, random weights, {len(texts)} reference texts")


def baseline(args):
    model = LlamaModel.from_pretrained(args.model, torch_dtype=torch.float16).cuda().eval()
    out = {"torch": torch.__version__, "card": torch.cuda.get_device_name(0), "runner": "transformers LlamaModel fp16",
           "throughput": []}
    with torch.inference_mode():
        for tokens in map(int, args.tokens.split(",")):
            for batch in map(int, args.batches.split(",")):
                ids = torch.randint(3, 49152, (batch, tokens), device="cuda")
                mask = torch.ones_like(ids)
                run = lambda: last_token(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)  # noqa
                for _ in range(2):
                    run()
                torch.cuda.synchronize()
                rounds = max(3, min(20, 2048 // batch))
                t = time.perf_counter()
                for _ in range(rounds):
                    run()
                torch.cuda.synchronize()
                out["throughput"].append({"tokens": tokens, "batch": batch,
                                          "passages_per_s": rounds * batch / (time.perf_counter() - t)})
    print(json.dumps(out))
    json.dump(out, open(args.out, "w"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["make", "baseline"])
    p.add_argument("--out", required=True)
    p.add_argument("--model")
    p.add_argument("--tokens", default="128")
    p.add_argument("--batches", default="32,128,512")
    args = p.parse_args()
    make(args) if args.what == "make" else baseline(args)


if __name__ == "__main__":
    main()
