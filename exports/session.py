"""ONNX Runtime CPU sessions and batched inference, with no torch import.

Kept apart from exports/onnx.py (which exports from PyTorch) so the latency worker
(measure/latency_worker.py) can time models in a process that never loads torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def cpu_session(path: str | Path, threads: int | None = None,
                providers: tuple[str, ...] = ("CPUExecutionProvider",), optimize: bool = True) -> ort.InferenceSession:
    """A CPU session (other `providers` first when given, e.g. CUDA for an ONNX teacher during GPU
    training) whose pool sleeps between runs; with `threads`, a pool of that size.

    ONNX Runtime's pool spin-waits after each run by default. With several sessions measured
    in turn, the idle spinners of one steal the cores of the next: measured here, a ResNet50's
    p50 went from 4.1 ms (spinning off) to 11.8 ms with p90 18.8 ms (spinning on). A session
    that only checks or scores a file (parity, accuracy) would spin beside the training it
    interrupts just the same, so no pool spins.

    `optimize=False` skips graph optimisation, for a session that only proves the file loads or
    reads its metadata: a fp32 ResNet50 opens in 43-95 ms instead of 146-266 ms (measured twice).
    """
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=list(providers))


def run_logits(session: ort.InferenceSession, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits for a float32 NCHW array, in batches."""
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: images[i:i + batch_size].astype(np.float32)})[0]
            for i in range(0, len(images), batch_size)]
    return np.concatenate(outs)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits along the class axis (numerically stable)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
