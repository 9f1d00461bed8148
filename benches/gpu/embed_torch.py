"""The torch side of the GPU embedding benchmark (benches/gpu/run_embed.sh),
on the device: sentence-transformers with the same weights in fp16, fed the
same token ids as inf_ir (tokenization is left out of both): its cosine
against the ONNX Runtime reference, passages/s per (tokens, batch), the
card's fp16 matmul peak, and the FLOPs a passage costs, so that both
figures can be put as a fraction of the tensor cores.
"""
import argparse
import json
import os
import struct
import time

import numpy as np
import torch


def read_tokens(path):
    data = open(path, "rb").read()
    (count,), at, texts = struct.unpack_from("<I", data, 0), 4, []
    for _ in range(count):
        (n,) = struct.unpack_from("<I", data, at)
        at += 4
        pairs = np.frombuffer(data, dtype="<u4", count=2 * n, offset=at).reshape(n, 2)
        at += 8 * n
        texts.append((pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)))
    return texts


def load(model_dir):
    try:
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer(model_dir, device="cuda").half().eval()
        run = lambda ids, types, mask: model({"input_ids": ids, "token_type_ids": types, "attention_mask": mask})[
            "sentence_embedding"]
        return "sentence-transformers", run
    except Exception as e:  # no sentence-transformers: the same forward through transformers
        from transformers import AutoModel
        print(f"sentence-transformers unavailable ({e}); transformers' BertModel with mean pooling")
        bert = AutoModel.from_pretrained(model_dir, torch_dtype=torch.float16).cuda().eval()

        def run(ids, types, mask):
            states = bert(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(states.dtype)
            return torch.nn.functional.normalize((states * m).sum(1) / m.sum(1), dim=-1)
        return "transformers", run


def batch_tensors(texts):
    longest = max(len(ids) for ids, _ in texts)
    ids = torch.zeros((len(texts), longest), dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, (a, b) in enumerate(texts):
        ids[i, :len(a)], types[i, :len(b)], mask[i, :len(a)] = torch.from_numpy(a), torch.from_numpy(b), 1
    return ids.cuda(), types.cuda(), mask.cuda()


def flops_per_passage(config, tokens):
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return layers * (2 * tokens * (4 * h * h + 2 * h * i) + 4 * tokens * tokens * h)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tokens", default="32,128,256")
    p.add_argument("--batches", default="32,64,128,256,512,1024")
    args = p.parse_args()
    config = json.load(open(os.path.join(args.model, "config.json")))
    kind, run = load(args.model)
    result = {"torch": torch.__version__, "card": torch.cuda.get_device_name(0), "runner": kind}

    texts = read_tokens(os.path.join(args.data, "tokens.bin"))
    reference = np.fromfile(os.path.join(args.data, "reference.f32"), dtype="<f4").reshape(len(texts), -1)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i][0]))
    ours = np.zeros_like(reference)
    with torch.inference_mode():
        for start in range(0, len(order), 64):
            group = order[start:start + 64]
            out = run(*batch_tensors([texts[i] for i in group])).float().cpu().numpy()
            out /= np.linalg.norm(out, axis=1, keepdims=True)
            ours[group] = out
    cos = (ours * reference).sum(1)
    result.update({"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())})

    a = torch.randn(8192, 8192, dtype=torch.float16, device="cuda")
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    result["matmul_fp16_tflops"] = 20 * 2 * 8192 ** 3 / (time.perf_counter() - t) / 1e12
    del a

    throughput = []
    with torch.inference_mode():
        for tokens in map(int, args.tokens.split(",")):
            for batch in map(int, args.batches.split(",")):
                ids = torch.randint(1000, 21000, (batch, tokens), device="cuda")
                types, mask = torch.zeros_like(ids), torch.ones_like(ids)
                try:
                    for _ in range(2):
                        run(ids, types, mask)
                    torch.cuda.synchronize()
                    rounds = max(3, min(40, 8192 // batch))
                    t = time.perf_counter()
                    for _ in range(rounds):
                        run(ids, types, mask)
                    torch.cuda.synchronize()
                    per_s = rounds * batch / (time.perf_counter() - t)
                    throughput.append({"tokens": tokens, "batch": batch, "passages_per_s": per_s})
                except torch.cuda.OutOfMemoryError as e:
                    throughput.append({"tokens": tokens, "batch": batch, "error": str(e)[:200]})
                    torch.cuda.empty_cache()
    result["throughput"] = throughput
    result["flops_per_passage"] = {t: flops_per_passage(config, int(t)) for t in args.tokens.split(",")}
    print(json.dumps(result))
    with open(os.path.join(args.out, "embed_torch.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
