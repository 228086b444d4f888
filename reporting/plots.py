"""Report plots as PNG bytes (matplotlib, Agg backend): accuracy vs latency, size, training
curves, confusion matrix, and Grad-CAM panels."""
from __future__ import annotations

import io

import matplotlib

from compress.core.documents import ModelReport, Pareto
from compress.core.roster import PRUNED, TEACHER

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator


def subplots(*args, **kwargs):
    """matplotlib's plt.subplots on the Agg backend (for plots made outside this module)."""
    return plt.subplots(*args, **kwargs)


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _accuracy_axis(ax, values: list[float], min_span: float = 10.0) -> None:
    """A y range of at least `min_span` points, so a 0.8-point gap does not fill half the plot."""
    lo, hi = min(values), max(values)
    pad = max(0.0, (min_span - (hi - lo)) / 2) + 1.0
    ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))


def accuracy_vs_latency(models: dict[str, ModelReport], deployable: str | None) -> bytes:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ys = []
    for i, (name, m) in enumerate(sorted(models.items(), key=lambda kv: kv[1].latency_ms.p50)):
        x, y = m.latency_ms.p50, 100 * m.accuracy
        ys.append(y)
        ci = m.accuracy_interval
        if ci:
            ax.errorbar(x, y, yerr=[[y - 100 * ci.low], [100 * ci.high - y]], color="lightgray", zorder=1)
        ax.scatter(x, y, s=120 if name == deployable else 50, marker="*" if name == deployable else "o", zorder=2,
                   color="tab:red" if name == deployable else ("tab:gray" if name == TEACHER else "tab:blue"))
        ax.annotate(name + (" (deployable)" if name == deployable else ""), (x, y), textcoords="offset points",
                    xytext=(6, 8 if i % 2 == 0 else -12), fontsize=8)  # alternate above/below: no overlap
    ax.set_xlabel("p50 latency, batch 1 (ms, ONNX Runtime CPU)")
    ax.set_ylabel("top-1 accuracy (%) with 95% interval")
    ax.set_xscale("log")
    _accuracy_axis(ax, ys)
    ax.grid(alpha=0.3)
    return png(fig)


