"""The independent side of the GPU search benchmark (benches/gpu/run_search.sh).

data:    seeded vectors (clustered unit rows with exact duplicates, queries
         near rows or random) written as float32 files; the reference top k
         from a float64 product; on a GPU, the torch baseline (fp16
         torch.matmul + torch.topk on the same data and card) and the
         device-to-device copy bandwidth.
compare: inf_ir's answers (gpu_search's top_k.bin) against the reference.

Uses torch on a CUDA device when there is one, numpy otherwise (the dry run
here: no baseline then).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

try:
    import torch
    CUDA = torch.cuda.is_available()
except ImportError:
    torch, CUDA = None, False

# f32 dot products of 384-d unit vectors move by a few 1e-7 with the order of
# summation; two ids whose float64 scores differ by less than this may swap.
ROUNDING = 1e-5


def generate(rows, queries, dim, seed):
    """Unit rows around 1,000 centres (near neighbours make float16 reorder
    close scores), every 100th row a copy of an earlier one (exact ties,
    decided by the smaller id); half the queries near a row, half random.
    On the GPU when there is one (10M rows in seconds), else numpy."""
    if CUDA:
        g = torch.Generator(device="cuda").manual_seed(seed)
        randn = lambda *shape: torch.randn(*shape, generator=g, device="cuda")
        randint = lambda high, n: torch.randint(0, high, (n,), generator=g, device="cuda")
        unit = lambda t: t / t.norm(dim=1, keepdim=True)
        to_numpy = lambda t: t.cpu().numpy()
    else:
        rng = np.random.default_rng(seed)
        randn = lambda *shape: rng.standard_normal(shape).astype(np.float32)
        randint = lambda high, n: rng.integers(0, high, n)
        unit = lambda t: t / np.linalg.norm(t, axis=1, keepdims=True)
        to_numpy = lambda t: t
    centres = randn(1000, dim)
    x = np.empty((rows, dim), dtype=np.float32)
    step = 1 << 20
    for start in range(0, rows, step):
        n = min(step, rows - start)
        x[start:start + n] = to_numpy(unit(centres[randint(1000, n)] + 0.35 * randn(n, dim)))
    dup = np.arange(100, rows, 100)
    x[dup] = x[to_numpy(randint(100, len(dup))) + dup - 100]
    half = queries // 2
    near = randn(half, dim) * 0.05 + (torch.from_numpy(x[to_numpy(randint(rows, half))]).cuda() if CUDA
                                      else x[randint(rows, half)])
    q = np.concatenate([to_numpy(unit(near)), to_numpy(unit(randn(queries - half, dim)))]).astype(np.float32)
    return x, q


def order(scores, ids, k):
    """Best k by (score desc, id asc) per query from candidate lists."""
    out_ids = np.empty((scores.shape[0], k), dtype=np.int64)
    out_scores = np.empty((scores.shape[0], k), dtype=np.float64)
    for i in range(scores.shape[0]):
        pick = np.lexsort((ids[i], -scores[i]))[:k]
        out_ids[i], out_scores[i] = ids[i][pick], scores[i][pick]
    return out_ids, out_scores


def reference(x, q, k):
    """Exact top k in float64, with margin so that ties are ordered by id."""
    wide = k + 32
    if CUDA:
        qd = torch.from_numpy(q).cuda().double()
        best_s, best_i = None, None
        step = 250_000
        for start in range(0, x.shape[0], step):
            xd = torch.from_numpy(x[start:start + step]).cuda().double()
            s = qd @ xd.T
            ts, ti = torch.topk(s, min(wide, s.shape[1]), dim=1)
            ti += start
            if best_s is None:
                best_s, best_i = ts, ti
            else:
                best_s, pos = torch.topk(torch.cat([best_s, ts], 1), wide, dim=1)
                best_i = torch.gather(torch.cat([best_i, ti], 1), 1, pos)
            del xd, s
        scores, ids = best_s.cpu().numpy(), best_i.cpu().numpy()
    else:
        s = q.astype(np.float64) @ x.astype(np.float64).T
        ids = np.argpartition(-s, min(wide, s.shape[1] - 1), axis=1)[:, :wide]
        scores = np.take_along_axis(s, ids, 1)
    return order(scores, ids, k)


def p50(times):
    return float(np.median(times))


def baseline(x, q, k, repeats):
    """torch.matmul + torch.topk in fp16 on the same card and data, and the
    device-to-device copy bandwidth (bytes read + written per second)."""
    x16 = torch.from_numpy(x).cuda().half()
    q16 = torch.from_numpy(q).cuda().half()

    def timed(fn, n):
        out = []
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        for _ in range(n):
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            out.append((time.perf_counter() - t) * 1e3)
        return p50(out)

    single = [0]

    def one():
        i = single[0] % q16.shape[0]
        single[0] += 1
        torch.topk(torch.matmul(x16, q16[i]), k)

    def batch32():
        torch.topk(torch.matmul(x16, q16[:32].T), k, dim=0)

    copy_bytes = 4 << 30
    a = torch.empty(copy_bytes // 2, dtype=torch.float16, device="cuda")
    b = torch.empty_like(a)
    copy_ms = timed(lambda: b.copy_(a), 20)
    result = {
        "torch": torch.__version__,
        "card": torch.cuda.get_device_name(0),
        "torch_single_p50_ms": timed(one, repeats),
        "torch_batch32_p50_ms": timed(batch32, max(repeats // 4, 10)),
        "copy_bandwidth_gbs": 2 * copy_bytes / (copy_ms / 1e3) / 1e9,
    }
    del x16, q16, a, b
    torch.cuda.empty_cache()
    return result


def data(args):
    t = time.time()
    x, q = generate(args.rows, args.queries, args.dimension, args.seed)
    x.tofile(os.path.join(args.dir, "rows.f32"))
    q.tofile(os.path.join(args.dir, "queries.f32"))
    ids, scores = reference(x, q, args.k)
    np.save(os.path.join(args.dir, "reference_ids.npy"), ids)
    np.save(os.path.join(args.dir, "reference_scores.npy"), scores)
    info = {"rows": args.rows, "queries": args.queries, "dimension": args.dimension,
            "k": args.k, "seed": args.seed, "data_s": time.time() - t, "cuda": CUDA}
    if CUDA:
        info.update(baseline(x, q, args.k, args.repeats))
    with open(os.path.join(args.dir, "torch.json"), "w") as f:
        json.dump(info, f)
    print(json.dumps(info))


def compare(args):
    ref_ids = np.load(os.path.join(args.dir, "reference_ids.npy"))
    ref_scores = np.load(os.path.join(args.dir, "reference_scores.npy"))
    x = np.fromfile(os.path.join(args.dir, "rows.f32"), dtype=np.float32).reshape(-1, args.dimension)
    q = np.fromfile(os.path.join(args.dir, "queries.f32"), dtype=np.float32).reshape(-1, args.dimension)
    raw = np.fromfile(args.answers, dtype=np.dtype([("id", "<i8"), ("score", "<f4")]))
    nq, k = ref_ids.shape
    got = raw["id"].reshape(nq, k)
    got_scores = raw["score"].reshape(nq, k)
    equal = near_ties = wrong = 0
    worst_score_error = 0.0
    examples = []
    for i in range(nq):
        if (got[i] == ref_ids[i]).all():
            equal += 1
        elif (got[i] >= 0).all():
            # Same list up to swaps of ids whose float64 scores are within f32 rounding.
            mine = q[i].astype(np.float64) @ x[got[i]].astype(np.float64).T
            if np.abs(mine - ref_scores[i]).max() <= ROUNDING:
                near_ties += 1
            else:
                wrong += 1
                examples.append({"query": i, "got": got[i].tolist(), "want": ref_ids[i].tolist()})
        else:
            wrong += 1
            examples.append({"query": i, "got": got[i].tolist(), "want": ref_ids[i].tolist()})
        valid = got[i] >= 0
        if valid.any():
            exact = q[i].astype(np.float64) @ x[got[i][valid]].astype(np.float64).T
            worst_score_error = max(worst_score_error, float(np.abs(exact - got_scores[i][valid]).max()))
    result = {"queries": nq, "k": k, "equal": equal, "near_ties": near_ties, "wrong": wrong,
              "recall_at_k": float(np.mean([len(set(got[i]) & set(ref_ids[i])) / k for i in range(nq)])),
              "worst_score_error": worst_score_error, "examples": examples[:5]}
    print(json.dumps(result))
    with open(args.result, "w") as f:
        json.dump(result, f)
    return 0 if wrong == 0 else 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["data", "compare"])
    p.add_argument("--dir", required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--dimension", type=int, default=384)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--answers")
    p.add_argument("--result")
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    if args.what == "data":
        data(args)
        return 0
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
