#!/usr/bin/python3
"""Plots of bench/quality's output (Debian's python3-matplotlib: scripts/deps.sh plots).

    /usr/bin/python3 bench/quality/plot.py [DIR]     # DIR: bench/results

quality_steps.png: along the uncached trajectory (conditional branch), the relative
input change |x_t - x_t-1| / |x_t-1|, the relative output change |v_t - v_t-1| / |v_t-1|
and the transformation rate k = |v_t - v_t-1| / |x_t - x_t-1| (means of absolute values),
median over the samples with the 10-90 % band.
quality_tradeoff.png: wall-clock speedup against PSNR (mean, and worst sample) of every method
(the tau sweep, quality_bench).
quality_per_call.png: PSNR (mean, and worst sample) against the call ratio of every method of
quality_per_call, Euler and UniPC side by side.
quality_per_call_errors.png: along one sample at 3x fewer calls, the accumulated error E that
each decision saw, the error each skipped step really made, and the trace's realized_error
on the computed steps.
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


def plot_per_call(rows, path):
    solvers = sorted({r["solver"] for r in rows}, key=lambda s: s != "Euler")
    fig, axes = plt.subplots(1, len(solvers), figsize=(6.4 * len(solvers), 5.4), squeeze=False)
    for ax, solver in zip(axes[0], solvers):
        by_method = defaultdict(lambda: defaultdict(list))
        calls = defaultdict(lambda: defaultdict(list))
        for r in rows:
            if r["solver"] != solver:
                continue
            name = r["method"].replace("↳ ", "quality mode ")
            if name.startswith("fewer steps"):
                name = "fewer steps"
            by_method[name][int(r["speedup"])].append(float(r["psnr"]))
            calls[name][int(r["speedup"])].append(float(r["calls"]))
        for i, (name, points) in enumerate(by_method.items()):
            x = [100.0 / np.mean(calls[name][s]) for s in sorted(points)]
            mean = [np.mean(points[s]) for s in sorted(points)]
            worst = [np.min(points[s]) for s in sorted(points)]
            color = "C%d" % i
            ax.plot(x, mean, marker="o", color=color, label=name + " (mean)")
            ax.plot(x, worst, marker="o", color=color, ls=":", alpha=0.5, mfc="none")
        ax.set_title("%s: dotted, the worst of the samples" % solver, fontsize=10)
        ax.set_xlabel("fewer denoiser calls than the uncached 50-step sampler (×)")
        ax.set_ylabel("PSNR against the uncached clip (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_errors(rows, path):
    keys = sorted({(r["solver"], r["method"]) for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        data = [r for r in rows if (r["solver"], r["method"]) == key]
        steps = [int(r["step"]) for r in data]

        def values(column):
            return [float(r[column]) if r[column] not in ("", "nan") else np.nan for r in data]

        skipped = [r["action"] == "skip" for r in data]
        predicted = values("accumulated_error")
        realized = values("skip_error")
        trace = values("trace_realized_error")
        ax.plot(steps, predicted, marker=".", lw=1, label="E the decision saw (predicted)")
        ax.plot([s for s, k in zip(steps, skipped) if k], [e for e, k in zip(realized, skipped) if k], "x",
                color="C3", label="error the skip made (model run again)")
        ax.plot(steps, trace, "+", color="C2", label="trace realized_error (computed steps)")
        ax.set_yscale("log")
        ax.set_title("%s, %s" % key, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize_per_call(rows, path):
    """A compact table: one row per method, mean PSNR (worst) at each solver and speedup."""
    points = []
    for r in rows:
        key = (r["solver"], int(r["speedup"]))
        if key not in points:
            points.append(key)
    methods = []
    for r in rows:
        name = "fewer steps" if r["method"].startswith("fewer steps") else r["method"]
        if name not in methods:
            methods.append(name)
    cells = defaultdict(list)
    calls = defaultdict(list)
    for r in rows:
        name = "fewer steps" if r["method"].startswith("fewer steps") else r["method"]
        cells[(name, r["solver"], int(r["speedup"]))].append(float(r["psnr"]))
        calls[(name, r["solver"], int(r["speedup"]))].append(float(r["calls"]))
    with open(path, "w") as out:
        out.write("| method | " + " | ".join("%s %d×" % p for p in points) + " |\n")
        out.write("|---|" + "---:|" * len(points) + "\n")
        for name in methods:
            row = []
            for solver, speedup in points:
                values = cells[(name, solver, speedup)]
                best = max(np.mean(cells[(m, solver, speedup)]) for m in methods)
                text = "%.1f (%.1f)" % (np.mean(values), np.min(values))
                row.append("**%s**" % text if np.mean(values) == best else text)
            out.write("| %s | %s |\n" % (name, " | ".join(row)))
        out.write("\nMean PSNR in dB over the samples (worst sample in parentheses) against the uncached "
                  "50-step clip of the same solver; bold: the highest mean at that point. Mean calls per "
                  "method and point: quality_per_call.md.\n")


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "bench/results"
    wrote = []
    if os.path.exists(os.path.join(directory, "quality_steps.csv")):
        plot_steps(read(os.path.join(directory, "quality_steps.csv")), os.path.join(directory, "quality_steps.png"))
        plot_tradeoff(read(os.path.join(directory, "quality.csv")), os.path.join(directory, "quality_tradeoff.png"))
        wrote += ["quality_steps.png", "quality_tradeoff.png"]
    if os.path.exists(os.path.join(directory, "quality_per_call.csv")):
        plot_per_call(read(os.path.join(directory, "quality_per_call.csv")),
                      os.path.join(directory, "quality_per_call.png"))
        plot_errors(read(os.path.join(directory, "quality_per_call_errors.csv")),
                    os.path.join(directory, "quality_per_call_errors.png"))
        summarize_per_call(read(os.path.join(directory, "quality_per_call.csv")),
                           os.path.join(directory, "quality_per_call_summary.md"))
        wrote += ["quality_per_call.png", "quality_per_call_errors.png", "quality_per_call_summary.md"]
    print("wrote %s/%s" % (directory, ", ".join(wrote)))


if __name__ == "__main__":
    main()
