"""Report plots as PNG bytes (matplotlib, Agg backend): accuracy vs latency, size, training
curves, confusion matrix, and Grad-CAM panels."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def accuracy_vs_latency(models: dict, deployable: str) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in models.items():
        x, y = m["latency_ms"]["p50"], 100 * m["accuracy"]
        ax.scatter(x, y, s=120 if name == deployable else 50, marker="*" if name == deployable else "o",
                   color="tab:red" if name == deployable else ("tab:gray" if name == "teacher" else "tab:blue"))
        ax.annotate(name + (" (deployable)" if name == deployable else ""), (x, y), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xlabel("p50 latency, batch 1 (ms, ONNX Runtime CPU)")
    ax.set_ylabel("top-1 accuracy on val (%)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    return _png(fig)


def sizes(models: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(models)
    ax.bar(names, [models[n]["onnx_bytes"] / 1e6 for n in names], color="tab:blue")
    ax.set_ylabel("ONNX file (MB)")
    ax.tick_params(axis="x", rotation=20)
    return _png(fig)


def training_curves(training: dict) -> bytes:
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, history in training.items():
        if not history:
            continue
        epochs = [h["epoch"] for h in history]
        a.plot(epochs, [h["loss"] for h in history], marker="o", label=name)
        b.plot(epochs, [100 * h["val_accuracy"] for h in history], marker="o", label=name)
    a.set_title("training loss")
    b.set_title("val accuracy (%)")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    b.legend(fontsize=8)
    return _png(fig)


def confusion(matrix: list, classes: list[str], title: str) -> bytes:
    m = np.asarray(matrix)
    size = min(8, 2 + 0.5 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig)


def gradcam_panels(images: np.ndarray, teacher_cams: np.ndarray, student_cams: np.ndarray,
                   student_name: str) -> bytes:
    """Rows: image, teacher CAM, student CAM. images: uint8 [N, 3, H, W]."""
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.8 * n, 5.6), squeeze=False)
    for i in range(n):
        rgb = images[i].transpose(1, 2, 0)
        for row, cams, label in ((0, None, "image"), (1, teacher_cams, "teacher"), (2, student_cams, student_name)):
            ax = axes[row][i]
            ax.imshow(rgb)
            if cams is not None:
                ax.imshow(cams[i], cmap="jet", alpha=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
    return _png(fig)
