"""Accuracy figures from logits: top-1 with its 95% Wilson interval, top-5, per-class accuracy,
confusion matrix, agreement with the teacher, and expected calibration error (Guo et al. 2017,
15 equal-width bins)."""
from __future__ import annotations

import numpy as np

from compress.core.budget import single_class
from compress.exports.session import softmax
from compress.measure.stats import accuracy_with_interval


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE = Σ_b (n_b / N) · |accuracy_b − mean confidence_b| over confidence bins."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    m = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(m, (labels, predicted), 1)
    return m


def accuracy_figures(logits: np.ndarray, labels: np.ndarray, classes: list[str],
                     teacher_predicted: np.ndarray | None) -> dict:
    predicted = logits.argmax(axis=1)
    cm = confusion_matrix(labels, predicted, len(classes))
    per_class = {c: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None for i, c in enumerate(classes)}
    interval = accuracy_with_interval(predicted == labels)
    figures = {
        "accuracy": float((predicted == labels).mean()),
        "accuracy_interval": {"low": interval["low"], "high": interval["high"], "n": interval["n"]},
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "ece": expected_calibration_error(softmax(logits), labels),
        "agreement_with_teacher": float((predicted == (predicted if teacher_predicted is None
                                                       else teacher_predicted)).mean()),
    }
    one = single_class(predicted, len(classes))
    if one is not None:  # degenerate: the accuracy above is that class's share of the split
        figures["predicts_one_class"] = classes[one]
    recalls = [v for v in per_class.values() if v is not None]
    figures["balanced_accuracy"] = float(np.mean(recalls)) if recalls else float("nan")
    if len(classes) > 5:
        top5 = np.argsort(-logits, axis=1)[:, :5]
        figures["top5_accuracy"] = float((top5 == labels[:, None]).any(axis=1).mean())
    return figures
