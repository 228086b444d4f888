"""The phone files on a tiny ResNet18: ONNX Runtime's mobile checker counts NNAPI taking the int8
file whole only once the batch is fixed and the int8 types are uint8; Core ML takes the fp32 one."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from compress.core.config import QuantizeConfig
from compress.exports.mobile import android_file, fixed_shape_copy, is_quantized
from compress.exports.onnx import client_metadata, export_onnx
from compress.exports.quantize import quantize_int8
from compress.exports.session import cpu_session, run_logits
from compress.measure.accelerators import advice, coverage


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mobile") / "fp32.onnx"
    export_onnx(torchvision.models.resnet18(num_classes=3).eval(), path, crop=32, opset=17,
                metadata=client_metadata(["a", "b", "c"], [0.5] * 3, [0.25] * 3, 36, 32, arch="resnet18"))
    return path


def by_provider(path):
    return {c.provider: c for c in coverage(path)}


def test_the_android_file_runs_whole_on_nnapi_where_the_shipped_int8_does_not(fp32, tmp_path):
    calibration = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    shipped = tmp_path / "int8.onnx"  # the CPU deployable: dynamic batch, signed-int8 QDQ
    quantize_int8(fp32, shipped, calibration, QuantizeConfig(), "qdq_s8s8")
    phone = tmp_path / "mobile.onnx"
    words = android_file(fp32, phone, calibration, QuantizeConfig())
    assert "uint8" in words and is_quantized(phone) and not is_quantized(fp32)
    session = cpu_session(phone)
    assert session.get_inputs()[0].shape == [1, 3, 32, 32]
    x = np.random.default_rng(1).standard_normal((16, 3, 32, 32)).astype(np.float32)
    agree = (run_logits(session, x, batch_size=1).argmax(1) == run_logits(cpu_session(fp32), x).argmax(1)).mean()
    assert agree >= 0.75
    nnapi = by_provider(phone)["NNAPI"]
    assert nnapi.whole and nnapi.supported == nnapi.nodes > 100, nnapi
    assert not by_provider(shipped)["NNAPI"].whole  # the dynamic batch leaves most nodes on the CPU
    assert not by_provider(phone)["CoreML NeuralNetwork"].whole  # Core ML has no Q/DQ operators
    ios = tmp_path / "ios.onnx"
    fixed_shape_copy(fp32, ios)
    assert by_provider(ios)["CoreML NeuralNetwork"].whole
    words = advice({"model_mobile.onnx": coverage(phone), "model_ios.onnx": coverage(ios)})
    assert "Android NNAPI: model_mobile.onnx" in words and "iOS Core ML: model_ios.onnx" in words
