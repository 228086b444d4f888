"""Per-layer int8 sensitivity (ONNX Runtime's quantization debugger) and the mixed-precision
candidate that keeps the most sensitive layers in float."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from compress.core.config import Config
from compress.exports.onnx import client_metadata, export_onnx
from compress.exports.quantize import preprocessed, quantize_int8
from compress.exports.sensitivity import layer_sensitivity
from compress.exports.session import cpu_session, run_logits
from compress.methods.int8_search import Trial, mixed_candidate, sensitivity


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sens") / "m.onnx"
    export_onnx(torchvision.models.resnet18(num_classes=4).eval(), path, 32, 17,
                client_metadata(list("abcd"), [0.5] * 3, [0.25] * 3, 36, 32))
    return path


def test_every_conv_is_ranked_by_the_sqnr_it_loses(model_file, tmp_path):
    images = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    with preprocessed(model_file) as prepped:
        qdq = tmp_path / "q.onnx"
        quantize_int8(model_file, qdq, images, Config().quantize, "qdq_u8s8", prepped)
        rows = layer_sensitivity(prepped, qdq, images)
    convs = {r["node"] for r in rows if r["op"] == "Conv"}
    assert len(convs) >= 15  # ResNet18's convolutions (BatchNorm folded in)
    lost = [r["sqnr_lost_db"] for r in rows if r["sqnr_lost_db"] is not None]
    assert lost == sorted(lost, reverse=True) and all(np.isfinite(r["sqnr_db"]) for r in rows)


def test_mixed_candidate_keeps_the_smallest_number_of_layers_in_float(model_file, tmp_path):
    rng = np.random.default_rng(1)
    images = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    val = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    labels = run_logits(cpu_session(model_file), val).argmax(1)  # fp32 is right on every image
    warnings = []
    cfg = Config()
    with preprocessed(model_file) as prepped:
        trial = Trial(model_file, prepped, tmp_path, images, val, labels, 1)
        ranking = sensitivity(trial, "qdq_u8s8", cfg.quantize)
        cfg.quantize.max_accuracy_drop = 100.0  # any accuracy will do: one layer in float is enough
        easy = mixed_candidate(trial, "qdq_u8s8", ranking, 1.0, cfg.quantize, warnings.append)
        cfg.quantize.max_accuracy_drop = -1.0  # nothing can meet this: the search ends with a warning
        impossible = mixed_candidate(trial, "qdq_u8s8", ranking, 1.0, cfg.quantize, warnings.append)
    assert easy["k"] == 1 and easy["float_layers"] == [ranking[0]["node"]] and easy["name"] == "mixed_qdq_u8s8"
    assert impossible is None and "no mixed-precision" in warnings[0]


def test_layers_the_user_names_stay_float_in_every_static_candidate(model_file, tmp_path):
    from dataclasses import replace

    import onnx
    images = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    cfg = replace(Config().quantize, keep_float=["/conv1/Conv"])
    quantize_int8(model_file, tmp_path / "q.onnx", images, cfg, "qdq_u8s8")
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}
    conv1 = next(n for n in graph.node if n.name == "/conv1/Conv")
    assert conv1.input[1] not in producers  # its weight is the float initializer, not a DequantizeLinear
    others = [n for n in graph.node if n.op_type == "Conv" and n.name != "/conv1/Conv"]
    assert all(producers[n.input[1]].op_type == "DequantizeLinear" for n in others)


def test_pre_processing_leaves_nothing_in_the_working_directory(model_file, tmp_path, monkeypatch):
    """ONNX Runtime's symbolic shape inference saves its partial graph into the working directory
    when it gives up (it did for Swin, 223 MB); that must land in the temporary folder."""
    import compress.exports.quantize as quantize
    real = quantize.quant_pre_process

    def gives_up_like_ort(source, target, skip_symbolic_shape=False):
        if not skip_symbolic_shape:
            Path("sym_shape_infer_temp.onnx").write_bytes(b"partial graph")
            raise RuntimeError("Incomplete symbolic shape inference")
        real(source, target, skip_symbolic_shape=True)

    monkeypatch.setattr(quantize, "quant_pre_process", gives_up_like_ort)
    (tmp_path / "run").mkdir()
    shutil.copyfile(model_file, tmp_path / "run" / "m.onnx")
    monkeypatch.chdir(tmp_path)
    with preprocessed(Path("run/m.onnx")) as prepped:  # a relative path, as `--out runs/x` gives
        assert prepped.is_file() and Path.cwd() == tmp_path  # the caller's directory is left as it was
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
