"""Aggregate a sweep: per cell, mean ± std val accuracy over seeds, its 95% interval, and the
paired difference to the CE-only baseline at the same seeds with its 95% interval (Student's t
over seeds); the best cell is named only when it is distinguishable from the runner-up, else
they tie. Written as sweep.json, sweep.md and sweep.png. All figures are val figures: a sweep
chooses, so it uses the selection split."""
from __future__ import annotations

import json
import math
from pathlib import Path

from compress.core.rundir import RunDir, atomic_path
from compress.measure.stats import mean_interval


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _record(run: str, stage: str) -> dict:
    return RunDir(run).load_manifest()["stages"][stage]


def aggregate(records: list[dict], seeds: list[int], teacher) -> dict:
    cells: dict[str, dict] = {}
    for r in records:
        cell = cells.setdefault(r["cell"], {"settings": r["settings"], "seeds": [], "accuracy": [],
                                            "baseline": [], "seconds": []})
        student = _record(r["run"], "distill")
        cell["seeds"].append(r["seed"])
        cell["accuracy"].append(float(student["summary"]["val_accuracy"]))
        cell["baseline"].append(float(_record(r["baseline"], "baseline")["summary"]["val_accuracy"]))
        cell["seconds"].append(float(student.get("seconds", 0.0)))
    for cell in cells.values():
        diffs = [a - b for a, b in zip(cell["accuracy"], cell["baseline"])]
        cell["mean"], cell["std"] = mean_std(cell["accuracy"])
        cell["baseline_mean"], cell["baseline_std"] = mean_std(cell["baseline"])
        cell["diff_mean"], cell["diff_std"] = mean_std(diffs)
        cell["wins"] = sum(d > 0 for d in diffs)
        cell["ties"] = sum(d == 0 for d in diffs)
        n = len(diffs)
        se = cell["diff_std"] / math.sqrt(n) if n > 1 else 0.0
        cell["t"] = cell["diff_mean"] / se if se > 0 else None
        cell["verdict"] = verdict(cell["diff_mean"], cell["wins"], n, cell["t"])
        cell["interval"] = mean_interval(cell["accuracy"])[1:]
        cell["diff_interval"] = mean_interval(diffs)[1:]
    teacher_manifest = RunDir(teacher.out).load_manifest()
    val_images = teacher_manifest.get("dataset", {}).get("val_size")
    return {"seeds": seeds, "val_images": val_images,
            "teacher": {"run": teacher.out,
                        "val_accuracy": teacher_manifest["stages"]["teacher"]["summary"]["val_accuracy"]},
            "cells": cells, **best_cell(cells)}


def best_cell(cells: dict[str, dict]) -> dict:
    """{"best": name or None, "ranking": ..., "best_note": words}: the top cell is named only when
    its per-seed advantage over the runner-up has a 95% interval that excludes 0."""
    ranked = sorted(cells, key=lambda c: -cells[c]["mean"])
    if len(ranked) < 2:
        return {"best": ranked[0] if ranked else None, "best_note": "one cell"}
    top, runner = ranked[0], ranked[1]
    gaps = [a - b for a, b in zip(cells[top]["accuracy"], cells[runner]["accuracy"])]
    mean, low, high = mean_interval(gaps)
    if len(gaps) >= 2 and (low > 0 or high < 0):
        return {"best": top, "best_note": f"{top} beats the runner-up {runner} by {100 * mean:+.2f} points "
                                          f"(95% interval {100 * low:+.2f} to {100 * high:+.2f}, paired over seeds)"}
    return {"best": None, "tied": [top, runner],
            "best_note": f"{top} and {runner} tie: the paired gap {100 * mean:+.2f} points has a 95% interval of "
                         f"{100 * low:+.2f} to {100 * high:+.2f} over {len(gaps)} seeds, which includes 0"}


def verdict(diff: float, wins: int, n: int, t: float | None) -> str:
    """Plain words for the paired difference over seeds: "better/worse in every seed" only when the
    95% t-interval of the difference excludes 0 (|t| above Student's critical value for n − 1
    degrees of freedom, 4.30 at n = 3) and every seed agrees; otherwise not conclusive."""
    from scipy import stats
    if n >= 2 and t is not None and abs(t) > stats.t.ppf(0.975, n - 1) and (wins == n or wins == 0):
        return "better in every seed" if diff > 0 else "worse in every seed"
    return f"better in {wins}/{n} seeds (not conclusive at 95%)"


