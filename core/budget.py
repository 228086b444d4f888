"""The one accuracy-budget rule every choice uses (int8 layout, ExecuTorch program, mixed
precision, the deployable): a candidate may lose at most `max_drop` points of top-1 accuracy
against its reference, measured on the same images."""
from __future__ import annotations


def accuracy_drop(reference: float, accuracy: float) -> float:
    """Points lost against the reference (negative when the candidate is better)."""
    return 100.0 * (reference - accuracy)


def within_budget(reference: float, accuracy: float, max_drop: float) -> bool:
    return accuracy_drop(reference, accuracy) <= max_drop
