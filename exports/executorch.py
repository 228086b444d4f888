"""ExecuTorch: PyTorch's on-device runtime (Android, iOS, embedded Linux), the mobile-native format
`compress` writes besides ONNX (`pip install 'compress-distill[executorch]'`).

executorch 1.5.1 installs beside this project's torch 2.14 without replacing it and exports
straight from the PyTorch model (torch.export -> XNNPACK-delegated .pte, run here with its own
Python runtime). LiteRT (.tflite) is the other mobile-native format (compress.exports.litert).

int8 uses ExecuTorch's own recipe: the PT2E flow (torchao's prepare_pt2e / convert_pt2e) with the
XNNPACK quantizer (int8 symmetric, per-channel weights), calibrated on the same training images as
the ONNX candidates. The .pte files take a batch of 1 (edge inference), NCHW float input
normalised as the ONNX file's metadata says.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch


def _lower(program: torch.export.ExportedProgram) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def write_pte(model: torch.nn.Module, path: Path, crop: int, calibration: np.ndarray | None = None) -> None:
    """`model` as an XNNPACK-delegated .pte at batch 1: fp32, or int8 when `calibration` images
    (normalised, NCHW) are given."""
    model = model.cpu().float().eval()
    example = (torch.zeros(1, 3, crop, crop),)
    if calibration is not None:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
        with torch.no_grad():
            for image in calibration:
                prepared(torch.from_numpy(np.ascontiguousarray(image[None])))
        model = convert_pt2e(prepared)
    Path(path).write_bytes(_lower(torch.export.export(model, example)))


def _use_threads(threads: int) -> None:
    """Size ExecuTorch's process-wide XNNPACK thread pool to `threads` (bench.threads), as ONNX
    Runtime and LiteRT sessions are sized: left alone it takes every core, so a .pte was timed on
    more threads than the ONNX and .tflite files beside it. The pool is rebuilt only between runs,
    never during one, which is what the function's `_unsafe_` name warns about."""
    from executorch.extension.pybindings import portable_lib
    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)  # the releases that have the knob
    count = getattr(portable_lib, "_threadpool_get_thread_count", None)
    if reset is not None and count is not None and count() != threads:
        reset(threads)


class ExecuTorchModel:
    """A .pte file loaded by ExecuTorch's Python runtime (its XNNPACK kernels run on this CPU)."""

    def __init__(self, path: Path, threads: int):
        from executorch.runtime import Runtime
        _use_threads(threads)
        self.method = Runtime.get().load_program(str(path)).load_method("forward")

    def logits(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([self.method.execute([torch.from_numpy(np.ascontiguousarray(images[i:i + 1]))])[0]
                               .numpy() for i in range(len(images))])

    def latency_ms(self, image: np.ndarray, warmup: int, runs: int) -> list[float]:
        """`runs` batch-1 timings (ms) after `warmup` calls."""
        x = [torch.from_numpy(np.ascontiguousarray(image[:1]))]
        samples = []
        for i in range(warmup + runs):
            t0 = time.perf_counter_ns()
            self.method.execute(x)
            if i >= warmup:
                samples.append((time.perf_counter_ns() - t0) / 1e6)
        return samples


def version() -> str:
    from importlib.metadata import version as dist_version
    return dist_version("executorch")
