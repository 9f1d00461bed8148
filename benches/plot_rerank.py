#!/usr/bin/env python3
"""LLM re-ranking at a glance: what it buys (instruction-flip p-MRR and DL19
nDCG@10, bi-encoder alone vs with the LLM) and what it costs (p50 latency of
inf_search plain, from the cache, through a 200 ms endpoint, listwise, and
through the local model), from the JSON that benches/rerank_quality.py and
benches/rerank_latency.sh write.
Usage: plot_rerank.py quality.json latency.json out.png   (needs matplotlib)
"""
import json
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("matplotlib is missing: $INF_IR_HOME/venv/bin/pip install matplotlib")


def main():
    quality, latency, out = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    flip = quality["flip"]
    bars = left.bar(["bi-encoder", "+ LLM top 10"], [flip["p_mrr_bi_encoder"], flip["p_mrr_with_llm"]],
                    color=["#999999", "#3a7ebf"])
    left.bar_label(bars, fmt="%+.1f")
    left.axhline(0, color="black", linewidth=0.8)
    left.set_title(f"instruction flips, p-MRR\n({flip['queries']} DL19 queries, both directions)", fontsize=9)
    dl19 = quality["dl19"]
    bars = mid.bar(["bi-encoder", "+ LLM top 10"], [dl19["ndcg10_bi_encoder"], dl19["ndcg10_with_llm"]],
                   color=["#999999", "#3a7ebf"])
    mid.bar_label(bars, fmt="%.3f")
    mid.set_ylim(0, 1)
    mid.set_title(f"DL19 nDCG@10, no instruction\n({dl19['queries']} queries, BM25 top 100)", fontsize=9)
    labels = ["plain search", "cache hit", "200 ms endpoint", "listwise, 200 ms"]
    values = [latency["plain"], latency["cached"], latency["fault"], latency["listwise"]]
    if "local" in latency:
        labels.append("local Qwen2.5-1.5B\n(2 CPU cores)")
        values.append(latency["local"])
    bars = right.barh(labels, values, color="#3a7ebf")
    right.bar_label(bars, labels=[f"{v:,.0f} ms" if v >= 10 else f"{v:.1f} ms" for v in values], fontsize=8)
    right.set_xscale("log")
    right.set_xlim(right=max(values) * 6)  # room for the longest label
    right.invert_yaxis()
    right.set_title(f"p50 of inf_search with {latency['depth']} candidates re-ranked", fontsize=9)
    right.set_xlabel("ms (log scale)")
    fig.suptitle(f"LLM re-ranking through {quality['endpoint']} ({quality['mode']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
