#!/usr/bin/env python3
"""Search throughput against concurrent clients, one line for the single
server and one per shard layout, from the JSON that benches/sharding.sh
writes. Usage: plot_sharding.py results.json out.png   (needs matplotlib)
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
    results = json.load(open(sys.argv[1]))
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    lines = [("one server, no proxy", results["single"])]
    lines += [(f"{k.split('_')[1]} shard(s) via PL/Proxy", v) for k, v in results.items() if k.startswith("shards_")]
    for label, r in lines:
        clients = sorted(int(c) for c in r["qps"])
        ax.plot(clients, [r["qps"][str(c)] for c in clients], marker="o",
                label=f"{label}: p50 {r['p50_ms']:.2f} ms, recall@10 {r['recall_at_10']:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("searches per second (inf_search_vector, k = 10)")
    ax.set_title(f"{results['rows']:,} x 384, all servers on one {results['cores']}-core machine", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=120)


if __name__ == "__main__":
    main()
