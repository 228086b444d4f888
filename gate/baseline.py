"""The committed baseline file: the figures a change must not move, and the commit whose run
they record (the reference run `.ci/run` rebuilds for the latency A/B).

    {"format": "compress-baseline/3", "reference": "teacher", "commit": "<sha of the recorded run's code>",
     "settings": {...}, "recorded_on": {cpu, vendor, isa, threads, ...}, "runs": 5,
     "models": {name: {accuracy, onnx_bytes, macs, params, operators, latency_ratio, latency_p50_ms}},
     "comparisons": [{model, against, delta, n, only_a_right, only_b_right}]}

What is gated against the file is what every CPU computes alike: MACs, params, file size, the
operator set and the paired accuracy differences of one run. Accuracy and latency are kept for
the record (INFO): stored milliseconds from another machine are not a reference (hosted runners
of one CPU model were seen 13-33% apart on the same files), so latency is judged A/B against the
reference run on the runner itself (compress.gate.ab).

Older files load: format 2 (one entry per CPU: the entry of the report's CPU, else the first),
format 1 and plain report.json files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ValidationError

from compress.core.documents import Report, read_json
from compress.core.errors import CompressError
from compress.core.roster import TEACHER

FORMAT = "compress-baseline/3"
OLDER = ("compress-baseline/2", "compress-baseline/1")


class ModelFigures(BaseModel):
    """What the gate compares for one model."""

    accuracy: float
    onnx_bytes: int
    macs: int | None = None
    params: int | None = None
    operators: list[str] | None = None  # None: not recorded (files older than the operator gate)
    latency_ratio: dict[str, float] = {}  # to the reference model, same run: kept for the record
    latency_p50_ms: dict[str, float] = {}


class Pair(BaseModel):
    """A paired accuracy difference measured in one run on the same images (model minus against)."""

    model: str
    against: str
    delta: float
    n: int
    only_a_right: int | None = None  # None: not recorded (derived from accuracies alone)
    only_b_right: int | None = None

    def variance(self) -> float | None:
        """Sampling variance of the paired difference (McNemar's discordant pairs), None if unknown."""
        if self.only_a_right is None or self.only_b_right is None or not self.n:
            return None
        return max((self.only_a_right + self.only_b_right) / self.n - self.delta ** 2, 0.0) / self.n


class Baseline(BaseModel):
    format: str = FORMAT
    reference: str = TEACHER
    commit: str | None = None  # the commit whose CI-config run these figures record
    settings: dict | None = None
    recorded_on: dict = {}  # the environment of the recording (for the record)
    runs: int = 1
    models: dict[str, ModelFigures]
    comparisons: list[Pair] = []

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def figures(report: Report) -> dict[str, ModelFigures]:
    """A report's models as the gate sees them."""
    return {n: ModelFigures(accuracy=m.accuracy, onnx_bytes=m.onnx_bytes, macs=m.macs, params=m.params,
                            operators=list(m.operators), latency_ratio=dict(m.latency_ratio_to_reference),
                            latency_p50_ms={b: s.p50 for b, s in m.latency_ms_by_batch.items()})
            for n, m in report.models.items()}


def pairs(report: Report) -> list[Pair]:
    return [Pair(model=c.model, against=c.against, delta=c.delta, n=c.n, only_a_right=c.only_a_right,
                 only_b_right=c.only_b_right) for c in report.comparisons]


def read_report(path: str | Path) -> Report:
    """A report.json, checked to be one (a baseline file given by mistake is named as such)."""
    data = read_json(path, "report")
    if isinstance(data, dict) and str(data.get("format", "")).startswith("compress-baseline"):
        raise CompressError(f"{path} is a baseline file, not a report.json; give the run's report.json")
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict) or not data["models"]:
        raise CompressError(f"report {path} has no `models` table; expected a compress report.json")
    return Report.from_dict(data, f"report {path}")


