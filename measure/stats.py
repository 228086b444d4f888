"""Uncertainty for the figures people read: 95% intervals on accuracies and paired tests between
models measured on the same images (SciPy does the arithmetic).

- Wilson score interval for a proportion (Wilson 1927): good coverage at small n and near 0 or 1,
  where the normal approximation is not.
- McNemar's exact test (McNemar 1947) for two models on the same images: only the images where
  exactly one of them is right carry information; under "equally good" each such image is a
  fair coin, so the p-value is a two-sided binomial test on the discordant pairs.
- Student's t interval of a mean over a few seeds (sweeps).
"""
from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95


def wilson(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for `correct` successes out of `n`."""
    if n == 0:
        return 0.0, 1.0
    from scipy import stats  # here, not at import: scipy.stats costs 0.75 s of every process start
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(min(ci.high, 1.0))


def accuracy_with_interval(correct: np.ndarray) -> dict:
    """{accuracy, low, high, n} from a boolean vector of per-image correctness."""
    n, k = int(len(correct)), int(np.sum(correct))
    low, high = wilson(k, n)
    return {"accuracy": k / n if n else float("nan"), "low": low, "high": high, "n": n}


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray, level: float = LEVEL) -> dict:
    """Is model A better or worse than B on these images? Exact McNemar test on paired correctness."""
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    from scipy import stats
    p = float(stats.binomtest(only_a, discordant, 0.5).pvalue) if discordant else 1.0
    verdict = "not distinguishable"
    if p < 1 - level:
        verdict = "better" if only_a > only_b else "worse"
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": p,
            "delta": float(a.mean() - b.mean()) if len(a) else 0.0, "verdict": verdict, "n": int(len(a))}


def mean_interval(values: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean; (mean, mean, mean) for one value."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, mean, mean
    from scipy import stats
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half
