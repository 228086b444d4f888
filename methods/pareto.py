"""Choosing the deployable among many measured models by one stated rule.

Every point is a model an edge team could ship: a student, each of its prune rounds, and each
int8 layout of those, with its val accuracy (what the choice reads), its batch-1 p50 on the target
runtime and its file size. The Pareto front holds the points no other point beats on both
accuracy and latency. The rule (`deploy.objective`):

- `fastest_within_budget`: the fastest point whose val accuracy is within `max_accuracy_drop`
  points of the most accurate fp32 student;
- `most_accurate_under`: the most accurate point under `max_latency_ms` (and `max_size_mb`).

Ties (p50 within TIE_MS, or equal accuracy) break by size, then by fewer steps from the student
(a prune round and an int8 conversion are a step each). A budget nothing meets is refused in one
line naming the closest point: nothing is chosen as if it had been met. A degenerate point (one
class predicted for every val image) stays on the plot and the front, flagged, but is never
eligible, nor the reference the budget is measured from.
"""
from __future__ import annotations

from dataclasses import dataclass

from compress.core.budget import within_budget
from compress.core.errors import CompressError

TIE_MS = 0.01  # latencies this close are the same speed: size and steps decide


@dataclass(frozen=True)
class Point:
    name: str
    student: str  # the student architecture the point comes from
    steps: int  # 0 for the student itself, +1 per prune round, +1 for int8
    fp32: bool
    accuracy: float  # on val: what the choice reads
    p50_ms: float  # batch 1, on the target runtime
    megabytes: float
    predicts_one_class: str | None = None  # degenerate: never chosen


@dataclass(frozen=True)
class Choice:
    chosen: Point
    runner_up: Point | None
    rule: str  # the rule in words, with its numbers
    eligible: list[str]


def front(points: list[Point]) -> list[Point]:
    """The points no other point beats on both val accuracy and latency, fastest first."""
    kept = [p for p in points
            if not any(q.accuracy >= p.accuracy and q.p50_ms <= p.p50_ms and (q.accuracy, q.p50_ms) != (p.accuracy, p.p50_ms)
                       for q in points)]
    return sorted(kept, key=lambda p: (p.p50_ms, -p.accuracy))


def _order(p: Point, speed_first: bool) -> tuple:
    speed = round(p.p50_ms / TIE_MS)
    return (speed, -p.accuracy, p.megabytes, p.steps) if speed_first else (-p.accuracy, p.megabytes, p.steps, p.p50_ms)


def choose(points: list[Point], objective: str, max_accuracy_drop: float, max_latency_ms: float = 0.0,
           max_size_mb: float = 0.0) -> Choice:
    """The point the rule picks and the runner-up; CompressError naming the closest point when none
    qualifies, or saying that every point is degenerate."""
    points = [p for p in points if p.predicts_one_class is None]
    if not points:
        raise CompressError("every point predicts one class for every val image (degenerate); nothing was "
                            "deployed: train longer, lower the learning rate or check the labels")
    if objective == "most_accurate_under":
        if max_latency_ms <= 0:
            raise CompressError("deploy.objective = most_accurate_under needs deploy.max_latency_ms > 0")
        size = f" and {max_size_mb:g} MB" if max_size_mb > 0 else ""
        rule = f"the most accurate point on val under {max_latency_ms:g} ms at batch 1{size}"
        eligible = [p for p in points if p.p50_ms <= max_latency_ms and (max_size_mb <= 0 or p.megabytes <= max_size_mb)]
        if not eligible:
            closest = min(points, key=lambda p: p.p50_ms / max_latency_ms
                          + (p.megabytes / max_size_mb if max_size_mb > 0 else 0))
            raise CompressError(f"no model meets deploy.max_latency_ms = {max_latency_ms:g}{size and f' and deploy.max_size_mb = {max_size_mb:g}'}: "
                                f"the closest is {closest.name} at {closest.p50_ms:.2f} ms, {closest.megabytes:.2f} MB "
                                f"(val accuracy {closest.accuracy:.4f}); nothing was deployed")
        ranked = sorted(eligible, key=lambda p: _order(p, speed_first=False))
    else:
        students = [p for p in points if p.fp32 and p.steps == 0]
        best = max(students or points, key=lambda p: p.accuracy)
        rule = (f"the fastest point at batch 1 whose val accuracy is within {max_accuracy_drop:g} points of the most "
                f"accurate fp32 student ({best.name}, {best.accuracy:.4f})")
        eligible = [p for p in points if within_budget(best.accuracy, p.accuracy, max_accuracy_drop)]
        if not eligible:  # cannot happen while the best student is a point, but say so if it does
            raise CompressError(f"no model is within deploy.max_accuracy_drop = {max_accuracy_drop:g} points of "
                                f"{best.name}; nothing was deployed")
        ranked = sorted(eligible, key=lambda p: _order(p, speed_first=True))
    return Choice(ranked[0], ranked[1] if len(ranked) > 1 else None, rule, [p.name for p in eligible])
