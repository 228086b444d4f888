"""Measurements through ONNX Runtime on the CPU: latency percentiles at a fixed thread count,
and top-1 predictions on the val split (the model that ships is the one measured)."""
from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

from exports.onnx import run_logits


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "runs": len(a)}


def latency_ms(session: ort.InferenceSession, image: np.ndarray, warmup: int, runs: int) -> dict[str, float]:
    """Wall time of `runs` single calls after `warmup` discarded ones, in milliseconds."""
    feed = {session.get_inputs()[0].name: image.astype(np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return percentiles(samples)


def predictions(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    return run_logits(session, images).argmax(1)
