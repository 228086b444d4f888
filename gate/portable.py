"""Rows for the figures every CPU computes alike, judged against the baseline file: file size,
MACs and params (exact, counted at export), the operator set (a new operator is one a client
runtime may lack), and the accuracy differences measured in one run on the same images.

A paired difference fails only when it lost more than the accuracy limit *and* more than three
standard errors of the two runs' paired estimates: across CPUs the trained models themselves
differ (on the CI models the pruned-vs-unpruned difference moved 10.4 points between an Intel
Xeon and an AMD EPYC), so this catches a broken step, not a drift.
"""
from __future__ import annotations

import math

from compress.gate.baseline import ModelFigures, Pair
from compress.gate.verdict import Figure, Row, Verdict

PAIRED_SIGMAS = 3.0  # standard errors a paired difference must lose, beyond the limit, to fail


def rel(now: float, base: float) -> float:
    return now / base - 1.0 if base else float("inf")


def portable_rows(name: str, b: ModelFigures, n: ModelFigures, max_size_growth: float,
                  max_compute_growth: float) -> list[Row]:
    growth = rel(n.onnx_bytes, b.onnx_bytes)
    rows = [Row(model=name, figure=Figure.ONNX_BYTES, baseline=b.onnx_bytes, now=n.onnx_bytes, change=f"{growth:+.1%}",
                limit=f"+{max_size_growth:.0%}", verdict=Verdict.FAIL if growth > max_size_growth else Verdict.PASS)]
    rows += exact_rows(name, Figure.MACS, b.macs, n.macs, max_compute_growth)
    rows += exact_rows(name, Figure.PARAMS, b.params, n.params, max_compute_growth)
    if b.operators is None and n.operators is None:
        return rows
    if b.operators is None or n.operators is None:
        return [*rows, absent(name, Figure.OPERATORS, b.operators, n.operators)]
    added, dropped = sorted(set(n.operators) - set(b.operators)), sorted(set(b.operators) - set(n.operators))
    parts = ([f"new: {', '.join(added)}"] if added else []) + ([f"gone: {', '.join(dropped)}"] if dropped else [])
    return [*rows, Row(model=name, figure=Figure.OPERATORS, baseline=len(b.operators), now=len(n.operators),
                       change="; ".join(parts) or "same", limit="no new operator",
                       verdict=Verdict.FAIL if added else Verdict.PASS)]


def exact_rows(name: str, figure: Figure, base: int | None, now: int | None, limit: float) -> list[Row]:
    """A MACs or params row; none when neither side knows the figure (a foreign ONNX file)."""
    if base is None and now is None:
        return []
    if base is None or now is None:
        return [absent(name, figure, base, now)]
    growth = rel(now, base)
    return [Row(model=name, figure=figure, baseline=base, now=now, change=f"{growth:+.1%}", limit=f"+{limit:.0%}",
                verdict=Verdict.FAIL if growth > limit else Verdict.PASS)]


def paired_rows(name: str, base: list[Pair], now: list[Pair], max_drop_points: float) -> list[Row]:
    """Each paired difference of `name` (e.g. student_int8 vs student_pruned)."""
    rows = []
    by_key = {(p.model, p.against): p for p in base}
    for p in (p for p in now if p.model == name):
        b = by_key.get((p.model, p.against))
        if b is None:
            rows.append(Row(model=name, figure=Figure.PAIRED_ACCURACY, against=p.against, now=f"{100 * p.delta:+.2f} pts",
                            change="absent from baseline", verdict=Verdict.NEW))
            continue
        drop = 100 * (b.delta - p.delta)
        var_now = p.variance() or 0.0
        var_base = b.variance()
        se = 100 * math.sqrt(var_now + (var_now if var_base is None else var_base))  # unknown: as noisy as now
        sigmas = drop / se if se else (math.inf if drop > 0 else 0.0)
        rows.append(Row(model=name, figure=Figure.PAIRED_ACCURACY, against=p.against,
                        baseline=f"{100 * b.delta:+.2f} pts", now=f"{100 * p.delta:+.2f} pts",
                        change=f"{-drop:+.2f} pts ({0.0 - sigmas:+.1f} σ)" if math.isfinite(sigmas) else f"{-drop:+.2f} pts",
                        limit=f"-{max_drop_points} pts and -{PAIRED_SIGMAS:g} σ",
                        verdict=Verdict.FAIL if drop > max_drop_points and sigmas > PAIRED_SIGMAS else Verdict.PASS))
    return rows


def recorded_rows(name: str, b: ModelFigures, n: ModelFigures, ratio: bool) -> list[Row]:
    """Accuracy and the latency ratio to the teacher as the file recorded them on its machine:
    shown beside this run's, never gated (they are judged against the reference run instead)."""
    rows = [Row(model=name, figure=Figure.ACCURACY, baseline=b.accuracy, now=n.accuracy,
                change=f"{100 * (n.accuracy - b.accuracy):+.2f} pts", limit="recorded elsewhere", verdict=Verdict.INFO)]
    if ratio:
        rows += [Row(model=name, figure=Figure.STORED_LATENCY_RATIO, batch=int(batch), baseline=b.latency_ratio[batch],
                     now=n.latency_ratio[batch], change=f"{rel(n.latency_ratio[batch], b.latency_ratio[batch]):+.1%}",
                     limit="recorded elsewhere", verdict=Verdict.INFO)
                 for batch in sorted(set(b.latency_ratio) & set(n.latency_ratio), key=int)]
    return rows


def absent(name: str, figure: Figure, base, now) -> Row:
    """A figure only one side has: NEW when the baseline lacks it, MISSING (a failure) otherwise."""
    def shown(v):
        return len(v) if isinstance(v, list) else v
    return Row(model=name, figure=figure, baseline=shown(base), now=shown(now),
               change="absent from " + ("baseline" if base is None else "report"),
               verdict=Verdict.NEW if base is None else Verdict.MISSING)
