"""The whole judgement of `compress check`: this run against the committed baseline file (the
portable figures) and, when given, against a reference run built on this runner from the commit
the file names (accuracy on the same CPU, and latency A/B in one timing session).

Exit codes from the CLI: 0 pass (INCONCLUSIVE latency included: it is said, not failed),
1 regression, 2 unusable input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.core.documents import Report
from compress.core.errors import CompressError
from compress.gate.ab import ABTiming, latency_rows, time_ab
from compress.gate.baseline import Baseline, figures, pairs
from compress.gate.portable import absent, paired_rows, portable_rows, recorded_rows
from compress.gate.verdict import Figure, Row, Verdict, failed
from compress.measure.runtimes import MIN_AGREEMENT


@dataclass
class Limits:
    max_accuracy_drop: float = 1.0  # points of top-1 accuracy
    max_latency_regression: float = 0.10  # relative p50 growth over the reference run, at 95% confidence
    max_size_growth: float = 0.05  # relative growth of the ONNX file
    # relative growth of MACs and params; they are exact, so this only leaves room for a pruner's rounding
    max_compute_growth: float = 0.02


@dataclass
class Outcome:
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return failed(self.rows)

    @property
    def inconclusive(self) -> list[Row]:
        return [r for r in self.rows if r.verdict is Verdict.INCONCLUSIVE]

    @property
    def gated(self) -> int:
        return sum(r.verdict not in (Verdict.INFO, Verdict.NEW) for r in self.rows)


def judge(report: Report, baseline: Baseline, limits: Limits, models: list[str] | None = None,
          reference: Report | None = None, timing: ABTiming | None = None,
          latency_batches: list[int] | None = None) -> Outcome:
    """Rows for every compared figure. `reference`: the reference run's report (same runner);
    `timing`: the A/B latency session of both runs' files."""
    if report.reference != baseline.reference:
        raise CompressError(f"report measures ratios against {report.reference!r} but the baseline against "
                            f"{baseline.reference!r}; they cannot be compared")
    warnings = settings_warnings(report.settings, baseline.settings, "baseline")
    if reference is not None:
        settings_warnings(report.settings, reference.settings, "reference run")
    now, base = figures(report), baseline.models
    names = models or sorted(set(base) | set(now), key=lambda n: (n != report.reference, n))
    # a search's points differ between runs (a prune round more or less): it compares what both hold,
    # and follows its chosen model under the stable name `deployable`
    search = bool(report.pareto)
    rows: list[Row] = []
    for name in names:
        b, n = base.get(name), now.get(name)
        if b is None or n is None:
            lost = Verdict.INFO if search and name not in (report.reference, "deployable") else Verdict.MISSING
            rows.append(Row(model=name, figure=Figure.MODEL, change="absent from " + ("baseline" if b is None else "report"),
                            verdict=Verdict.NEW if b is None else lost))
            continue
        rows += portable_rows(name, b, n, limits.max_size_growth, limits.max_compute_growth)
        rows += paired_rows(name, baseline.comparisons, pairs(report), limits.max_accuracy_drop)
        rows += agreement_rows(report, name)
        rows += recorded_rows(name, b, n, ratio=name != report.reference)
        if reference is not None:
            rows += reference_accuracy_rows(name, reference, report, limits.max_accuracy_drop)
    notes: list[str] = []
    if timing is not None:
        wanted = [r for r in latency_rows(timing, limits.max_latency_regression, latency_batches) if r.model in names]
        rows += wanted
        contention = timing.contention
        if contention.get("busy"):
            notes.append("the machine was busy while timing (" + "; ".join(contention.get("reasons", [])) +
                         "): latency past the limit is INCONCLUSIVE, not a failure; rerun on a quiet runner")
    else:
        notes.append("latency not gated: no --reference-run (stored milliseconds from another machine are no "
                     "reference; build the reference commit's run on this runner, see the README's CI use)")
    return Outcome(rows, notes, warnings)


