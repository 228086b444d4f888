"""The ExecuTorch choice (deploy.target = executorch): the final fp32 student as an
XNNPACK-delegated .pte and its int8 version (ExecuTorch's PT2E recipe), both measured in
ExecuTorch on this CPU (val accuracy, batch-1 p50); the faster one within the accuracy budget is
the one to ship. The ONNX candidates are still chosen in ONNX Runtime, for clients of the ONNX
files."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from torch import nn

from compress.core.budget import selection_accuracy
from compress.core.config import BenchConfig
from compress.core.rundir import atomic_path
from compress.exports.executorch import ExecuTorchModel, version, write_pte
from compress.exports.quantize import Measured, choose
from compress.measure.latency import percentiles

log = logging.getLogger("compress")


def choose_pte(model: nn.Module, files: dict[str, Path], crop: int, calibration: np.ndarray, val: np.ndarray,
               labels: np.ndarray, bench: BenchConfig, max_accuracy_drop: float) -> dict:
    """Write `files["fp32"]` and `files["int8"]` (calibrated on `calibration`), measure both on
    `val`, and say which ships: {runtime_version, chosen, reason, int8_agreement_with_fp32, candidates}."""
    for name, path in files.items():
        with atomic_path(path) as tmp:
            write_pte(model, tmp, crop, calibration if name == "int8" else None)
    measured, predictions = {}, {}
    for name, path in files.items():
        runtime = ExecuTorchModel(path, bench.threads)
        predictions[name] = runtime.logits(val).argmax(1)
        p50 = percentiles(runtime.latency_ms(val, bench.warmup, bench.runs))["p50"]
        measured[name] = Measured(name, p50, selection_accuracy(predictions[name], labels, bench.metric),
                                  path.stat().st_size)
    winner, reason = choose([measured["int8"]], measured["fp32"], max_accuracy_drop)
    log.info("executorch: chose %s .pte (%s)", winner, reason)
    return {"runtime_version": version(), "chosen": winner, "reason": reason,
            "int8_agreement_with_fp32": float(np.mean(predictions["int8"] == predictions["fp32"])),
            "candidates": {n: vars(m) for n, m in measured.items()}}
