"""The phone files: batch-1, fixed-shape copies of the deployable that mobile accelerators take whole.

A phone's accelerator delegate (Android's NNAPI, Apple's Core ML, through ONNX Runtime Mobile)
takes a node only when every shape around it is known, so a dynamic batch axis alone leaves a
ResNet18's int8 graph 42 of 148 nodes on NNAPI; fixed at batch 1 it is 148 of 148 in one
partition (ONNX Runtime's `check_onnx_model_mobile_usability`, measured in this project).

- `model_mobile.onnx` (Android): int8 as QDQ with **uint8** activations and weights and per-tensor
  scales. NNAPI's quantised tensors are asymmetric uint8 (QUANT8_ASYMM); ONNX Runtime's NNAPI
  provider rejects signed-int8 QLinearConv while uint8 runs (onnxruntime#18571), and per-channel
  weights would need NNAPI's signed symmetric type. A float deployable stays float.
- `model_ios.onnx` (Core ML): fp32 with fixed shapes, because Core ML's ONNX Runtime provider has
  no QuantizeLinear/DequantizeLinear, so no int8 graph can run there as one partition.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

from compress.core.config import QuantizeConfig
from compress.exports.onnx import fix_batch
from compress.exports.quantize import quantize_int8

NNAPI_INT8 = "qdq_u8u8"
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear",
                 "ConvInteger", "MatMulInteger"}


def is_quantized(path: Path) -> bool:
    """Whether the ONNX file holds int8 operators (any layout), not only float ones."""
    return any(n.op_type in QUANTIZED_OPS for n in onnx.load(str(path), load_external_data=False).graph.node)


def fixed_shape_copy(source: Path, target: Path) -> None:
    """`source` with its batch axis fixed at 1 (height, width and channels are fixed by export)."""
    shutil.copyfile(source, target)
    fix_batch(target, 1)


def android_file(fp32_source: Path, target: Path, calibration: np.ndarray | None, cfg: QuantizeConfig) -> str:
    """Write the NNAPI file from the deployable's fp32 source: int8 (`calibration` given) as QDQ
    uint8 per-tensor, else fp32, batch 1. Returns what it is, in words."""
    if calibration is None:
        fixed_shape_copy(fp32_source, target)
        return "fp32, batch 1, fixed shapes"
    with tempfile.TemporaryDirectory() as tmp:
        fixed = Path(tmp) / "fixed.onnx"
        fixed_shape_copy(fp32_source, fixed)
        # no layer kept in float: a float island splits the accelerator's partition in two
        plain = QuantizeConfig(calibration=cfg.calibration, reduce_range=cfg.reduce_range, per_channel=False)
        quantize_int8(fixed, target, calibration, plain, NNAPI_INT8)
    return f"int8 QDQ uint8 activations and weights, per-tensor, {cfg.calibration} calibration, batch 1, fixed shapes"