def sizes(models: dict[str, ModelReport]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(models)
    ax.bar(names, [models[n].onnx_bytes / 1e6 for n in names], color="tab:blue")
    ax.set_ylabel("ONNX file (MB)")
    ax.tick_params(axis="x", rotation=20)
    return png(fig)


FINE_TUNES = (PRUNED,)  # start from a trained model: drawn apart, from their own epoch 1


def training_curves(training: dict) -> bytes:
    groups = [("trained from scratch", {n: h for n, h in training.items() if n not in FINE_TUNES and h}),
              ("fine-tuned after pruning", {n: h for n, h in training.items() if n in FINE_TUNES and h})]
    groups = [g for g in groups if g[1]] or [("training", {})]
    fig, axes = plt.subplots(len(groups), 2, figsize=(9, 3.3 * len(groups)), squeeze=False)
    for (title, histories), (a, b) in zip(groups, axes, strict=True):
        accuracies = []
        for name, history in histories.items():
            epochs = [h["epoch"] for h in history]
            a.plot(epochs, [h["loss"] for h in history], marker="o", label=name)
            b.plot(epochs, [100 * h["val_accuracy"] for h in history], marker="o", label=name)
            accuracies += [100 * h["val_accuracy"] for h in history]
        a.set_title(f"training loss ({title})", fontsize=9)
        b.set_title(f"val accuracy % ({title})", fontsize=9)
        if accuracies:
            _accuracy_axis(b, accuracies)
        for ax in (a, b):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 1.2, 1.4, ...
            ax.grid(alpha=0.3)
        if histories:
            b.legend(fontsize=8)
    return png(fig)


def confusion(matrix: list, classes: list[str], title: str) -> bytes:
    m = np.asarray(matrix)
    size = min(8, 2 + 0.5 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return png(fig)


def gradcam_panels(images: np.ndarray, teacher_cams: np.ndarray | None, student_cams: np.ndarray | None,
                   student_name: str, note: str | None = None) -> bytes:
    """Rows: image, teacher CAM, student CAM. images: uint8 [N, 3, H, W]. With a `note` (1×1 maps at
    small inputs, a model without spatial maps) only the images are drawn, with the note instead."""
    n = len(images)
    if note or teacher_cams is None or student_cams is None:
        fig, axes = plt.subplots(1, n, figsize=(1.8 * n, 2.4), squeeze=False)
        for i in range(n):
            axes[0][i].imshow(images[i].transpose(1, 2, 0))
            axes[0][i].set_xticks([])
            axes[0][i].set_yticks([])
        fig.suptitle(note or "no Grad-CAM", fontsize=9)
        return png(fig)
    fig, axes = plt.subplots(3, n, figsize=(1.8 * n, 5.6), squeeze=False)
    for i in range(n):
        rgb = images[i].transpose(1, 2, 0)
        for row, cams, label in ((0, None, "image"), (1, teacher_cams, TEACHER), (2, student_cams, student_name)):
            ax = axes[row][i]
            ax.imshow(rgb)
            if cams is not None:
                ax.imshow(cams[i], cmap="jet", alpha=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
    return png(fig)


def _layer_label(row: dict) -> str:
    """"/layer2/layer2.0/downsample/downsample.0/Conv" -> "layer2.0.downsample.0 (Conv)"."""
    parts = row["node"].strip("/").split("/")[:-1]
    return ".".join(p.split(".")[-1] for p in parts) + f" ({row['op']})" if parts else row["node"]


def sensitivity(layers: list[dict], layout: str | None, top: int = 20) -> bytes:
    """The layers that lose the most SQNR to int8 (most sensitive at the top)."""
    rows = [r for r in layers if r.get("sqnr_lost_db") is not None][:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * max(len(rows), 4) + 1.2))
    if rows:
        ax.barh([_layer_label(r) for r in rows], [r["sqnr_lost_db"] for r in rows], color="tab:orange")
    ax.set_xlabel(f"SQNR lost in the layer (dB), {layout or 'no static int8 layout'}")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("per-layer int8 sensitivity (higher = keeps more in float)", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return png(fig)


def pareto(section: Pareto, val_images: int) -> bytes:
    """Every point of a search: val accuracy with its 95% Wilson interval against batch-1 p50 on the
    target runtime; the front joined, the chosen point starred."""
    from compress.measure.stats import wilson
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = section.points
    students = sorted({p.student for p in points})
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(students)}
    for p in points:
        y = 100 * p.accuracy
        if val_images:
            low, high = wilson(round(p.accuracy * val_images), val_images)
            ax.errorbar(p.p50_ms, y, yerr=[[y - 100 * low], [100 * high - y]], color="lightgray", zorder=1)
        chosen = p.name == section.chosen
        marker = "*" if chosen else ("x" if p.predicts_one_class is not None else ("o" if p.fp32 else "s"))
        ax.scatter(p.p50_ms, y, s=160 if chosen else 36, marker=marker,
                   color="tab:red" if chosen else colours[p.student], zorder=3,
                   label=p.student if p.steps == 0 and p.fp32 else None)
    line = sorted((p for p in points if p.on_front), key=lambda p: p.p50_ms)
    if line:
        ax.plot([p.p50_ms for p in line], [100 * p.accuracy for p in line], color="black", lw=1, zorder=2,
                label="Pareto front")
    ax.set_xlabel(f"p50 latency, batch 1 (ms, {section.runtime})")
    ax.set_ylabel("val accuracy (%) with 95% interval")
    ax.set_xscale("log")
    if points:
        _accuracy_axis(ax, [100 * p.accuracy for p in points])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="circle fp32, square int8, x degenerate, star chosen", title_fontsize=7)
    return png(fig)
