"""The baseline file the CI gate compares against: one entry per testbed, read and written here.

    {"format": "compress-baseline/2", "reference": "teacher", "settings": {...},
     "entries": [{"testbed": {vendor, cpu, isa, threads}, "environment": {...}, "runs": 5,
                  "models": {name: {accuracy, onnx_bytes, macs, params, operators,
                                    latency_ratio: {batch: r}, latency_p50_ms: {batch: ms}}},
                  "comparisons": [{model, against, delta, n, only_a_right, only_b_right}]}]}

An entry holds what was measured on its testbed: each is the median of several runs there. Old
single-CPU files (`compress-baseline/1`) and plain report.json files load as one entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from compress.benchmarks.testbed import Testbed
from compress.core.documents import read_json
from compress.core.errors import CompressError
from compress.core.roster import TEACHER

FORMAT = "compress-baseline/2"
OLD_FORMAT = "compress-baseline/1"


@dataclass
class ModelFigures:
    """What the gate compares for one model."""
    accuracy: float
    onnx_bytes: int
    macs: int | None
    latency_ratio: dict[str, float]
    latency_p50_ms: dict[str, float]
    params: int | None = None
    operators: list[str] | None = None  # None: not recorded (files older than the operator gate)

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class Pair:
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


@dataclass
class Entry:
    """The figures measured on one testbed."""
    testbed: Testbed
    models: dict[str, ModelFigures]
    comparisons: list[Pair] = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    runs: int = 1

    def to_dict(self) -> dict:
        return {"testbed": self.testbed.to_dict(), "environment": self.environment, "runs": self.runs,
                "models": {n: m.to_dict() for n, m in self.models.items()},
                "comparisons": [dict(vars(p)) for p in self.comparisons]}


@dataclass
class Baseline:
    reference: str
    settings: dict | None
    entries: list[Entry]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "reference": self.reference, "settings": self.settings,
                "entries": [e.to_dict() for e in self.entries]}

    def entry_for(self, testbed: Testbed) -> Entry | None:
        return next((e for e in self.entries if e.testbed == testbed), None)

    def closest(self, testbed: Testbed) -> Entry:
        return max(self.entries, key=lambda e: e.testbed.likeness(testbed))

    def with_entry(self, entry: Entry) -> Baseline:
        """This baseline with `entry` added, or replacing the one of the same testbed."""
        kept = [e for e in self.entries if e.testbed != entry.testbed]
        return replace(self, entries=[*kept, entry])


def load_json(path: str | Path, what: str) -> dict:
    """A report.json or baseline file (any format), checked to be one."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise CompressError(f"{what} {path} is not a JSON object; expected a compress report.json or baseline")
    if data.get("format") == FORMAT:
        if not isinstance(data.get("entries"), list) or not data["entries"]:
            raise CompressError(f"{what} {path} has no `entries`; write it with `compress baseline`")
    elif not isinstance(data.get("models"), dict) or not data["models"]:
        raise CompressError(f"{what} {path} has no `models` table; expected a compress report.json or baseline")
    return data


