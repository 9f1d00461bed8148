#!/usr/bin/env python3
"""Decoder embedders on the CPU at a glance: passages/s at 128 tokens and
single-query latency per model, through SQL, raw ONNX Runtime on the same
graph and llama.cpp on the same GGUF, from benches/decoder_embed.sh's JSON.
Usage: plot_decoders.py results.json out.png   (needs matplotlib)
"""
import json
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("matplotlib is missing: $INF_IR_HOME/venv/bin/pip install matplotlib")

ENGINES = [("sql", "inf_ir (SQL, shared worker)", "#3a7ebf"), ("raw_ort", "raw ONNX Runtime", "#999999"),
           ("llama_cpp", "llama.cpp (quantised GGUF)", "#d98c3a")]


def main():
    results, out = json.load(open(sys.argv[1])), sys.argv[2]
    models = results["models"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, metric, title in ((axes[0], "passages_per_s", f"passages/s at {results['tokens']} tokens (higher is better)"),
                              (axes[1], "query_p50_ms", "one query, p50 ms (lower is better)")):
        width = 0.27
        for k, (key, label, color) in enumerate(ENGINES):
            xs, ys = [], []
            for i, m in enumerate(models):
                if key in m:
                    xs.append(i + (k - 1) * width)
                    ys.append(m[key][metric])
            bars = ax.bar(xs, ys, width, label=label, color=color)
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([m["model"].replace("_", " ") for m in models], fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{results['cpu']}, {results['threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
