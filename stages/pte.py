"""The ExecuTorch deliverable (deploy.target = executorch): the final fp32 student as an
XNNPACK-delegated .pte and its int8 version (ExecuTorch's PT2E recipe), both measured in
ExecuTorch on this CPU (val accuracy, batch-1 p50); the faster one within
quantize.max_accuracy_drop ships as deploy/model.pte. The ONNX candidates are still chosen in
ONNX Runtime, for clients of the ONNX files."""
from __future__ import annotations

import numpy as np

from compress.benchmarks.measure import percentiles
from compress.core.models import load_model
from compress.core.roster import PTE_INT8, checkpoint_path, pte_path
from compress.core.stage import Context
from compress.exports.executorch import ExecuTorchModel, version, write_pte
from compress.exports.quantize import Measured, choose


def choose_pte(ctx: Context, source_name: str, calibration: np.ndarray, val: np.ndarray, labels: np.ndarray) -> dict:
    cfg, bench = ctx.cfg, ctx.cfg.bench
    model, _ = load_model(ctx.run.path(checkpoint_path(source_name)))
    files = {"fp32": pte_path(source_name), "int8": PTE_INT8}
    for name, relative in files.items():
        with ctx.run.atomic(relative) as tmp:
            write_pte(model, tmp, cfg.data.crop, calibration if name == "int8" else None)
    measured, predictions = {}, {}
    for name, relative in files.items():
        path = ctx.run.path(relative)
        runtime = ExecuTorchModel(path, bench.threads)
        predictions[name] = runtime.logits(val).argmax(1)
        p50 = percentiles(runtime.latency_ms(val, bench.warmup, bench.runs))["p50"]
        measured[name] = Measured(name, p50, float((predictions[name] == labels).mean()), path.stat().st_size)
    winner, reason = choose([measured["int8"]], measured["fp32"], cfg.quantize.max_accuracy_drop)
    ctx.log(f"executorch: chose {winner} .pte ({reason})")
    return {"runtime_version": version(), "chosen": winner, "file": files[winner], "reason": reason,
            "int8_agreement_with_fp32": float(np.mean(predictions["int8"] == predictions["fp32"])),
            "candidates": {n: vars(m) for n, m in measured.items()}}
