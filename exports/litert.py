"""LiteRT (TensorFlow Lite) files for Android teams (`deploy.target = "litert"`, the `litert` extra).

Converter: Google's `litert-torch` (formerly ai-edge-torch), straight from the PyTorch student
with torch.export, so no second framework's graph import sits between the trained weights and
the file; the ONNX route (onnx2tf) goes through TensorFlow and a layout-rewriting importer.
litert-torch 0.10 installs beside this project's torch 2.14 without replacing it.

What Android image classifiers expect (litert-torch#91, LiteRT#1241): NHWC input and, for a
quantized model, uint8 input. Both files here take **uint8 RGB pixels, NHWC `[1, H, W, 3]`**,
after the resize and centre crop; the /255 and the mean/std normalisation run inside the graph,
so a client copies the cropped bitmap's bytes in and does no arithmetic. int8 uses litert-torch's
own PT2E quantizer (symmetric int8, per-channel weights), calibrated on the same training images
as the ONNX candidates; its output is int8 with the scale and zero point the card states.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.core.errors import CompressError


def require() -> None:
    """One line, before any work, when the `litert` extra is missing."""
    missing = [m for m in ("litert_torch", "ai_edge_litert") if importlib.util.find_spec(m) is None]
    if missing:
        raise CompressError(f"deploy.target = litert needs LiteRT's converter and interpreter ({', '.join(missing)} "
                            "not installed): pip install 'compress-distill[litert]'")


class PixelInput(nn.Module):
    """`net` taking uint8 NHWC pixels: layout change, /255 and normalisation inside the graph."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        return self.net((x - mean) / std)


def to_pixels(images: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """Normalised float NCHW crops back to the uint8 NHWC pixels they were made from."""
    m, s = np.asarray(mean, np.float32).reshape(1, 3, 1, 1), np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    pixels = np.clip(np.rint((images * s + m) * 255), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def write_tflite(model: nn.Module, path: Path, crop: int, mean: list[float], std: list[float],
                 calibration: np.ndarray | None = None) -> None:
    """`model` as a batch-1 .tflite taking uint8 NHWC pixels: fp32, or int8 when `calibration`
    pixels (uint8 NHWC) are given."""
    import litert_torch
    wrapped = PixelInput(model.cpu().float().eval(), mean, std).eval()
    example = (torch.zeros(1, crop, crop, 3, dtype=torch.uint8),)
    if calibration is None:
        edge = litert_torch.convert(wrapped, example)
    else:
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
        prepared = prepare_pt2e(torch.export.export(wrapped, example).module(), quantizer)
        with torch.no_grad():
            for image in calibration:
                prepared(torch.from_numpy(np.ascontiguousarray(image[None])))
        edge = litert_torch.convert(convert_pt2e(prepared, fold_quantize=False), example,
                                    quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(str(path))


class LiteRTModel:
    """A .tflite file in LiteRT's own interpreter (`ai_edge_litert`, XNNPACK on this CPU)."""

    def __init__(self, path: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def io(self) -> dict:
        """The input and output tensors as a client sees them: shape, dtype, quantisation."""
        def describe(d: dict) -> dict:
            scale, zero_point = d["quantization"]
            return {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                    "scale": float(scale), "zero_point": int(zero_point)}
        return {"input": describe(self.input), "output": describe(self.output)}

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], pixels)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Float logits for uint8 NHWC pixels, one image per call (an int8 output is dequantized)."""
        scale, zero_point = self.output["quantization"]
        out = np.concatenate([self._run(pixels[i:i + 1]) for i in range(len(pixels))]).astype(np.float32)
        return (out - zero_point) * scale if scale else out

    def latency_ms(self, pixels: np.ndarray, warmup: int, runs: int) -> list[float]:
        """`runs` batch-1 timings (ms) after `warmup` calls."""
        one = np.ascontiguousarray(pixels[:1])
        samples = []
        for i in range(warmup + runs):
            t0 = time.perf_counter_ns()
            self._run(one)
            if i >= warmup:
                samples.append((time.perf_counter_ns() - t0) / 1e6)
        return samples


def versions() -> str:
    from importlib.metadata import version
    return f"litert-torch {version('litert-torch')}, ai-edge-litert {version('ai-edge-litert')}"
