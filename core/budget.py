"""The rules every choice uses (int8 layout, ExecuTorch program, mixed precision, prune round, the
deployable): a candidate may lose at most `max_drop` points of top-1 accuracy against its
reference, measured on the same images; and a model that predicts one class for every image is
degenerate (its accuracy is that class's share of the split), never chosen whatever its figures."""
from __future__ import annotations

import numpy as np


def accuracy_drop(reference: float, accuracy: float) -> float:
    """Points lost against the reference (negative when the candidate is better)."""
    return 100.0 * (reference - accuracy)


def within_budget(reference: float, accuracy: float, max_drop: float) -> bool:
    """At most `max_drop` points lost; a drop of exactly the budget counts as within it (0.90 vs
    0.89 is 1.0000000000000009 points in floating point)."""
    return accuracy_drop(reference, accuracy) <= max_drop + 1e-9


def selection_accuracy(predicted: np.ndarray, labels: np.ndarray, metric: str = "top1") -> float:
    """The accuracy choices rank by (bench.metric): top-1, or balanced accuracy, the mean recall over
    the classes present, which lopsided classes need (top-1 can hide a class the model never predicts)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if metric == "balanced":
        return float(np.mean([(predicted[labels == c] == c).mean() for c in np.unique(labels)]))
    return float((predicted == labels).mean())


def single_class(predicted: np.ndarray, classes: int) -> int | None:
    """The class a degenerate model predicts for every image, or None. With two or more classes a
    model that never varies its answer has learnt nothing about the images (a collapsed run, a head
    trained on a majority class), however near the majority share its accuracy looks."""
    seen = np.unique(np.asarray(predicted))
    return int(seen[0]) if classes > 1 and seen.size == 1 else None


def degenerate_warning(name: str, predicted_class: str, split: str, accuracy: float) -> str:
    """The one line every stage that measures a degenerate model says about it."""
    return (f"{name} is degenerate: it predicts {predicted_class!r} for every {split} image "
            f"(accuracy {accuracy:.4f} is that class's share)")
