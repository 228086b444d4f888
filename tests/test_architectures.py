"""Any image classifier in: what compress.core.architectures reads off a model, the checkpoint round
trip of pruned networks, `weights = auto`, and whole runs with other architectures, a timm student
and a teacher given as an ONNX file that PyTorch did not make."""
from __future__ import annotations

import json
import sys
import urllib.error

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from helpers import cli_args
from onnx import TensorProto, helper, numpy_helper

from compress.core import architectures, heads
from compress.core.config import Config, PruneConfig
from compress.core.errors import CompressError
from compress.core.models import build_model, load_model, save_checkpoint
from compress.methods.fitness import check_prunable, check_runs
from compress.methods.pruning import Pruner
from compress.pipeline.cli import main


@pytest.mark.parametrize("arch,head,hint,cam", [
    ("resnet18", "fc", "layer3", "layer4"),
    ("mobilenet_v2", "classifier.1", "features.13", "features"),
    ("densenet121", "classifier", "features.denseblock3", "features"),
    ("squeezenet1_1", "classifier.1", None, "classifier.0"),  # a 1x1-conv head, no stride-32 stage
    ("vit_b_16", "heads.head", None, None),  # tokens: no spatial maps
])
def test_what_is_read_off_the_model(arch, head, hint, cam):
    model = architectures.create(arch, 3)
    assert heads.classifier_head(model)[0] == head
    assert architectures.stride16_map(model) == hint
    assert architectures.gradcam_map(model) == cam


def test_a_conv_head_is_replaced_for_the_classes_and_tapped_as_an_embedding():
    from compress.methods.kd.objective import FeatureTap
    model = build_model("squeezenet1_1", 4).eval()
    _, head = heads.classifier_head(model)
    assert isinstance(head, torch.nn.Conv2d) and head.out_channels == 4
    tap = FeatureTap(model, None, embedding=True)
    with torch.no_grad():
        model(torch.zeros(2, 3, 64, 64))
    assert tap.embedding.shape == (2, 512)  # the map entering the head, pooled


@pytest.mark.parametrize("arch", ["mnasnet0_5", "convnext_tiny"])
def test_a_pruned_network_is_rebuilt_from_its_checkpoint(arch, tmp_path):
    """MNASNet needs the state_dict's version metadata; a pruned ConvNeXt's LayerNorms and layer
    scales shrink with its convolutions."""
    model = build_model(arch, 3).eval()
    pruner = Pruner(model, PruneConfig(), 32, None)
    pruner.prune_until("params", 0.7)
    save_checkpoint(model, tmp_path / "m.pt", {"arch": arch, "classes": list("abc")})
    reloaded, _ = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reloaded(x), atol=1e-4)


def test_unfit_architectures_are_refused_in_one_line_naming_what_to_set():
    with pytest.raises(CompressError, match=r"vit_b_16 takes 224-px inputs: set data.crop=224"):
        check_runs("vit_b_16", "teacher.arch", 32, 17)
    with pytest.raises(CompressError, match=r"shufflenet_v2_x0_5 is not structurally prunable.*prune.enabled=false"):
        check_prunable("shufflenet_v2_x0_5", PruneConfig(), 32)
    with pytest.raises(CompressError, match=r"swin_t is not structurally prunable here: its attention"):
        check_prunable("swin_t", PruneConfig(), 32)
    with pytest.raises(CompressError, match="distill.arch: unknown architecture 'mobilenet_v9'"):
        architectures.check_arch("mobilenet_v9", "distill.arch")


def test_weights_auto_trains_from_scratch_offline_and_uses_a_cached_file(tmp_path, monkeypatch):
    from compress.core.auto_settings import resolve
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    cfg, notes = resolve(Config())
    assert (cfg.teacher.weights, cfg.distill.weights) == ("none", "none")
    assert any("distill.weights = auto: training resnet18 from scratch" in n for n in notes)
    assert cfg.data.mean == [0.485, 0.456, 0.406]  # what torchvision's weights expect
    cache = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cache.parent.mkdir(parents=True)
    torch.save(architectures.create("resnet18", 1000).state_dict(), cache)
    cfg, notes = resolve(Config())
    assert cfg.distill.weights == "imagenet" and cfg.teacher.weights == "none"
    assert Config().replace({"teacher.weights": "none"}).teacher.weights == "none"  # explicit values stay


