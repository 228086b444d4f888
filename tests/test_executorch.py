"""ExecuTorch, the mobile-native format: the .pte files run in ExecuTorch's own runtime with the
PyTorch model's outputs (fp32) or close to them (int8), the runtime comparison pairs a .pte only
with the ONNX file of the same weights, and `deploy.target = executorch` ships deploy/model.pte.
Skipped where the executorch extra is not installed."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import cli_args

from compress.exports.onnx import client_metadata, export_onnx
from compress.exports.session import cpu_session, run_logits
from compress.pipeline.cli import main

pytest.importorskip("executorch")


class ResidualNet(torch.nn.Module):
    """A stride-2 stem, one residual block with BatchNorm, global pooling and a Linear head: every
    kind of layer a ResNet hands XNNPACK, lowered in 8 s where timm's test ResNet took 20 s (both files, measured)."""

    def __init__(self, width: int = 64, classes: int = 3):
        super().__init__()
        def conv(cin: int, stride: int = 1) -> torch.nn.Conv2d:
            return torch.nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=False)

        self.stem = torch.nn.Sequential(conv(3, 2), torch.nn.BatchNorm2d(width), torch.nn.ReLU())
        self.block = torch.nn.Sequential(conv(width), torch.nn.BatchNorm2d(width), torch.nn.ReLU(), conv(width),
                                         torch.nn.BatchNorm2d(width))
        self.head = torch.nn.Linear(width, classes)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.block(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """A small residual network, images, and its fp32 and int8 (calibrated on the images) .pte
    files, written once."""
    from compress.exports.executorch import write_pte
    torch.manual_seed(0)
    model = ResidualNet().eval()
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # statistics a trained net has
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    images = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    folder = tmp_path_factory.mktemp("pte")
    write_pte(model, folder / "f.pte", 32)
    write_pte(model, folder / "q.pte", 32, calibration=images)
    return model, images, folder


def test_fp32_pte_runs_in_executorch_with_pytorchs_logits(programs):
    from compress.exports.executorch import ExecuTorchModel
    model, images, folder = programs
    got = ExecuTorchModel(folder / "f.pte", 1).logits(images)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    assert np.abs(got - expected).max() < 1e-4
    assert len(ExecuTorchModel(folder / "f.pte", 1).latency_ms(images, 1, 3)) == 3


def test_int8_pte_is_quantized_and_a_quarter_of_the_size(programs):
    from compress.exports.executorch import ExecuTorchModel
    _, images, folder = programs
    fp32, int8 = (ExecuTorchModel(folder / n, 1).logits(images) for n in ("f.pte", "q.pte"))
    assert (folder / "q.pte").stat().st_size < 0.3 * (folder / "f.pte").stat().st_size
    assert not np.allclose(fp32, int8, atol=1e-5) and np.abs(fp32 - int8).max() < 0.5 * np.abs(fp32).max()


def test_runtime_comparison_pairs_a_pte_only_with_the_onnx_file_of_its_weights(programs, tmp_path):
    import shutil

    from compress.measure.runtimes import compare
    model, images, folder = programs
    onnx_file = tmp_path / "student.onnx"
    export_onnx(model, onnx_file, 32, 17, client_metadata(list("abc"), [0.5] * 3, [0.25] * 3, 36, 32))
    shutil.copyfile(folder / "f.pte", tmp_path / "student.pte")
    export_onnx(model, tmp_path / "other.onnx", 32, 17, client_metadata(list("abc"), [0.5] * 3, [0.25] * 3, 36, 32))
    logits = {n: run_logits(cpu_session(tmp_path / f"{n}.onnx"), images) for n in ("student", "other")}
    result = compare({"student": onnx_file, "other": tmp_path / "other.onnx"}, images, logits["student"].argmax(1),
                     logits, 1, 1, 3)["executorch"]
    assert list(result["models"]) == ["student"]  # no .pte beside other.onnx: not listed
    assert result["models"]["student"]["agreement_with_onnxruntime"] == 1.0


@pytest.mark.slow
def test_executorch_target_ships_the_measured_pte(digits_folder, tmp_path):
    from compress.exports.executorch import ExecuTorchModel
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(digits_folder, out, deploy__target="executorch", distill__baseline="false",
                                               quantize__candidates='["qdq_u8s8"]', export__ort="false",
                                               prune__enabled="false", export__mobile="false"))  # the target, no more
    assert result.exit_code == 0, result.output
    pte = json.loads((out / "onnx/quantize.json").read_text())["executorch"]
    assert pte["chosen"] in ("fp32", "int8") and set(pte["candidates"]) == {"fp32", "int8"}
    assert (out / "deploy/model.pte").read_bytes() == (out / pte["file"]).read_bytes()
    assert ExecuTorchModel(out / "deploy/model.pte", 1).logits(np.zeros((1, 3, 16, 16), np.float32)).shape == (1, 3)
    assert "model.pte" in (out / "deploy/model_card.md").read_text()
    assert "ExecuTorch" in (out / "report.md").read_text()
