"""The CI gate: compare a report with a committed baseline and say what moved.

Two kinds of figure:
- **portable** ones do not depend on the CPU and are gated against any baseline entry: MACs and
  params (exact, counted at export), ONNX file size, the operator set (a new operator is one a
  client runtime may lack), and the accuracy differences measured in the same run on the same
  images (student vs baseline, pruned vs unpruned, int8 vs its fp32 source);
- **testbed** ones are gated only against the entry of the same CPU (benchmarks/testbed.py):
  latency as the *ratio to the reference model measured in the same run* at every batch size,
  and absolute accuracy (training is not bit-reproducible across BLAS kernels). Against another
  CPU's entry they are shown as INFO.

A paired difference fails only when it lost more than the accuracy limit *and* more than three
standard errors of the two runs' paired estimates: across CPUs the trained models themselves
differ (on the CI models the pruned-vs-unpruned difference moved 10.4 points between an Intel
Xeon and an AMD EPYC), so this catches a broken step, not a drift; the testbed entry gates the
absolute accuracies to the limit.
Exit codes from the CLI: 0 pass, 1 regression, 2 unusable input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from compress.benchmarks.baseline_file import Baseline, Entry, ModelFigures, Pair, entry_from_report
from compress.benchmarks.runtimes import MIN_AGREEMENT
from compress.core.errors import CompressError

# settings that change the figures: a report and a baseline that differ in any of them measure
# different things, and comparing them would call the difference a regression
COMPARED_SETTINGS = ("seed", "data.resize", "data.crop", "teacher.arch", "teacher.epochs", "distill.arch",
                     "distill.epochs", "prune.enabled", "prune.target", "prune.params_ratio", "prune.macs_ratio",
                     "prune.epochs", "quantize.enabled", "quantize.format", "bench.threads", "bench.batch_sizes",
                     "bench.warmup", "bench.runs", "bench.calls_per_sample", "bench.processes")

PAIRED_SIGMAS = 3.0  # standard errors a paired difference must lose, beyond the limit, to fail


@dataclass
class Limits:
    max_accuracy_drop: float = 1.0  # points of top-1 accuracy
    max_latency_regression: float = 0.15  # relative growth of the same-run latency ratio
    max_size_growth: float = 0.05  # relative growth of the ONNX file
    # relative growth of MACs and params; they are exact, so this only leaves room for a pruner's rounding
    max_compute_growth: float = 0.02
    max_absolute_latency_regression: float = 0.15  # only with absolute=True


@dataclass
class Row:
    model: str
    figure: str
    baseline: float | str | None
    now: float | str | None
    change: str
    limit: str
    verdict: str  # PASS | FAIL | MISSING | NEW | INFO


@dataclass
class Outcome:
    """What the gate found: the rows, which entry they were compared with, and what to tell the user."""
    rows: list[Row]
    entry: Entry
    matched: bool  # the entry is this report's testbed: latency and absolute accuracy were gated
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return failed(self.rows)


def _rel(now: float, base: float) -> float:
    return now / base - 1.0 if base else float("inf")


def compare(report: dict, baseline: Baseline, limits: Limits, models: list[str] | None = None,
            absolute: bool = False, latency_batches: list[str] | None = None,
            strict_testbed: bool = False) -> Outcome:
    """Rows for every compared figure, against the entry of the report's testbed or, when there is
    none, the closest entry for the portable figures alone (`strict_testbed`: refuse instead).

    `latency_batches` restricts which batch sizes' latency can fail the check; the others are
    still shown, with verdict INFO (a noisy runner may make batch-1 figures useless to gate).
    """
    now = entry_from_report(report, "report")
    reference = report.get("benchmark", {}).get("reference", "teacher")
    if reference != baseline.reference:
        raise CompressError(f"report measures ratios against {reference!r} but the baseline against "
                            f"{baseline.reference!r}; they cannot be compared")
    warnings = _settings_warnings(report.get("settings"), baseline.settings)
    entry, matched = baseline.entry_for(now.testbed), True
    notes: list[str] = []
    if entry is None:
        known = "; ".join(e.testbed.describe() for e in baseline.entries)
        if strict_testbed:
            raise CompressError(f"no baseline for {now.testbed.describe()} (entries: {known}); add one with "
                                "`compress baseline --add`, or drop --strict-testbed to gate the portable figures")
        entry, matched = baseline.closest(now.testbed), False
        notes.append(f"no baseline for {now.testbed.describe()}: latency and absolute accuracy not gated; add one "
                     f"with `compress baseline --add` (portable figures compared with the entry for "
                     f"{entry.testbed.describe()})")
    names = models or sorted(set(entry.models) | set(now.models), key=lambda n: (n != reference, n))
    # a search's points differ between runs (a prune round more or less): it compares what both hold,
    # and follows its chosen model under the stable name `deployable`
    search = bool(report.get("pareto"))
    rows: list[Row] = []
    for name in names:
        b, n = entry.models.get(name), now.models.get(name)
        if b is None or n is None:
            missing = "INFO" if search and name not in (reference, "deployable") else "MISSING"
            rows.append(Row(name, "model", None, None, "absent from " + ("baseline" if b is None else "report"), "-",
                            "NEW" if b is None else missing))
            continue
        rows += _portable_rows(name, b, n, limits)
        rows += _paired_rows(name, entry.comparisons, now.comparisons, limits)
        rows += [Row(name, f"agreement@{runtime}", None, agreement, "-" if agreement is None else f"{agreement:.4f}",
                     f">= {MIN_AGREEMENT}", "INFO" if agreement is None else
                     ("PASS" if agreement >= MIN_AGREEMENT else "FAIL"))
                 for runtime, agreement in _runtime_agreement(report, name).items()]
        rows += _testbed_rows(name, b, n, limits, matched, name != reference, absolute, latency_batches)
    return Outcome(rows, entry, matched, warnings, notes)


def _portable_rows(name: str, b: ModelFigures, n: ModelFigures, limits: Limits) -> list[Row]:
    """File size, MACs, params and operators: the same on every CPU."""
    growth = _rel(n.onnx_bytes, b.onnx_bytes)
    rows = [Row(name, "onnx_bytes", b.onnx_bytes, n.onnx_bytes, f"{growth:+.1%}", f"+{limits.max_size_growth:.0%}",
                "FAIL" if growth > limits.max_size_growth else "PASS")]
    for figure in ("macs", "params"):
        rows += _exact_rows(name, figure, getattr(b, figure), getattr(n, figure), limits.max_compute_growth)
    if b.operators is not None or n.operators is not None:
        if b.operators is None or n.operators is None:
            rows.append(_absent(name, "operators", b.operators, n.operators))
        else:
            added, dropped = sorted(set(n.operators) - set(b.operators)), sorted(set(b.operators) - set(n.operators))
            parts = ([f"new: {', '.join(added)}"] if added else []) + ([f"gone: {', '.join(dropped)}"] if dropped else [])
            change = "; ".join(parts) or "same"
            rows.append(Row(name, "operators", len(b.operators), len(n.operators), change, "no new operator",
                            "FAIL" if added else "PASS"))
    return rows


def _paired_rows(name: str, base: list[Pair], now: list[Pair], limits: Limits) -> list[Row]:
    """Each paired difference of `name` (e.g. student_int8 vs student_pruned): fails when it lost
    more than the limit and more than PAIRED_SIGMAS standard errors."""
    rows = []
    by_key = {(p.model, p.against): p for p in base}
    for p in (p for p in now if p.model == name):
        label = f"Δacc vs {p.against}"
        b = by_key.get((p.model, p.against))
        if b is None:
            rows.append(_absent(name, label, None, f"{100 * p.delta:+.2f} pts"))
            continue
        drop = 100 * (b.delta - p.delta)
        var_now = p.variance() or 0.0
        var_base = b.variance()
        se = 100 * math.sqrt(var_now + (var_now if var_base is None else var_base))  # unknown: as noisy as now
        sigmas = drop / se if se else (math.inf if drop > 0 else 0.0)
        verdict = "FAIL" if drop > limits.max_accuracy_drop and sigmas > PAIRED_SIGMAS else "PASS"
        rows.append(Row(name, label, f"{100 * b.delta:+.2f} pts", f"{100 * p.delta:+.2f} pts",
                        f"{-drop:+.2f} pts ({0.0 - sigmas:+.1f} σ)" if math.isfinite(sigmas) else f"{-drop:+.2f} pts",
                        f"-{limits.max_accuracy_drop} pts and -{PAIRED_SIGMAS:g} σ", verdict))
    return rows


def _testbed_rows(name: str, b: ModelFigures, n: ModelFigures, limits: Limits, matched: bool, ratio: bool,
                  absolute: bool, latency_batches: list[str] | None) -> list[Row]:
    """Absolute accuracy and latency: gated against the same testbed's entry, INFO against another's."""
    drop = 100 * (b.accuracy - n.accuracy)
    rows = [Row(name, "accuracy", b.accuracy, n.accuracy, f"{-drop:+.2f} pts",
                f"-{limits.max_accuracy_drop} pts" if matched else "other CPU",
                ("FAIL" if drop > limits.max_accuracy_drop else "PASS") if matched else "INFO")]
    checks = [("latency_ratio", limits.max_latency_regression)] if ratio else []
    if absolute:
        checks.append(("latency_p50_ms", limits.max_absolute_latency_regression))
    for figure, limit in checks:
        base, now = getattr(b, figure), getattr(n, figure)
        for batch in sorted(set(base) | set(now), key=int):
            label = f"{figure}@{batch}"
            if batch not in base or batch not in now:
                rows.append(_absent(name, label, base.get(batch), now.get(batch)))
                continue
            growth = _rel(now[batch], base[batch])
            gated = matched and (latency_batches is None or batch in latency_batches)
            rows.append(Row(name, label, base[batch], now[batch], f"{growth:+.1%}",
                            f"+{limit:.0%}" if gated else ("not gated" if matched else "other CPU"),
                            ("FAIL" if growth > limit else "PASS") if gated else "INFO"))
    return rows


LATENCY_FIGURES = ("latency_ratio", "latency_p50_ms")


def latency_failures(outcome: Outcome) -> list[Row]:
    """The failed latency rows: the ones a second timing can confirm or clear."""
    return [r for r in outcome.rows if r.verdict == "FAIL" and r.figure.split("@")[0] in LATENCY_FIGURES]


def confirm(outcome: Outcome, retimed: dict[str, dict[str, dict[str, float]]], limits: Limits) -> None:
    """Re-judge each failed latency row on a second timing of the same files (benchmarks/retime.py):
    it stays FAIL only when the second timing is also past the limit, else it passes as noise.
    Both figures are shown; the baseline is the same one."""
    limit_of = {"latency_ratio": limits.max_latency_regression,
                "latency_p50_ms": limits.max_absolute_latency_regression}
    for row in latency_failures(outcome):
        figure, batch = row.figure.split("@")
        again = retimed.get(row.model, {}).get(figure, {}).get(batch)
        if again is None or not isinstance(row.baseline, float):
            continue
        growth, first = _rel(again, row.baseline), row.change
        confirmed = growth > limit_of[figure]
        row.change, row.verdict = f"{first}, again {growth:+.1%}", "FAIL" if confirmed else "PASS"
        outcome.notes.append(f"{row.model} {row.figure}: {first} on the run's timing, {growth:+.1%} timed again: "
                             + ("confirmed" if confirmed else "not reproduced, passed as noise"))


def _settings_warnings(now: dict | None, base: dict | None) -> list[str]:
    """Refuse (exit 2) when both sides record their settings and they differ; warn when one does not."""
    if now is None or base is None:
        side = "baseline" if base is None else "report"
        return [f"the {side} records no settings, so it cannot be checked that both come from the same config; "
                "regenerate it with this compress version"]
    differ = [f"{k} {base.get(k)!r} vs {now.get(k)!r}" for k in sorted(set(now) | set(base)) if now.get(k) != base.get(k)]
    if differ:
        raise CompressError("report and baseline come from different settings (baseline vs report): "
                            + "; ".join(differ) + "; compare runs of one config, or regenerate the baseline")
    return []


def _runtime_agreement(report: dict, name: str) -> dict[str, float | None]:
    """Top-1 agreement with ONNX Runtime of `name` in every other runtime the report measured;
    None (shown, not gated) when that runtime cannot load the file, e.g. a QOperator int8 file
    made for ONNX Runtime on purpose."""
    return {runtime: (m["agreement_with_onnxruntime"] if m.get("loads") else None)
            for runtime, r in (report.get("runtimes") or {}).items()
            for model, m in r["models"].items() if model == name}


def _exact_rows(name: str, figure: str, base: int | None, now: int | None, limit: float) -> list[Row]:
    """A MACs or params row; none when neither side knows the figure (a foreign ONNX file)."""
    if base is None and now is None:
        return []
    if base is None or now is None:
        return [_absent(name, figure, base, now)]
    growth = _rel(now, base)
    return [Row(name, figure, base, now, f"{growth:+.1%}", f"+{limit:.0%}", "FAIL" if growth > limit else "PASS")]


def _absent(name: str, figure: str, base, now) -> Row:
    """A figure only one side has: NEW when the baseline lacks it, MISSING (a failure) otherwise."""
    shown = lambda v: len(v) if isinstance(v, list) else v  # noqa: E731  (an operator list: its length)
    return Row(name, figure, shown(base), shown(now), "absent from " + ("baseline" if base is None else "report"), "-",
               "NEW" if base is None else "MISSING")


def failed(rows: list[Row]) -> bool:
    return any(r.verdict in ("FAIL", "MISSING") for r in rows)


def render(rows: list[Row]) -> str:
    def fmt(v):
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    table = [("model", "figure", "baseline", "now", "change", "limit", "verdict")]
    table += [(r.model, r.figure, fmt(r.baseline), fmt(r.now), r.change, r.limit, r.verdict) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)
