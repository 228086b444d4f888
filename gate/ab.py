"""Latency judged A/B on the runner: the reference run's ONNX files and this run's, timed
interleaved in the same fresh processes on this CPU, never against stored milliseconds.

Why: hosted runners that report the same CPU model differ by more than a 15% limit on the same
files (the int8 CI student measured 0.113 and 0.13-0.15 of the teacher on two "AMD EPYC" hosts),
and github-action-benchmark's README gives ±10-20% between jobs. Timing both sides in one
session, as `asv continuous` and Bencher's relative benchmarking do, cancels the host.

Which copy of a model is loaded first alternates between processes, and every round times every
file once in a rotating order, so each round gives a paired ratio candidate/reference per model. Rounds inside one process are not independent (one
process's memory placement moved a model's time for the whole process by up to ~10% here), so
the unit of evidence is the process: each of P fresh processes gives the median of its rounds'
ratios, and the slowdown is the geometric mean of those P medians with a Student-t 95% interval
on their logarithms (P-1 degrees of freedom). The verdict:

- FAIL: the interval's lower end is past the limit (slower with confidence) on a quiet machine;
- INCONCLUSIVE: the estimate is past the limit but the interval reaches below it, or the machine
  was busy while timing (compress.measure.contention) — said, not failed;
- PASS: otherwise (faster is never a regression).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from compress.gate.verdict import Figure, Row, Verdict
from compress.measure.latency_worker import time_in_fresh_processes

LEVEL = 0.95
REFERENCE, CANDIDATE = "reference", "candidate"


@dataclass
class Slowdown:
    """Candidate over reference for one model at one batch size."""

    ratio: float  # geometric mean over processes of each process's median paired ratio
    low: float
    high: float
    processes: int
    reference_p50_ms: float
    candidate_p50_ms: float

    @property
    def growth(self) -> float:
        return self.ratio - 1.0


def slowdown(candidate: list[float], reference: list[float], blocks: list[int], level: float = LEVEL) -> Slowdown:
    """The paired slowdown of `candidate` over `reference` (ms per round, same rounds), its rounds
    cut into the processes they came from (`blocks`: rounds per process, in order)."""
    cand, ref = np.asarray(candidate, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    edges = np.cumsum([0, *blocks])
    logs = np.log([np.median(cand[a:b] / ref[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a])
    mean = float(np.mean(logs))
    if len(logs) > 1:
        half = float(stats.t.ppf(0.5 + level / 2, len(logs) - 1)) * float(np.std(logs, ddof=1)) / math.sqrt(len(logs))
    else:  # one process: no spread between processes to judge by; the interval is unknown
        half = math.inf
    return Slowdown(math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(logs),
                    float(np.median(ref)), float(np.median(cand)))


@dataclass
class ABTiming:
    slowdowns: dict[tuple[str, int], Slowdown]  # (model, batch) -> candidate over reference
    contention: dict


def time_ab(reference: dict[str, Path], candidate: dict[str, Path], images: np.ndarray, batches: list[int],
            threads: int, warmup: int, runs: int, processes: int, calls: int = 1) -> ABTiming:
    """Time every model of both runs in one interleaved session of fresh processes."""
    names = [n for n in candidate if n in reference]
    files = {f"{side}/{n}": path for n in names for side, path in ((REFERENCE, reference[n]), (CANDIDATE, candidate[n]))}

    def load_order(process: int) -> list[str]:
        # which copy of a model takes memory first biases its time for the whole process (identical
        # files measured 7% apart with the reference always loaded first): alternate it by process
        sides = (REFERENCE, CANDIDATE) if process % 2 == 0 else (CANDIDATE, REFERENCE)
        return [f"{side}/{n}" for n in names for side in sides]

    timed = time_in_fresh_processes(files, images, batches, threads, warmup, runs, calls, processes, load_order)
    result = {(n, b): slowdown(timed.samples[b][f"{CANDIDATE}/{n}"], timed.samples[b][f"{REFERENCE}/{n}"], timed.blocks)
              for n in names for b in batches}
    return ABTiming(result, timed.contention)


def verdict(s: Slowdown, limit: float, busy: bool) -> Verdict:
    if s.low - 1.0 > limit:
        return Verdict.INCONCLUSIVE if busy else Verdict.FAIL
    return Verdict.INCONCLUSIVE if s.growth > limit else Verdict.PASS


def latency_rows(timing: ABTiming, limit: float, gated_batches: list[int] | None = None) -> list[Row]:
    busy = bool(timing.contention.get("busy"))
    rows = []
    for (name, batch), s in timing.slowdowns.items():
        gated = gated_batches is None or batch in gated_batches
        interval = f"[{s.low - 1:+.1%}, {s.high - 1:+.1%}]" if math.isfinite(s.high) else "[no interval: 1 process]"
        rows.append(Row(model=name, figure=Figure.LATENCY, batch=batch, baseline=round(s.reference_p50_ms, 4),
                        now=round(s.candidate_p50_ms, 4), change=f"{s.growth:+.1%} {interval}",
                        limit=f"+{limit:.0%} at {LEVEL:.0%}" if gated else "not gated",
                        verdict=verdict(s, limit, busy) if gated else Verdict.INFO, source="reference run"))
    return rows
