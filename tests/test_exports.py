"""ONNX export (checker, parity, metadata) and int8 quantization on a tiny model."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from PIL import Image

from compress.core.config import QuantizeConfig
from compress.core.errors import CompressError
from compress.exports.onnx import client_metadata, export_onnx, parity, read_metadata
from compress.exports.operators import vendor_domains
from compress.exports.quantize import build_candidate, quantize_int8
from compress.exports.session import cpu_session, run_logits


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    export_onnx(model, path, crop=32, opset=17,
                metadata=client_metadata(["a", "b", "c"], [0.5] * 3, [0.25] * 3, 36, 32, arch="resnet18"))
    return model, path


def test_export_metadata_and_parity(exported):
    model, path = exported
    meta = read_metadata(path)
    assert json.loads(meta["labels"]) == ["a", "b", "c"] and meta["crop"] == "32" and meta["arch"] == "resnet18"
    x = torch.randn(5, 3, 32, 32)
    assert parity(model, path, x, 1e-3) < 1e-3


def test_parity_failure_is_a_clear_error(exported):
    model, path = exported
    other = torchvision.models.resnet18(num_classes=3).eval()
    with pytest.raises(CompressError, match="differ from PyTorch"):
        parity(other, path, torch.randn(2, 3, 32, 32), 1e-3)


@pytest.mark.parametrize("candidate", ["qoperator_u8s8", "qdq_s8s8", "qdq_u8s8"])
@pytest.mark.parametrize("calibration", ["minmax", "percentile"])
def test_int8_is_smaller_loads_and_mostly_agrees(exported, tmp_path, candidate, calibration):
    _, path = exported
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    out = tmp_path / "int8.onnx"
    quantize_int8(path, out, calib, QuantizeConfig(calibration=calibration), candidate)
    onnx.checker.check_model(str(out))
    assert out.stat().st_size < 0.4 * path.stat().st_size
    assert json.loads(read_metadata(out)["labels"]) == ["a", "b", "c"]
    x = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
    fp32 = run_logits(cpu_session(path), x).argmax(1)
    int8 = run_logits(cpu_session(out), x).argmax(1)
    assert (fp32 == int8).mean() >= 0.75
    # QOperator int8 needs ONNX Runtime's own operators; QDQ is standard ONNX that any runtime loads
    assert vendor_domains(out) == (["com.microsoft"] if candidate.startswith("qoperator") else [])


@pytest.mark.parametrize("candidate, max_size, min_agreement", [("fp16", 0.55, 0.95), ("dynamic", 1.01, 0.9)])
def test_fp16_and_dynamic_candidates(exported, tmp_path, candidate, max_size, min_agreement):
    """fp16 halves the file; dynamic only touches the head (convolutions stay fp32), as documented."""
    _, path = exported
    out = tmp_path / f"{candidate}.onnx"
    build_candidate(path, out, np.zeros((1, 3, 32, 32), np.float32), QuantizeConfig(), candidate)
    assert out.stat().st_size < max_size * path.stat().st_size
    meta = read_metadata(out)
    assert json.loads(meta["labels"]) == ["a", "b", "c"] and candidate in meta["quantization"].split()[0] + " dynamic"
    x = np.random.default_rng(1).standard_normal((32, 3, 32, 32)).astype(np.float32)
    ref = run_logits(cpu_session(path), x).argmax(1)
    got = run_logits(cpu_session(out), x)
    assert got.dtype == np.float32 and (got.argmax(1) == ref).mean() >= min_agreement
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ("Conv" in ops) and (candidate != "dynamic" or "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops)


def test_read_metadata_rejects_files_without_it(tmp_path):
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(model, tmp_path / "bare.onnx")
    with pytest.raises(CompressError, match="lacks metadata"):
        read_metadata(tmp_path / "bare.onnx")


def test_auto_selection_with_fake_timings():
    from compress.exports.quantize import Measured, choose
    fp32 = Measured("fp32", 10.0, 0.90, 4000)
    fast_ok = Measured("qoperator_u8s8", 6.0, 0.895, 1000)
    faster_broken = Measured("qdq_u8s8", 5.0, 0.50, 1000)  # accuracy collapse: never shipped
    slow = Measured("qdq_s8s8", 12.0, 0.90, 1000)
    name, why = choose([slow, fast_ok, faster_broken], fp32, max_accuracy_drop=1.0)
    assert name == "qoperator_u8s8" and "1.67x" in why and "qdq_u8s8" in why
    name, why = choose([slow], fp32, max_accuracy_drop=1.0)
    assert name == "fp32" and "beat fp32" in why
    assert choose([Measured("a", 8.0, 0.9, 1), Measured("b", 7.0, 0.9, 1)], fp32, 1.0)[0] == "b"


def test_model_with_preprocessing_takes_pixels_of_any_size_and_matches_the_recipe(exported, tmp_path):
    from onnx import helper

    from compress.core.preprocess import preprocess_array
    from compress.exports.with_preprocessing import IMAGE, OPSET, agreement, preprocessing_graph, with_preprocessing
    _, path = exported
    wrapped = tmp_path / "with_pre.onnx"
    with_preprocessing(path, wrapped)
    proto = onnx.load(str(wrapped))
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}  # standard operators only
    assert json.loads(read_metadata(wrapped)["labels"]) == ["a", "b", "c"]
    rng = np.random.default_rng(1)
    # smooth images (as photos are), downscaled and upscaled, portrait, landscape and square
    images = [np.asarray(Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((w, h)))
              for h, w in ((97, 131), (140, 90), (20, 26), (36, 36), (375, 500))]
    graph = helper.make_model(preprocessing_graph(36, 32, [0.5] * 3, [0.25] * 3),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    pre = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    for img in images:
        inside = pre.run(None, {IMAGE: img[None]})[0]
        recipe = preprocess_array(img, 36, 32, [0.5] * 3, [0.25] * 3)
        # same size and crop window; PIL's fixed-point resampler and ONNX's float one differ by at most
        # one grey level on some pixels (measured: 8-21% of values at these sizes, none off by more)
        assert inside.shape == recipe.shape and np.abs(inside - recipe).max() * 0.25 * 255 <= 1.0 + 1e-3
    measured = agreement(path, wrapped, images)
    assert measured["images"] == 5 and 0 <= measured["top1_agreement"] <= 1 and measured["max_abs_logit_diff"] < 0.5


def test_openvino_runs_the_standard_onnx_file_and_refuses_vendor_operators(exported, tmp_path):
    pytest.importorskip("openvino")
    from compress.exports.runtimes import OpenVINOModel, write_openvino_ir
    from compress.measure.runtimes import compare
    _, path = exported
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    qdq, qop = tmp_path / "qdq.onnx", tmp_path / "qop.onnx"
    quantize_int8(path, qdq, calib, QuantizeConfig(), "qdq_u8s8")
    quantize_int8(path, qop, calib, QuantizeConfig(), "qoperator_u8s8")
    x = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    ort_logits = {n: run_logits(cpu_session(p), x) for n, p in (("fp32", path), ("qdq", qdq), ("qop", qop))}
    labels = ort_logits["fp32"].argmax(1)
    result = compare({"fp32": path, "qdq": qdq, "qop": qop}, x, labels, ort_logits, 1, 1, 5)["openvino"]
    assert result["models"]["fp32"]["agreement_with_onnxruntime"] == 1.0
    assert result["models"]["qdq"]["loads"] and result["models"]["qdq"]["latency_ms"]["runs"] == 5
    assert not result["models"]["qop"]["loads"]  # com.microsoft operators: ONNX Runtime only
    write_openvino_ir(qdq, tmp_path / "ir" / "model.xml")
    ir, onnx_in_ov = (OpenVINOModel(p, 1).logits(x) for p in (tmp_path / "ir" / "model.xml", qdq))
    assert (ir.argmax(1) == onnx_in_ov.argmax(1)).mean() >= 15 / 16  # the IR is the file's graph (fp16-stored constants)
    assert (tmp_path / "ir" / "model.bin").stat().st_size > 0