def _model_figures(model: dict, where: str, name: str) -> ModelFigures:
    """A report's model, as the gate sees it."""
    try:
        return ModelFigures(
            accuracy=float(model["accuracy"]), onnx_bytes=int(model["onnx_bytes"]),
            macs=int(model["macs"]) if model.get("macs") is not None else None,
            params=int(model["params"]) if model.get("params") is not None else None,
            operators=list(model["operators"]) if model.get("operators") is not None else None,
            latency_ratio={str(b): float(r) for b, r in model["latency_ratio_to_reference"].items()},
            latency_p50_ms={str(b): float(s["p50"]) for b, s in model["latency_ms_by_batch"].items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CompressError(f"{where}: model {name!r} lacks figure {exc}; was it written by this compress version?") from None


def _stored_figures(model: dict, where: str, name: str) -> ModelFigures:
    """A baseline file's model (format 1 or 2)."""
    try:
        return ModelFigures(
            accuracy=float(model["accuracy"]), onnx_bytes=int(model["onnx_bytes"]), macs=model.get("macs"),
            params=model.get("params"), operators=model.get("operators"),
            latency_ratio={str(b): float(r) for b, r in model["latency_ratio"].items()},
            latency_p50_ms={str(b): float(r) for b, r in model["latency_p50_ms"].items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CompressError(f"{where}: model {name!r} lacks figure {exc}; regenerate it with `compress baseline`") from None


def _pairs(comparisons: list[dict]) -> list[Pair]:
    return [Pair(c["model"], c["against"], float(c["delta"]), int(c["n"]), c.get("only_a_right"), c.get("only_b_right"))
            for c in comparisons or []]


def entry_from_report(report: dict, where: str = "report") -> Entry:
    """The gate's view of one report.json: its testbed, every model's figures, its paired differences."""
    env = report.get("environment", {})
    return Entry(testbed=Testbed.from_environment(env),
                 models={n: _model_figures(m, where, n) for n, m in report["models"].items()},
                 comparisons=_pairs(report.get("comparisons", [])), environment=env)


def read(data: dict, where: str) -> Baseline:
    """A baseline from what load_json returned: format 2, an old format-1 file, or a report.json."""
    if data.get("format") == FORMAT:
        try:
            entries = [Entry(testbed=Testbed.from_dict(e["testbed"]),
                             models={n: _stored_figures(m, where, n) for n, m in e["models"].items()},
                             comparisons=_pairs(e.get("comparisons", [])), environment=e.get("environment", {}),
                             runs=int(e.get("runs", 1)))
                       for e in data["entries"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CompressError(f"{where}: an entry lacks {exc}; regenerate it with `compress baseline`") from None
        return Baseline(data.get("reference", TEACHER), data.get("settings"), entries)
    if data.get("format") == OLD_FORMAT:  # one CPU, no testbed key: its environment says which
        entry = Entry(testbed=Testbed.from_environment(data.get("environment", {})),
                      models={n: _stored_figures(m, where, n) for n, m in data["models"].items()},
                      environment=data.get("environment", {}), runs=int(data.get("runs", 1)))
        return Baseline(data.get("reference", TEACHER), data.get("settings"), [entry])
    return from_reports([data], [where])


def from_reports(reports: list[dict], where: list[str]) -> Baseline:
    """One entry from several reports of the same config on the same testbed: the median of every
    figure, so a single lucky or unlucky run does not set the bar."""
    entries = [entry_from_report(r, w) for r, w in zip(reports, where)]
    reference = reports[0].get("benchmark", {}).get("reference", TEACHER)
    settings = reports[0].get("settings")
    first = entries[0]
    for r, e, w in zip(reports[1:], entries[1:], where[1:]):
        if list(e.models) != list(first.models) or r.get("benchmark", {}).get("reference", TEACHER) != reference \
                or r.get("settings") != settings:
            raise CompressError(f"{w} has other models, settings or another reference than {where[0]}; "
                                "a baseline is built from reports of one config")
        if e.testbed != first.testbed:
            raise CompressError(f"{w} was measured on {e.testbed.describe()}, {where[0]} on "
                                f"{first.testbed.describe()}; an entry is the median of runs on one testbed")
    models = {name: _median_figures([e.models[name] for e in entries], name, where) for name in first.models}
    pairs = [_median_pair([p for e in entries for p in e.comparisons if (p.model, p.against) == (q.model, q.against)])
             for q in first.comparisons]
    entry = Entry(first.testbed, models, pairs, first.environment, runs=len(entries))
    return Baseline(reference, settings, [entry])


def _median(values: list) -> float | None:
    return None if any(v is None for v in values) else float(np.median(values))


def _median_figures(models: list[ModelFigures], name: str, where: list[str]) -> ModelFigures:
    ops = {tuple(m.operators) if m.operators is not None else None for m in models}
    if len(ops) > 1:
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


def _median_pair(pairs: list[Pair]) -> Pair:
    """The run whose difference is the median one (its discordant counts go with it)."""
    ranked = sorted(pairs, key=lambda p: p.delta)
    return ranked[(len(ranked) - 1) // 2]


def merge(existing: Baseline | None, new: Baseline, where: str) -> Baseline:
    """`existing` with `new`'s entry added or replacing its testbed's. Both must come from one config."""
    if existing is None:
        return new
    if existing.reference != new.reference or existing.settings != new.settings:
        differ = sorted(k for k in set(existing.settings or {}) | set(new.settings or {})
                        if (existing.settings or {}).get(k) != (new.settings or {}).get(k))
        raise CompressError(f"{where} holds entries of other settings ({', '.join(differ) or 'reference'}); "
                            "entries of one baseline come from one config: write a new file without --add")
    return existing.with_entry(new.entries[0])
