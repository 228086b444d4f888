"""Measurements through ONNX Runtime on the CPU.

Latency is measured *interleaved*: each round runs every model once (in a rotating order), so
a burst of noise on a shared machine hits all models alike, and the ratio of a model's time to
the teacher's, measured in the same rounds, stays stable where absolute milliseconds do not.
Accuracy is computed from the ONNX model's own outputs: the model that ships is the one measured.
"""
from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

from compress.exports.session import run_logits

NOISE_IQR_OVER_MEDIAN = 0.20  # IQR/median is ~0.10 on an idle 2-core VM; twice that is noise worth a flag


def percentiles(samples_ms) -> dict[str, float]:
    """p50/p90/p99, mean ± std and the IQR/median noise measure of a list of times."""
    a = np.asarray(samples_ms, dtype=np.float64)
    q25, p50, q75, p90, p99 = np.percentile(a, [25, 50, 75, 90, 99])
    iqr_rel = float((q75 - q25) / p50) if p50 > 0 else 0.0
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()),
            "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "iqr_over_median": iqr_rel,
            "noisy": iqr_rel > NOISE_IQR_OVER_MEDIAN, "runs": int(len(a))}


def _time_once(session: ort.InferenceSession, feed: dict, calls: int = 1) -> float:
    """Mean milliseconds per call over `calls` back-to-back calls."""
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        session.run(None, feed)
    return (time.perf_counter_ns() - t0) / 1e6 / calls


def interleaved_latency(sessions: dict[str, ort.InferenceSession], images: np.ndarray, batch: int,
                        warmup: int, runs: int, calls: int = 1) -> dict[str, list[float]]:
    """Per-model lists of `runs` timings (ms) at `batch`, taken round-robin after `warmup` rounds.

    Each sample is the mean of `calls` consecutive calls: sub-millisecond models are otherwise
    dominated by one-off scheduler hiccups, which is what makes batch-1 ratios wobble.
    """
    feeds = {n: {s.get_inputs()[0].name: np.ascontiguousarray(images[:batch], dtype=np.float32)}
             for n, s in sessions.items()}
    names = list(sessions)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + runs):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: no model always goes first
        for n in order:
            t = _time_once(sessions[n], feeds[n], calls)
            if r >= warmup:
                samples[n].append(t)
    return samples


def paired_ratio(samples: list[float], reference: list[float]) -> float:
    """Median over rounds of (model time / reference time in the same round)."""
    return float(np.median(np.asarray(samples) / np.asarray(reference)))


def predictions(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    return run_logits(session, images).argmax(1)


def cuda_latency_ms(model, images: np.ndarray, batch: int, warmup: int, runs: int) -> dict[str, float]:
    """PyTorch fp32 latency on the GPU at `batch`, timed with CUDA events (channels_last)."""
    import torch
    device = torch.device("cuda")
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    x = torch.from_numpy(np.ascontiguousarray(images[:batch])).to(device).contiguous(memory_format=torch.channels_last)
    samples = []
    with torch.no_grad():
        for i in range(warmup + runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            if i >= warmup:
                samples.append(start.elapsed_time(end))
    return percentiles(samples)