def test_timm_without_the_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "timm" else object())
    with pytest.raises(CompressError, match=r"compress-distill\[timm\]"):
        architectures.check_arch("timm:convnext_nano", "distill.arch")


# ---------------------------------------------------------------- whole runs

# the tiny config's teacher (timm's test ResNet); one int8 layout, no CE twin, no .ort file
SMALL = dict(distill__baseline="false", quantize__candidates='["qdq_u8s8"]', export__ort="false")


@pytest.mark.slow
@pytest.mark.parametrize("student,extra,refused", [
    ("mobilenet_v3_small", {}, None),
    ("squeezenet1_1", {}, "set data.crop >= 24"),  # its max-pools need a larger input
    ("squeezenet1_1", {"data__resize": "28", "data__crop": "24"}, None),
    ("mnasnet0_5", {}, None),
    ("shufflenet_v2_x0_5", {}, "not structurally prunable"),
    ("shufflenet_v2_x0_5", {"prune__enabled": "false"}, None),
])
def test_each_architecture_completes_or_is_refused_before_any_work(digits_folder, tmp_path, student, extra, refused):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(digits_folder, out, distill__arch=student, **SMALL, **extra))
    if refused:
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and refused in lines[0], result.output
        assert not out.exists()  # nothing was written: the refusal came before any work
        return
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["origins"]["student"].startswith(student)
    assert (out / "deploy/model.onnx").is_file() and (out / "plots/gradcam.png").is_file()


def test_a_vit_teacher_at_a_small_crop_is_refused_before_any_work(digits_folder, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(digits_folder, out, teacher__arch="vit_b_16"))
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "set data.crop=224" in lines[0], result.output
    assert not out.exists()


@pytest.mark.slow
def test_a_timm_student_end_to_end(digits_folder, tmp_path):
    pytest.importorskip("timm")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(digits_folder, out, distill__arch="timm:mobilenetv3_small_050", **SMALL))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) >= {"teacher", "student", "student_pruned", "student_int8"}
    meta = {p.key: p.value for p in onnx.load(str(out / "deploy/model.onnx"), load_external_data=False).metadata_props}
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406]  # timm's pretrained configuration for it
    reloaded, _ = load_model(out / "checkpoints/student_pruned.pt")
    assert reloaded(torch.zeros(1, 3, 16, 16)).shape == (1, 3)


def onnx_teacher(path, classes, crop, mean, std) -> None:
    """A teacher PyTorch never saw: global average pool, then a linear map, built with onnx.helper."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((3, len(classes))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w"], ["scores"])],
        "linear_teacher", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, crop, crop])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", len(classes)])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx.helper")
    for key, value in (("labels", classes), ("mean", mean), ("std", std)):
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))


@pytest.mark.slow
def test_an_onnx_teacher_from_another_framework_end_to_end(digits_folder, tmp_path):
    given = tmp_path / "teacher.onnx"
    onnx_teacher(given, ["digit0", "digit1", "digit2"], 16, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(digits_folder, out, teacher__onnx=str(given), **SMALL))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert "given as the ONNX file" in report["origins"]["teacher"] and "teacher" in report["models"]
    assert not (out / "checkpoints/teacher.pt").exists()
    nodes = [n.op_type for n in onnx.load(str(out / "onnx/teacher.onnx")).graph.node]
    assert nodes[:2] == ["Mul", "Add"]  # the run's normalisation turned into the one the file expects
    html = (out / "report.html").read_text()
    assert "Grad-CAM skipped: the teacher is an ONNX file" in html
    assert "given as the ONNX file" in (out / "deploy/model_card.md").read_text()


def test_an_onnx_teacher_with_other_classes_or_a_feature_loss_is_refused(digits_folder, tmp_path):
    given = tmp_path / "teacher.onnx"
    onnx_teacher(given, ["cat", "dog", "bird"], 16, [0.5] * 3, [0.5] * 3)
    result = CliRunner().invoke(main, cli_args(digits_folder, tmp_path / "a", teacher__onnx=str(given)))
    assert result.exit_code == 2 and "predicts classes ['cat', 'dog', 'bird']" in result.output
    onnx_teacher(given, ["digit0", "digit1", "digit2"], 16, [0.5] * 3, [0.5] * 3)
    result = CliRunner().invoke(main, cli_args(digits_folder, tmp_path / "b", teacher__onnx=str(given),
                                               distill__loss="kl + hint"))
    assert result.exit_code == 2 and "gives logits only" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
