"""The LiteRT choice (deploy.target = litert): the final fp32 student as an fp32 and an int8 .tflite
(compress.exports.litert), both run in LiteRT's own interpreter on this CPU. The faster one within
the accuracy budget (val, against the fp32 .tflite) ships as deploy/model.tflite. Each file is also
held against the ONNX file of the same weights in ONNX Runtime on the report split (top-1
agreement, accuracy), and timed at batch 1 interleaved with that ONNX file, so the report says
what LiteRT costs or saves beside ONNX Runtime on the same CPU."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from torch import nn

from compress.core.budget import selection_accuracy
from compress.core.config import BenchConfig
from compress.core.rundir import atomic_path
from compress.exports.litert import LiteRTModel, to_pixels, versions, write_tflite
from compress.exports.quantize import Measured, choose
from compress.exports.session import cpu_session, run_logits
from compress.measure.latency import percentiles

log = logging.getLogger("compress")
MIN_AGREEMENT = 0.99  # with the ONNX file of the same weights, as for OpenVINO


def interleaved_p50(litert: LiteRTModel, onnx_file: Path, pixels: np.ndarray, image: np.ndarray,
                    bench: BenchConfig) -> tuple[float, float]:
    """Batch-1 p50 (ms) of the .tflite and of the ONNX file, one call of each in turn."""
    session = cpu_session(onnx_file, bench.threads)
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(image[:1], np.float32)}
    for _ in range(bench.warmup):
        litert.latency_ms(pixels, 0, 1)
        session.run(None, feed)
    ours, theirs = [], []
    for _ in range(bench.runs):
        ours += litert.latency_ms(pixels, 0, 1)
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        theirs.append((time.perf_counter_ns() - t0) / 1e6)
    return percentiles(ours)["p50"], percentiles(theirs)["p50"]


def choose_tflite(model: nn.Module, files: dict[str, Path], onnx_file: Path, crop: int, mean: list[float],
                  std: list[float], calibration: np.ndarray, val: tuple[np.ndarray, np.ndarray],
                  report: tuple[np.ndarray, np.ndarray], bench: BenchConfig, max_accuracy_drop: float) -> dict:
    """Write `files["fp32"]` and `files["int8"]`, measure both, and say which ships:
    {runtime_version, converter, chosen, reason, io, candidates}. `val` and `report` are
    (normalised NCHW images, labels); `onnx_file` holds the same weights for ONNX Runtime."""
    for name, path in files.items():
        with atomic_path(path) as tmp:
            write_tflite(model, tmp, crop, mean, std, to_pixels(calibration, mean, std) if name == "int8" else None)
    val_pixels, report_pixels = to_pixels(val[0], mean, std), to_pixels(report[0], mean, std)
    onnx_top1 = run_logits(cpu_session(onnx_file, bench.threads), report[0]).argmax(1)
    measured, candidates, io = {}, {}, {}
    for name, path in files.items():
        runtime = LiteRTModel(path, bench.threads)
        io[name] = runtime.io()
        p50, onnx_p50 = interleaved_p50(runtime, onnx_file, val_pixels, val[0], bench)
        val_accuracy = selection_accuracy(runtime.logits(val_pixels).argmax(1), val[1], bench.metric)
        measured[name] = Measured(name, p50, val_accuracy, path.stat().st_size)
        top1 = runtime.logits(report_pixels).argmax(1)
        candidates[name] = {**vars(measured[name]), "report_accuracy": selection_accuracy(top1, report[1], bench.metric),
                            "agreement_with_onnx": float(np.mean(top1 == onnx_top1)), "images": len(top1),
                            "onnxruntime_p50_ms": onnx_p50}
    winner, reason = choose([measured["int8"]], measured["fp32"], max_accuracy_drop)
    log.info("litert: chose %s .tflite (%s)", winner, reason)
    return {"runtime_version": versions(), "converter": "litert-torch (torch.export, PT2E int8)", "chosen": winner,
            "reason": reason, "io": io[winner], "candidates": candidates}