def read(path: str | Path, cpu: str = "") -> Baseline:
    """The baseline file at `path` in any format; for format 2, the entry recorded on `cpu` if any."""
    data = read_json(path, "baseline")
    if not isinstance(data, dict):
        raise CompressError(f"baseline {path} is not a JSON object; write it with `compress baseline`")
    try:
        if data.get("format") == FORMAT:
            return Baseline.model_validate(data)
        if data.get("format") in OLDER:
            return _older(data, cpu)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise CompressError(f"baseline {path}: {place}: {first['msg'].lower()}; regenerate it with "
                            "`compress baseline`") from None
    if isinstance(data.get("models"), dict) and data["models"]:
        return from_reports([read_report(path)])
    raise CompressError(f"baseline {path} has neither `models` nor `entries`; write it with `compress baseline`")


def _older(data: dict, cpu: str) -> Baseline:
    entries = data.get("entries") or [{"testbed": {"cpu": data.get("environment", {}).get("cpu", "")},
                                       "environment": data.get("environment", {}), "models": data.get("models", {}),
                                       "runs": data.get("runs", 1)}]
    entry = next((e for e in entries if e.get("testbed", {}).get("cpu") == cpu), entries[0])
    return Baseline(reference=data.get("reference", TEACHER), settings=data.get("settings"),
                    recorded_on=entry.get("environment", {}), runs=int(entry.get("runs", 1)),
                    models=entry["models"], comparisons=entry.get("comparisons", []))


def from_reports(reports: list[Report], where: list[str] | None = None, commit: str | None = None) -> Baseline:
    """One baseline from several reports of one config: the median of every figure, so a single
    lucky or unlucky run does not set the bar."""
    where = where or [f"report {i + 1}" for i in range(len(reports))]
    first = reports[0]
    for r, w in zip(reports[1:], where[1:]):
        if list(r.models) != list(first.models) or r.reference != first.reference or r.settings != first.settings:
            raise CompressError(f"{w} has other models, settings or another reference than {where[0]}; "
                                "a baseline is built from reports of one config")
    per_run = [figures(r) for r in reports]
    models = {name: _median_figures([f[name] for f in per_run], name, where) for name in per_run[0]}
    runs_pairs = [pairs(r) for r in reports]
    median_pairs = [_median_pair([p for ps in runs_pairs for p in ps if (p.model, p.against) == (q.model, q.against)])
                    for q in runs_pairs[0]]
    return Baseline(reference=first.reference, commit=commit, settings=first.settings,
                    recorded_on=vars(first.environment), runs=len(reports), models=models,
                    comparisons=median_pairs)


def _median(values: list) -> float | None:
    return None if any(v is None for v in values) else float(np.median(values))


def _median_figures(models: list[ModelFigures], name: str, where: list[str]) -> ModelFigures:
    if len({tuple(m.operators) if m.operators is not None else None for m in models}) > 1:
        raise CompressError(f"{name} uses different operators across {', '.join(where)} (an int8 layout chosen by "
                            "timing flips between runs?); pin quantize.format for a gated config")
    macs, params = _median([m.macs for m in models]), _median([m.params for m in models])
    return ModelFigures(
        accuracy=float(np.median([m.accuracy for m in models])),
        onnx_bytes=int(np.median([m.onnx_bytes for m in models])),
        macs=None if macs is None else int(macs), params=None if params is None else int(params),
        operators=models[0].operators,
        latency_ratio={b: float(np.median([m.latency_ratio[b] for m in models])) for b in models[0].latency_ratio},
        latency_p50_ms={b: float(np.median([m.latency_p50_ms[b] for m in models])) for b in models[0].latency_p50_ms})


def _median_pair(found: list[Pair]) -> Pair:
    """The run whose difference is the median one (its discordant counts go with it)."""
    ranked = sorted(found, key=lambda p: p.delta)
    return ranked[(len(ranked) - 1) // 2]