def reference_accuracy_rows(name: str, reference: Report, report: Report, limit: float) -> list[Row]:
    """Top-1 accuracy against the reference run trained on this runner (same CPU, so the same code
    trains the same weights)."""
    if name not in reference.models:
        return [absent(name, Figure.ACCURACY, None, report.models[name].accuracy).model_copy(
            update={"source": "reference run"})]
    b, n = reference.models[name].accuracy, report.models[name].accuracy
    drop = 100 * (b - n)
    return [Row(model=name, figure=Figure.ACCURACY, baseline=b, now=n, change=f"{-drop:+.2f} pts", limit=f"-{limit} pts",
                verdict=Verdict.FAIL if drop > limit else Verdict.PASS, source="reference run")]


def agreement_rows(report: Report, name: str) -> list[Row]:
    """Top-1 agreement with ONNX Runtime of `name` in every other runtime the report measured;
    INFO when that runtime cannot load the file (a QOperator int8 file made for ONNX Runtime)."""
    rows = []
    for runtime, measured in (report.runtimes or {}).items():
        m = measured.models.get(name)
        if m is None:
            continue
        value = m.agreement_with_onnxruntime if m.loads else None
        rows.append(Row(model=name, figure=Figure.AGREEMENT, against=runtime, now=value,
                        change="does not load" if value is None else f"{value:.4f}", limit=f">= {MIN_AGREEMENT}",
                        verdict=Verdict.INFO if value is None else
                        (Verdict.PASS if value >= MIN_AGREEMENT else Verdict.FAIL), source="this run"))
    return rows


def settings_warnings(now: dict | None, base: dict | None, what: str) -> list[str]:
    """Refuse (exit 2) when both sides record their settings and they differ; warn when one does not."""
    if now is None or base is None:
        side = what if base is None else "report"
        return [f"the {side} records no settings, so it cannot be checked that both come from the same config; "
                "regenerate it with this compress version"]
    differ = [f"{k} {base.get(k)!r} vs {now.get(k)!r}" for k in sorted(set(now) | set(base)) if now.get(k) != base.get(k)]
    if differ:
        raise CompressError(f"report and {what} come from different settings ({what} vs report): "
                            + "; ".join(differ) + "; compare runs of one config, or rebuild the " + what)
    return []


def report_files(report: Report, root: Path, what: str) -> dict[str, Path]:
    """name -> ONNX file of every model the report timed, resolved beside it; a clear error when one is gone."""
    files = {}
    for name, model in report.models.items():
        given = Path(model.onnx)
        # a run's report names its files relative to the run directory; `compress bench` as given
        path = next((p for p in (root / given, given) if p.is_file()), root / given)
        if not path.is_file():
            raise CompressError(f"{path} (model {name!r} of the {what}) is missing; the A/B timing needs the run "
                                "directory's ONNX files beside its report.json")
        files[name] = path
    return files


AB_PROCESSES = 12  # CI models, 600 rounds: 12 processes halved the interval of 6 (int8 batch 1: ±6% vs ±12%) in the same time


def time_both(report: Report, root: Path, reference: Report, reference_root: Path,
              models: list[str] | None = None, processes: int = AB_PROCESSES) -> ABTiming:
    """The A/B session, under this run's bench settings (threads, batch sizes, warmup, rounds), its
    rounds split over `processes` fresh processes. The inputs are seeded standard-normal images of
    the benchmarked shape: dense kernels take the same time whatever the pixel values."""
    bench = report.benchmark
    if not bench.input:
        raise CompressError("the report's benchmark section records no input shape, so its files cannot be timed")
    candidate = report_files(report, root, "report")
    baseline = report_files(reference, reference_root, "reference run")
    if models:
        candidate = {n: p for n, p in candidate.items() if n in models}
    batches = sorted(set(bench.batch_sizes))
    images = np.random.default_rng(0).standard_normal([max(batches), *bench.input[1:]], dtype=np.float32)
    return time_ab(baseline, candidate, images, batches, bench.threads, bench.warmup, bench.runs, processes,
                   bench.calls_per_sample)
