#!/usr/bin/env python3
"""Table-following corpora at a glance, one bar per bench run: the
background embedder's rate and the application's single-row INSERT rate
(with background embedding off, and during the burst while it runs), each
as a ratio to its baseline (inf_embed_many on the same texts; a table
without a corpus), with the issue's targets, from benches/source_corpus.sh's
JSON files.
Usage: plot_source_corpus.py out.png run1.json [run2.json ...]   (needs matplotlib)
Pass runs from one kind of machine: the ratios compare, the rates do not.
"""
import json
import os
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("matplotlib is missing: $INF_IR_HOME/venv/bin/pip install matplotlib")

PANELS = [("rate_ratio", "background rate / inf_embed_many (target >= 0.9)", 0.9),
          ("insert_ratio", "single-row INSERTs, corpus / plain table\n(background off; target >= 0.9)", 0.9),
          ("burst_insert_ratio", "the burst's INSERTs while the embedder runs\n/ the same burst into a plain table (target >= 0.9)", 0.9)]


def label(path):
    # 2026-12-07-source-corpus-run8.json -> run8
    return os.path.basename(path).rsplit("-", 1)[-1].removesuffix(".json")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, paths = sys.argv[1], sys.argv[2:]
    runs = [(label(p), json.load(open(p))) for p in paths]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(14, 3.8))
    for ax, (key, title, target) in zip(axes, PANELS):
        names = [name for name, r in runs if key in r]
        values = [r[key] for _, r in runs if key in r]
        colors = ["#3a7ebf" if v >= target else "#d98c3a" for v in values]
        bars = ax.bar(names, values, color=colors)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        ax.axhline(target, color="#444444", linestyle="--", linewidth=1)
        ax.set_ylim(0, max(values + [1.0]) * 1.15)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"A corpus that follows a table: {runs[0][1]['rows']:,} rows per run", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
