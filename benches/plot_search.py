#!/usr/bin/env python3
"""Recall@10 against p50 latency for each inf_ir.probes setting, one line per
corpus size, from the JSON that benches/search_latency.sh writes; several
runs go on one plot with a label each.
Usage: plot_search.py results.json out.png                  (needs matplotlib)
       plot_search.py out.png LABEL=results.json[:SIZE] ...  (SIZE, default 1m, of several runs)
Results of the runs in BENCHMARKS.md are kept in benches/results/.
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
    if sys.argv[1].endswith(".json"):
        out, results = sys.argv[2], json.load(open(sys.argv[1]))
    else:
        out, results = sys.argv[1], {}
        for arg in sys.argv[2:]:
            label, path = arg.split("=", 1)
            path, _, size = path.partition(":")
            results[label] = json.load(open(path))[size or "1m"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for size, r in results.items():
        sweep = r["sweep"]
        xs, ys = [s["p50"] for s in sweep], [s["recall"] for s in sweep]
        ax.plot(xs, ys, marker="o", label=f"{size} ({r['build']['lists']} lists)")
        for s in sweep:
            ax.annotate(str(s["probes"]), (s["p50"], s["recall"]), textcoords="offset points", xytext=(4, -10),
                        fontsize=7)
    ax.set_xlabel("p50 latency per query, ms (inf_search_vector, client-side)")
    ax.set_ylabel("recall@10 vs exact float32")
    ax.set_title("inf_ivf: recall against latency; labels = inf_ir.probes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
