#!/usr/bin/python3
"""Plots of bench/quality's output (Debian's python3-matplotlib: scripts/deps.sh plots).

    /usr/bin/python3 bench/quality/plot.py [DIR]     # DIR: bench/results

quality_steps.png: along the uncached trajectory (conditional branch), the relative
input change |x_t - x_t-1| / |x_t-1|, the relative output change |v_t - v_t-1| / |v_t-1|
and the transformation rate k = |v_t - v_t-1| / |x_t - x_t-1| (means of absolute values),
median over the samples with the 10-90 % band.
quality_tradeoff.png: wall-clock speedup against PSNR (mean, and worst sample) of every method.
"""
import csv
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def plot_steps(rows, path):
    by_step = defaultdict(lambda: defaultdict(list))
    for r in rows:
        s = int(r["step"])
        for key in ("relative_input_change", "relative_output_change", "transformation_rate"):
            by_step[s][key].append(float(r[key]))
    steps = sorted(by_step)
    warmup = (steps[-1] + 1) // 5  # bench/quality's warm-up: 10 of 50 steps
    panels = [("relative_input_change", "input change  |Δx| / |x|"),
              ("relative_output_change", "output change  |Δv| / |v|"),
              ("transformation_rate", "transformation rate  k = |Δv| / |Δx|")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, title) in zip(axes, panels):
        values = [np.array(by_step[s][key]) for s in steps]
        median = [np.median(v) for v in values]
        low = [np.percentile(v, 10) for v in values]
        high = [np.percentile(v, 90) for v in values]
        ax.fill_between(steps, low, high, alpha=0.3, label="10–90 % of samples")
        ax.plot(steps, median, lw=1.8, label="median")
        ax.axvline(warmup, color="gray", ls=":", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step (of %d); dotted: end of the %d warm-up steps" % (steps[-1] + 1, warmup))
        if key != "transformation_rate":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Trained video DiT, uncached %d-step trajectory (conditional branch)" % (steps[-1] + 1), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tradeoff(rows, path):
    seconds = defaultdict(float)
    psnr = defaultdict(list)
    for r in rows:
        key = (r["method"], r["matched_to"])
        seconds[key] += float(r["seconds"])
        psnr[key].append(float(r["psnr"]))
    uncached = [k for k in seconds if k[1] == ""][0]
    families = {"EasyCache": [], "fewer steps": [], "static cache": [], "ComfyUI variant": [],
                "budget policy": [], "budget policy, calibrated": [], "linear predictor": [],
                "last-output predictor": []}
    prefixes = [("fewer", "fewer steps"), ("static", "static cache"),
                ("budget policy calibrated", "budget policy, calibrated"), ("budget policy", "budget policy"),
                ("linear predictor", "linear predictor"), ("last-output predictor", "last-output predictor")]
    for key in seconds:
        method, matched = key
        if matched == "":
            continue
        speedup = seconds[uncached] / seconds[key]
        values = np.array(psnr[key])
        finite = values[np.isfinite(values)]
        point = (speedup, finite.mean() if finite.size else np.nan, values.min(), matched)
        comfy = "ComfyUI" in matched
        if method == matched:
            families["ComfyUI variant" if comfy else "EasyCache"].append(point)
            continue
        if comfy:
            continue  # the ComfyUI variant's own baselines would crowd the plot; they are in the table
        for prefix, family in prefixes:
            if method.startswith(prefix):
                families[family].append(point)
                break
        else:
            raise SystemExit("plot.py: no family for method %r" % method)
    fig, ax = plt.subplots(figsize=(8, 6.2))
    styles = {"EasyCache": ("C0", "o"), "fewer steps": ("C1", "s"), "static cache": ("C2", "^"),
              "ComfyUI variant": ("C3", "D"), "budget policy": ("C4", "v"), "budget policy, calibrated": ("C5", "P"),
              "linear predictor": ("C6", "*"), "last-output predictor": ("C7", "x")}
    for name, points in families.items():
        points.sort()
        if not points:
            continue
        color, marker = styles[name]
        x = [p[0] for p in points]
        ax.plot(x, [p[1] for p in points], marker=marker, color=color, label=name + " (mean)")
        ax.plot(x, [p[2] for p in points], marker=marker, color=color, ls=":", alpha=0.5, mfc="none",
                label=name + " (worst sample)")
    for speedup, mean, _, matched in families["EasyCache"]:
        ax.annotate(matched.split(" (")[0].replace("EasyCache ", ""), (speedup, mean), textcoords="offset points",
                    xytext=(5, 5), fontsize=8, color="C0")
    ax.set_xlabel("wall-clock speedup over the uncached 50-step sampler")
    ax.set_ylabel("PSNR against the uncached clip (dB)")
    ax.set_title("Speed against fidelity (the others at EasyCache's calls; predictors at its steps)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "bench/results"
    plot_steps(read(os.path.join(directory, "quality_steps.csv")), os.path.join(directory, "quality_steps.png"))
    plot_tradeoff(read(os.path.join(directory, "quality.csv")), os.path.join(directory, "quality_tradeoff.png"))
    print("wrote %s/quality_steps.png, quality_tradeoff.png" % directory)


if __name__ == "__main__":
    main()
