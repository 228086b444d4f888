"""Quantization-aware training: the fake-quantized model exports as a QDQ ONNX file with int8
weights that ONNX Runtime runs with the same outputs, and `quantize.qat = on` adds it as a
measured candidate."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import torchvision
from click.testing import CliRunner
from helpers import cli_args
from onnx import numpy_helper

from compress.exports.fake_quant import calibrate_activations, export_fake_quant, fake_quant_model
from compress.exports.session import cpu_session, run_logits
from compress.pipeline.cli import main


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    images = torch.randn(16, 3, 32, 32)
    qat = fake_quant_model(model, images[:2], per_channel=True)
    calibrate_activations(qat, [(images[:8],), (images[8:],)], torch.device("cpu"))
    path = tmp_path_factory.mktemp("qat") / "qat.onnx"
    export_fake_quant(qat, path, 32, 17, {"labels": "[]"})
    return path


def test_export_stores_int8_weights_and_only_activations_are_quantized_at_run_time(exported):
    path = exported
    graph = onnx.load(str(path)).graph
    ops = Counter(n.op_type for n in graph.node)
    int8_weights = [t for t in graph.initializer if numpy_helper.to_array(t).dtype == np.int8 and len(t.dims) >= 2]
    assert len(int8_weights) == ops["Conv"] + ops["Gemm"]  # every conv and the classifier hold int8 weights
    assert ops["QuantizeLinear"] < ops["DequantizeLinear"]  # weights are dequantized only
    assert all(n.domain in ("", "ai.onnx") for n in graph.node)  # standard ONNX: loads beyond ONNX Runtime


def test_onnx_runtime_reproduces_the_fake_quantized_model(tmp_path):
    """A small conv net, where no rounding difference is amplified by 20 layers of random weights:
    ONNX Runtime's int8 kernels give the fake-quantized model's logits within two output steps."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    images = torch.randn(32, 3, 16, 16)
    qat = fake_quant_model(model, images[:2], per_channel=True)
    calibrate_activations(qat, [(images,)], torch.device("cpu"))
    path = tmp_path / "small.onnx"
    export_fake_quant(qat, path, 16, 17, {"labels": "[]"})
    with torch.no_grad():
        expected, fp32 = qat(images).numpy(), model(images).numpy()
    got = run_logits(cpu_session(path), images.numpy())
    output_step = (expected.max() - expected.min()) / 255
    assert np.abs(got - expected).max() <= 2.5 * output_step  # 0, 1 or 2 steps (rounding ties)
    assert np.isclose(got, expected, rtol=0, atol=1e-6).mean() > 0.8  # most logits are the same int8 value
    assert np.isclose(got, fp32, rtol=0, atol=1e-6).mean() < 0.1  # it is the quantized model, not the float one


@pytest.mark.slow
def test_qat_on_adds_a_measured_candidate(digits_folder, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(digits_folder, out, quantize__qat="on", quantize__qat_epochs="1",
                                               prune__enabled="false"))
    assert result.exit_code == 0, result.output
    info = json.loads((out / "onnx/quantize.json").read_text())
    qat = next(c for c in info["candidates"] if c["name"] == "qat_qdq_u8s8")
    assert qat["vendor_ops"] == [] and qat["p50_ms"] > 0
    assert qat["accuracy"] == info["qat"]["accuracy"]  # the candidate is the QAT model that was scored
    assert info["qat"]["epochs"] == 1 and len(info["qat"]["history"]) == 1
    assert "Quantization-aware training" in (out / "report.md").read_text()
    assert not list(out.glob("checkpoints/student_qat*"))  # the resume file is gone once exported
