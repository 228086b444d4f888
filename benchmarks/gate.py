"""The CI gate: compare a report with a committed baseline and say what moved.

Compared by default: accuracy (points), ONNX file size (relative), MACs (relative; counted at
export, so exact: the one figure with no noise at all, which catches added compute that a
tiny CI model's latency barely shows), and latency as the *ratio to the reference model
measured in the same run* (relative change of that ratio) at every batch size both sides
have. Ratios survive a different or busier machine; absolute milliseconds do not, so they are
compared only when asked, with a warning if the CPU differs.
Exit codes from the CLI: 0 pass, 1 regression, 2 unusable input.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from compress.benchmarks.runtimes import MIN_AGREEMENT
from compress.core.errors import CompressError
from compress.core.roster import TEACHER

BASELINE_FORMAT = "compress-baseline/1"

# settings that change the figures: a report and a baseline that differ in any of them measure
# different things, and comparing them would call the difference a regression
COMPARED_SETTINGS = ("seed", "data.resize", "data.crop", "teacher.arch", "teacher.epochs", "distill.arch",
                     "distill.epochs", "prune.enabled", "prune.target", "prune.params_ratio", "prune.macs_ratio",
                     "prune.epochs", "quantize.enabled", "quantize.format", "bench.threads", "bench.batch_sizes",
                     "bench.warmup", "bench.runs", "bench.calls_per_sample", "bench.processes")


@dataclass
class Limits:
    max_accuracy_drop: float = 1.0  # points of top-1 accuracy
    max_latency_regression: float = 0.15  # relative growth of the same-run latency ratio
    max_size_growth: float = 0.05  # relative growth of the ONNX file
    # relative growth of MACs; they are exact, so this only leaves room for a pruner's rounding
    max_compute_growth: float = 0.02
    max_absolute_latency_regression: float = 0.15  # only with absolute=True


@dataclass
class Row:
    model: str
    figure: str
    baseline: float | None
    now: float | None
    change: str
    limit: str
    verdict: str  # PASS | FAIL | MISSING | NEW


def load_json(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"{what} {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompressError(f"{what} {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict) or not data["models"]:
        raise CompressError(f"{what} {path} has no `models` table; expected a compress report.json or baseline")
    return data


def _figures(model: dict, where: str, name: str) -> dict:
    try:
        return {"accuracy": float(model["accuracy"]), "onnx_bytes": int(model["onnx_bytes"]),
                "macs": int(model["macs"]) if model.get("macs") is not None else None,
                "latency_ratio": {str(b): float(r) for b, r in model["latency_ratio_to_reference"].items()},
                "latency_p50_ms": {str(b): float(s["p50"]) for b, s in model["latency_ms_by_batch"].items()}}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CompressError(f"{where}: model {name!r} lacks figure {exc}; was it written by this compress version?") from None


def make_baseline(report: dict, where: str = "report") -> dict:
    """The figures the gate compares, with the environment they were measured in."""
    return {"format": BASELINE_FORMAT,
            "reference": report.get("benchmark", {}).get("reference", TEACHER),
            "environment": report.get("environment", {}),
            "settings": report.get("settings"),
            "models": {n: _figures(m, where, n) for n, m in report["models"].items()}}


def median_baseline(reports: list[dict], where: list[str]) -> dict:
    """One baseline from several reports of the same config: the median of every figure, so a
    single lucky or unlucky run does not set the bar. Models must be the same in all of them."""
    import numpy as np
    bases = [make_baseline(r, w) for r, w in zip(reports, where)]
    names = list(bases[0]["models"])
    for b, w in zip(bases[1:], where[1:]):
        if list(b["models"]) != names or b["reference"] != bases[0]["reference"] \
                or b["settings"] != bases[0]["settings"]:
            raise CompressError(f"{w} has other models, settings or another reference than {where[0]}; "
                                "a baseline is built from reports of one config")
    merged = dict(bases[0], runs=len(bases), models={})
    for name in names:
        models = [b["models"][name] for b in bases]
        merged["models"][name] = {
            "accuracy": float(np.median([m["accuracy"] for m in models])),
            "onnx_bytes": int(np.median([m["onnx_bytes"] for m in models])),
            "macs": (int(np.median([m["macs"] for m in models]))
                     if all(m.get("macs") is not None for m in models) else None),
            **{fig: {k: float(np.median([m[fig][k] for m in models])) for k in models[0][fig]}
               for fig in ("latency_ratio", "latency_p50_ms")},
        }
    return merged


def as_baseline(data: dict, where: str) -> dict:
    return data if data.get("format") == BASELINE_FORMAT else make_baseline(data, where)


def _rel(now: float, base: float) -> float:
    return now / base - 1.0 if base else float("inf")


def compare(report: dict, baseline: dict, limits: Limits, models: list[str] | None = None,
            absolute: bool = False, latency_batches: list[str] | None = None) -> tuple[list[Row], list[str]]:
    """Rows for every compared figure, and warnings (e.g. a different CPU for absolute times).

    `latency_batches` restricts which batch sizes' latency can fail the check; the others are
    still shown, with verdict INFO (a noisy runner may make batch-1 figures useless to gate).
    """
    now, base = make_baseline(report, "report"), as_baseline(baseline, "baseline")
    if now["reference"] != base["reference"]:
        raise CompressError(f"report measures ratios against {now['reference']!r} but the baseline against "
                            f"{base['reference']!r}; they cannot be compared")
    warnings = _settings_warnings(now.get("settings"), base.get("settings"))
    cpu = lambda env: (env.get("cpu"), tuple(env.get("isa", [])))  # noqa: E731
    if cpu(now["environment"]) != cpu(base["environment"]):
        what = "absolute latency compared" if absolute else "latency ratios compared (int8 speed depends on the ISA)"
        warnings.append(f"{what} across CPUs: baseline {cpu(base['environment'])}, now {cpu(now['environment'])}")
    names = models or sorted(set(base["models"]) | set(now["models"]), key=lambda n: (n != base["reference"], n))
    rows: list[Row] = []
    for name in names:
        b, n = base["models"].get(name), now["models"].get(name)
        if b is None or n is None:
            rows.append(Row(name, "model", None, None, "absent from " + ("baseline" if b is None else "report"),
                            "-", "NEW" if b is None else "MISSING"))
            continue
        drop = 100 * (b["accuracy"] - n["accuracy"])
        rows.append(Row(name, "accuracy", b["accuracy"], n["accuracy"], f"{-drop:+.2f} pts",
                        f"-{limits.max_accuracy_drop} pts", "FAIL" if drop > limits.max_accuracy_drop else "PASS"))
        growth = _rel(n["onnx_bytes"], b["onnx_bytes"])
        rows.append(Row(name, "onnx_bytes", b["onnx_bytes"], n["onnx_bytes"], f"{growth:+.1%}",
                        f"+{limits.max_size_growth:.0%}", "FAIL" if growth > limits.max_size_growth else "PASS"))
        rows += _macs_rows(name, b.get("macs"), n.get("macs"), limits.max_compute_growth)
        rows += [Row(name, f"agreement@{runtime}", None, agreement, "-" if agreement is None else f"{agreement:.4f}",
                     f">= {MIN_AGREEMENT}", "INFO" if agreement is None else
                     ("PASS" if agreement >= MIN_AGREEMENT else "FAIL"))
                 for runtime, agreement in _runtime_agreement(report, name).items()]
        checks = [("latency_ratio", limits.max_latency_regression)] if name != base["reference"] else []
        if absolute:
            checks.append(("latency_p50_ms", limits.max_absolute_latency_regression))
        for figure, limit in checks:
            for batch in sorted(set(b[figure]) | set(n[figure]), key=int):
                label = f"{figure}@{batch}"
                if batch not in b[figure] or batch not in n[figure]:
                    rows.append(_absent(name, label, b[figure].get(batch), n[figure].get(batch)))
                    continue
                growth = _rel(n[figure][batch], b[figure][batch])
                gated = latency_batches is None or batch in latency_batches
                verdict = ("FAIL" if growth > limit else "PASS") if gated else "INFO"
                rows.append(Row(name, label, b[figure][batch], n[figure][batch], f"{growth:+.1%}",
                                f"+{limit:.0%}" if gated else "not gated", verdict))
    return rows, warnings


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


def _macs_rows(name: str, base: int | None, now: int | None, limit: float) -> list[Row]:
    """The MACs row; none when neither side knows the model's MACs (a foreign ONNX file)."""
    if base is None and now is None:
        return []
    if base is None or now is None:
        return [_absent(name, "macs", base, now)]
    growth = _rel(now, base)
    return [Row(name, "macs", base, now, f"{growth:+.1%}", f"+{limit:.0%}", "FAIL" if growth > limit else "PASS")]


def _absent(name: str, figure: str, base, now) -> Row:
    """A figure only one side has: NEW when the baseline lacks it, MISSING (a failure) otherwise."""
    return Row(name, figure, base, now, "absent from " + ("baseline" if base is None else "report"), "-",
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
