"""The int8 candidates of a fp32 ONNX model, measured for the choice the quantize stage makes:
every layout built from one pre-processed graph and scored on the selection split, the
per-layer sensitivity of the layout most likely to ship, a mixed-precision candidate when plain
post-training quantization misses the accuracy budget, and each candidate's batch-1 latency in
the runtime the edge team will use.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.core.budget import selection_accuracy, within_budget
from compress.core.config import BenchConfig, QuantizeConfig
from compress.core.errors import summary
from compress.exports.operators import vendor_domains
from compress.exports.quantize import Int8Recipe, Measured, build_candidate, quantize_int8
from compress.exports.runtimes import READS_ONNX, load
from compress.exports.sensitivity import layer_sensitivity
from compress.exports.session import cpu_session
from compress.measure.latency import percentiles, predictions
from compress.measure.suite import time_latency

REFERENCE_ONLY = ("dynamic", "fp16")  # measured and listed, chosen only when named in quantize.format


def shippable_layouts(candidates: list, target: str) -> list[str]:
    """The static int8 layouts a target runtime may ship: QOperator layouts need ONNX Runtime's own
    operators, so only deploy.target = onnxruntime takes them."""
    static = [c for c in candidates if c not in REFERENCE_ONLY]
    return [c for c in static if target == "onnxruntime" or not c.startswith("qoperator")]
SENSITIVITY_IMAGES = 32  # calibration images the per-layer debugger runs on


@dataclass
class Trial:
    """What every int8 candidate is built from and scored on."""

    source: Path  # the fp32 ONNX file
    prepped: Path  # ONNX Runtime's pre-processed graph of it (shape inference, BatchNorm folded)
    tmp: Path  # where candidates are written
    calibration: np.ndarray  # training images for activation ranges
    val: np.ndarray  # the selection split
    labels: np.ndarray
    threads: int
    metric: str = "top1"  # bench.metric: what the choice ranks accuracy by

    def predict(self, path: Path) -> np.ndarray:
        return predictions(cpu_session(path, self.threads), self.val)

    def accuracy(self, predicted: np.ndarray) -> float:
        return selection_accuracy(predicted, self.labels, self.metric)


def build_all(trial: Trial, names: list[str], cfg: QuantizeConfig,
              warn: Callable[[str], None]) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """Every named candidate (pre-processing done once), and fp32's and each one's val predictions.
    A candidate ONNX Runtime cannot build or run (an operator its int8 kernels lack for this model)
    is left out with a warning: it is a candidate that failed, not a run that failed."""
    files, preds = {}, {"fp32": trial.predict(trial.source)}
    for name in names:
        path = trial.tmp / f"{name}.onnx"
        try:
            build_candidate(trial.source, path, trial.calibration, cfg, name, trial.prepped)
            preds[name] = trial.predict(path)
        except Exception as exc:
            warn(f"int8 candidate {name} left out: ONNX Runtime could not build or run it "
                 f"({summary(exc, 120)})")
            continue
        files[name] = path
    return files, preds


def meets_budget(trial: Trial, preds: dict[str, np.ndarray], name: str, max_drop: float) -> bool:
    return within_budget(trial.accuracy(preds["fp32"]), trial.accuracy(preds[name]), max_drop)


def most_likely_layout(trial: Trial, preds: dict[str, np.ndarray], static: list[str]) -> str | None:
    """The layout most likely to ship: best val accuracy, a standard-ONNX (QDQ) one on ties."""
    if not static:
        return None
    return max(static, key=lambda n: (trial.accuracy(preds[n]), Int8Recipe.parse(n).layout == "qdq"))


def sensitivity(trial: Trial, layout: str | None, cfg: QuantizeConfig) -> list:
    """Per-layer ranking for `layout`, measured on its QDQ form (the debugger reads QDQ graphs)."""
    if layout is None:
        return []
    qdq = trial.tmp / "sensitivity-qdq.onnx"
    quantize_int8(trial.source, qdq, trial.calibration, cfg, Int8Recipe.parse(layout).as_qdq().name, trial.prepped)
    return layer_sensitivity(trial.prepped, qdq, trial.calibration[:SENSITIVITY_IMAGES])


def mixed_candidate(trial: Trial, layout: str, ranking: list, fp32_accuracy: float, cfg: QuantizeConfig,
                    warn: Callable[[str], None]) -> dict | None:
    """The `layout` with the k most sensitive layers in float, k the smallest (1, 2, 4, ...) that
    meets quantize.max_accuracy_drop on val; None, said through `warn`, when even all ranked layers do not."""
    layers = list(dict.fromkeys(r["node"] for r in ranking))
    tried: list[dict] = []
    k = 1
    while True:
        k = min(k, len(layers))
        path = trial.tmp / f"mixed-{k}.onnx"
        quantize_int8(trial.source, path, trial.calibration, cfg, layout, trial.prepped, keep_float=layers[:k])
        preds = trial.predict(path)
        acc = trial.accuracy(preds)
        tried.append({"k": k, "accuracy": acc})
        if within_budget(fp32_accuracy, acc, cfg.max_accuracy_drop):
            return {"name": f"mixed_{layout}", "path": path, "predictions": preds, "accuracy": acc, "k": k,
                    "float_layers": layers[:k], "search": tried}
        if k == len(layers):
            warn(f"no mixed-precision {layout} met quantize.max_accuracy_drop = {cfg.max_accuracy_drop} (tried {tried})")
            return None
        k *= 2


def measure(trial: Trial, files: dict[str, Path], preds: dict[str, np.ndarray], bench: BenchConfig,
            target: str) -> tuple[Measured, list[Measured]]:
    """(fp32, candidates): p50 in the target runtime, val accuracy, bytes, operator domains."""
    times = batch1_times(files, trial.val, bench, target)

    def measured(n: str, path: Path) -> Measured:
        p50 = percentiles(times[n])["p50"] if times[n] else float("inf")  # inf: does not load there
        return Measured(n, p50, trial.accuracy(preds[n]), path.stat().st_size, vendor_domains(path))
    return measured("fp32", files["fp32"]), [measured(n, p) for n, p in files.items() if n != "fp32"]


def batch1_times(files: dict[str, Path], val: np.ndarray, bench: BenchConfig, target: str) -> dict[str, list[float]]:
    """Batch-1 timings of every file in the runtime the edge team will use: ONNX Runtime in fresh
    processes, or OpenVINO (a file it cannot load gets inf and never wins). ExecuTorch's choice is
    made on its own .pte files (methods.pte), so its ONNX candidates are timed in ONNX Runtime."""
    if target not in READS_ONNX:
        return time_latency(files, val, [1], bench).samples[1]
    times = {}
    for name, path in files.items():
        try:
            times[name] = load(target, path, bench.threads).latency_ms(val, bench.warmup, bench.runs)
        except Exception:
            times[name] = [float("inf")]
    return times
