"""int8 static quantization with onnxruntime.quantization, calibrated on real training images.

ONNX Runtime's pre-processing (shape inference, graph optimisation that folds BatchNorm into
Conv) runs first, as its documentation advises. The format and types are config: on AVX2 CPUs
QOperator with uint8 activations, int8 per-channel weights and reduce_range was the faster
int8 layout (issue 4's table), so it is the default here.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from exports.onnx import INPUT_NAME, set_metadata
from pipeline.config import QuantizeConfig


class ArrayReader(CalibrationDataReader):
    """Feeds calibration images one at a time, as ONNX Runtime's calibrators expect."""

    def __init__(self, images: np.ndarray):
        self._items = iter([{INPUT_NAME: images[i:i + 1].astype(np.float32)} for i in range(len(images))])

    def get_next(self):
        return next(self._items, None)


def quantize_int8(source: Path, target: Path, calibration: np.ndarray, cfg: QuantizeConfig) -> None:
    """Write an int8 copy of `source` to `target`, keeping its metadata_props."""
    metadata = {p.key: p.value for p in onnx.load(str(source)).metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(source), str(prepped), skip_symbolic_shape=False)
        quantize_static(str(prepped), str(target), ArrayReader(calibration),
                        quant_format=QuantFormat.QOperator if cfg.format == "qoperator" else QuantFormat.QDQ,
                        per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    model = onnx.load(str(target))
    set_metadata(model, {**metadata, "quantization": f"int8 static {cfg.format} u8s8"
                         f"{' per-channel' if cfg.per_channel else ''}{' reduce_range' if cfg.reduce_range else ''}"})
    onnx.save(model, str(target))
    onnx.checker.check_model(str(target))