def markdown(summary: dict) -> str:
    keys = sorted({k for c in summary["cells"].values() for k in c["settings"]})
    head = ("| " + " | ".join(k.split(".")[-1] for k in keys) + " | val accuracy % (mean ± std) [95% CI] | "
            "baseline % | Δ vs baseline (points) [95% CI] | seeds better | note |")
    lines = [f"Teacher val accuracy {100 * summary['teacher']['val_accuracy']:.2f}%; seeds {summary['seeds']}; "
             f"{summary.get('val_images')} val images per seed; intervals: Student's t over seeds; "
             f"wall time {summary.get('wall_seconds', 0):.0f} s (jobs={summary.get('jobs', 1)}).", "",
             f"**Best cell:** {summary.get('best_note', summary.get('best'))}.", "",
             head, "|" + "---|" * (len(keys) + 5)]
    for c in sorted(summary["cells"].values(), key=lambda cell: -cell["mean"]):
        values = [str(c["settings"].get(k, "—")) for k in keys]
        lo, hi = c["interval"]
        dlo, dhi = c["diff_interval"]
        lines.append("| " + " | ".join(values) + f" | {100 * c['mean']:.2f} ± {100 * c['std']:.2f} "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}] | "
                     f"{100 * c['baseline_mean']:.2f} ± {100 * c['baseline_std']:.2f} | "
                     f"{100 * c['diff_mean']:+.2f} ± {100 * c['diff_std']:.2f} [{100 * dlo:+.1f}, {100 * dhi:+.1f}] | "
                     f"{c['wins']}/{len(c['seeds'])} | "
                     f"{c['verdict']} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict) -> bytes:
    """Accuracy vs T, one line per alpha, one panel per loss; the baseline as a dashed band."""
    from compress.reporting.plots import png, subplots
    cells = list(summary["cells"].values())
    losses = sorted({str(c["settings"].get("distill.loss", "(base)")) for c in cells})
    temps = sorted({float(c["settings"]["distill.temperature"]) for c in cells if "distill.temperature" in c["settings"]})
    fig, axes = subplots(1, len(losses), figsize=(4 * len(losses), 3.4), squeeze=False, sharey=True)
    base = [c["baseline_mean"] for c in cells]
    for ax, loss in zip(axes[0], losses):
        mine = [c for c in cells if str(c["settings"].get("distill.loss", "(base)")) == loss]
        for alpha in sorted({c["settings"].get("distill.alpha") for c in mine}, key=lambda a: (a is None, a)):
            pts = [c for c in mine if c["settings"].get("distill.alpha") == alpha]
            if all("distill.temperature" in c["settings"] for c in pts) and temps:
                pts.sort(key=lambda c: c["settings"]["distill.temperature"])
                xs = [c["settings"]["distill.temperature"] for c in pts]
            else:  # a loss without temperature: one value, drawn flat across the T axis
                xs = [min(temps or [1.0]), max(temps or [1.0])] if len(pts) == 1 else list(range(len(pts)))
                pts = pts * 2 if len(pts) == 1 else pts
            ax.errorbar(xs, [100 * c["mean"] for c in pts], yerr=[100 * c["std"] for c in pts], marker="o",
                        capsize=3, label=f"alpha={alpha}")
        ax.axhline(100 * sum(base) / len(base), color="gray", linestyle="--", label="CE baseline")
        ax.set_title(f"loss = {loss}")
        ax.set_xlabel("temperature T")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("val accuracy % (mean ± std over seeds)")
    axes[0][-1].legend(fontsize=7)
    return png(fig)


def write_outputs(summary: dict, out: Path) -> None:
    for name, payload in (("sweep.json", json.dumps(summary, indent=2)), ("sweep.md", markdown(summary))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(payload)
    with atomic_path(out / "sweep.png") as tmp:
        tmp.write_bytes(plot(summary))
