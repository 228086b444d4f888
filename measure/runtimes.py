"""The deployable and its siblings measured in every other installed runtime, beside ONNX
Runtime: does it load, its accuracy, its top-1 agreement with ONNX Runtime on the same images,
and its batch-1 p50 latency (timed in this process). Agreement below MIN_AGREEMENT is a warning
in the report and a failure in `compress check`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.core.errors import summary
from compress.exports.runtimes import installed, load, runtime_file, version
from compress.measure.latency import percentiles

MIN_AGREEMENT = 0.99


def compare(paths: dict[str, Path], images: np.ndarray, labels: np.ndarray, ort_logits: dict[str, np.ndarray],
            threads: int, warmup: int, runs: int) -> dict[str, dict]:
    """{runtime: {version, models: {name: {loads, accuracy, agreement_with_onnxruntime, latency_ms}}}}."""
    out: dict[str, dict] = {}
    for runtime in installed():
        per_model = {}
        files = {n: f for n, p in paths.items() if (f := runtime_file(runtime, p)) is not None}
        for name, path in files.items():
            try:
                model = load(runtime, path, threads)
            except Exception as exc:  # a runtime that cannot read the file: a finding, not a crash
                per_model[name] = {"loads": False, "error": summary(exc)}
                continue
            predicted = model.logits(images).argmax(1)
            per_model[name] = {"loads": True, "accuracy": float((predicted == labels).mean()),
                               "agreement_with_onnxruntime": float((predicted == ort_logits[name].argmax(1)).mean()),
                               "latency_ms": percentiles(model.latency_ms(images, warmup, runs))}
        if per_model:  # a runtime with no file of its own for any model (no .pte written) is not listed
            out[runtime] = {"version": version(runtime), "models": per_model}
    return out


def warnings(runtimes: dict[str, dict]) -> list[str]:
    return [f"{runtime} agrees with ONNX Runtime on only {m['agreement_with_onnxruntime']:.1%} of images for {name}"
            for runtime, r in runtimes.items() for name, m in r["models"].items()
            if m.get("loads") and m["agreement_with_onnxruntime"] < MIN_AGREEMENT]
