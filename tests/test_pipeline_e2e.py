"""`compress run` end to end through click's runner on tiny real data: the run-directory
contract, ONNX validity, parity and metadata, and caching on a second run."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from helpers import TINY, cli_args

from compress.core.rundir import sha256_file
from compress.pipeline.cli import main

pytestmark = pytest.mark.slow  # whole pipeline runs; `-m 'not slow'` skips them

DEFAULTS = dict(teacher__arch="resnet50", distill__arch="resnet18", teacher__weights="auto", distill__weights="auto")  # the defaults
MODELS = ["teacher", "student", "baseline", "student_pruned", "student_int8"]
STAGES = ["teacher", "distill", "baseline", "prune", "export", "quantize", "benchmark", "package",
          "report"]
DEPLOY = ["deploy/model_with_preprocessing.onnx", "deploy/model.onnx", "deploy/model.ort",
          "deploy/model.required_operators.config", "deploy/labels.txt", "deploy/model_card.md",
          "deploy/model_mobile.onnx", "deploy/accelerators.json"]


def finished_run(digits_folder, tmp_path_factory, name: str, **overrides):
    """(run directory, CLI result) of one whole run of the tiny config with `overrides`."""
    out = tmp_path_factory.mktemp(name) / "run"
    result = CliRunner().invoke(main, cli_args(digits_folder, out, **overrides), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture(scope="module")
def full_run(digits_folder, tmp_path_factory):
    return finished_run(digits_folder, tmp_path_factory, "e2e", **DEFAULTS)


def test_run_directory_contract(full_run):
    out, _ = full_run
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    cached = [f for f in files if f.startswith("cache/")]  # the pruning fine-tunes' centre-crop teacher logits
    assert len(cached) == 1 and cached[0].startswith("cache/teacher_logits-"), cached
    assert [f for f in files if f not in cached] == sorted([
        ".compress.lock",  # the run directory's lock file (held only while a run is in progress)
        "manifest.json", "report.json", "report.md", "report.html", "onnx/models.json", "onnx/quantize.json",
        "onnx/sensitivity.json",
        *[f"plots/{p}.png" for p in ("accuracy_vs_latency", "size", "training", "confusion", "gradcam", "sensitivity")],
        *[f"onnx/{m}.onnx" for m in MODELS],
        *[f"checkpoints/{m}.pt" for m in MODELS if m != "student_int8"], *DEPLOY,
    ])


def test_report_json_has_every_model_and_figure(full_run, digits_folder):
    out, result = full_run
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == {"name": digits_folder.name, "classes": ["digit0", "digit1", "digit2"],
                                 "train_size": 36, "val_size": 18, "test_size": 0, "figures_from": "val",
                                 "selection_split": "val (also the reported figures: too few images for a "
                                                    "separate test split)",
                                 "class_counts": {"train": {"digit0": 12, "digit1": 12, "digit2": 12},
                                                  "val": {"digit0": 6, "digit1": 6, "digit2": 6}},
                                 "copies": {"val": 0}}
    assert all(m["accuracy_interval"]["n"] == 18 and m["accuracy_interval"]["low"] <= m["accuracy"]
               <= m["accuracy_interval"]["high"] for m in report["models"].values())
    assert {(c["model"], c["against"]) for c in report["comparisons"]} == {
        ("student", "teacher"), ("student", "baseline"), ("student_pruned", "student"),
        ("student_int8", "student_pruned")}
    assert "also used for selection" in (out / "report.md").read_text()
    assert list(report["models"]) == MODELS
    assert report["recipes"]["student_pruned"].endswith("on centre crops (the teacher's logits computed once)")
    for name, m in report["models"].items():
        assert m["onnx"] == f"onnx/{name}.onnx"
        assert m["onnx_bytes"] == (out / m["onnx"]).stat().st_size
        assert m["params"] > 0 and m["macs"] > 0
        cm = np.asarray(m["confusion_matrix"])  # the accuracy is what the confusion matrix counts
        assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum()) and cm.sum() == m["accuracy_interval"]["n"]
        assert 0 < m["latency_ms"]["p50"] <= m["latency_ms"]["p90"] <= m["latency_ms"]["p99"]
        assert set(m["latency_ms_by_batch"]) == {"1", "8"} and m["throughput_ips"] > 0
        assert 0 <= m["ece"] <= 1 and len(m["confusion_matrix"]) == 3
    models = report["models"]
    assert models["teacher"]["agreement_with_teacher"] == 1.0
    assert models["teacher"]["latency_ratio_to_reference"] == {"1": 1.0, "8": 1.0}
    assert report["environment"]["threads"] == TINY["bench.threads"] and "isa" in report["environment"]
    assert set(report["training"]) == {"teacher", "student", "baseline", "student_pruned"}
    assert models["teacher"]["params"] > 2 * models["student"]["params"]  # ResNet50 vs ResNet18
    assert models["student_pruned"]["macs"] < 0.6 * models["student"]["macs"]
    held = json.loads((out / "onnx/quantize.json").read_text())["int8_file_holds"]
    if not held.startswith("mixed_"):  # a mixed candidate keeps some layers (and their bytes) in float
        assert models["student_int8"]["onnx_bytes"] < 0.4 * models["student_pruned"]["onnx_bytes"]
    assert "| student_int8 |" in (out / "report.md").read_text()
    assert "| teacher |" in result.output  # the table is printed too


def test_onnx_files_check_carry_metadata_and_match_pytorch(full_run, digits_folder):
    out, _ = full_run
    info = json.loads((out / "onnx/models.json").read_text())
    for name in MODELS:
        path = out / f"onnx/{name}.onnx"
        onnx.checker.check_model(str(path))
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(meta["labels"]) == ["digit0", "digit1", "digit2"]
        assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406])
        assert (meta["resize"], meta["crop"], meta["color"], meta["layout"], meta["scale"]) == \
            ("20", "16", "RGB", "NCHW", "1/255")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].shape[0] == "batch"  # dynamic batch axis
        assert sess.run(None, {"input": np.zeros((3, 3, 16, 16), np.float32)})[0].shape == (3, 3)
    for name in ("teacher", "student", "baseline", "student_pruned"):
        assert info[name]["parity_max_abs_diff"] <= 1e-3


def test_manifest_records_config_versions_timings_and_hashes(full_run):
    out, _ = full_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["data"]["crop"] == 16
    assert set(manifest["versions"]) >= {"python", "torch", "torchvision", "onnx", "onnxruntime", "torch_pruning"}
    assert "git_commit" in manifest
    assert manifest["executed"] == STAGES
    for stage in STAGES:
        assert manifest["stages"][stage]["seconds"] > 0
    for rel, digest in manifest["artifacts"].items():
        assert sha256_file(out / rel) == digest
    assert len(manifest["artifacts"]) == 29  # 4 checkpoints, 5 ONNX, 3 ONNX infos, 3 reports, 6 plots, 8 deploy


@pytest.fixture(scope="module")
def tiny_run(digits_folder, tmp_path_factory):
    """A finished run of the tiny config (every stage, timm's test networks), shared by the tests
    that rerun in a copy of it: what they check is the cache, not the default architectures."""
    return finished_run(digits_folder, tmp_path_factory, "tiny")


def copy_of(run, tmp_path):
    """A copy of a shared run directory, for a test that reruns in it."""
    import shutil
    shutil.copytree(run[0], tmp_path / "run")
    return tmp_path / "run"


def test_second_run_skips_every_stage(full_run, digits_folder, tmp_path):
    out = copy_of(full_run, tmp_path)
    from compress.core import faults
    with faults.injected("stage.run", lambda stage: pytest.fail(f"the cached stage {stage} ran again")):
        result = CliRunner().invoke(main, cli_args(digits_folder, out, **DEFAULTS), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["executed"] == [] and manifest["skipped"] == STAGES
    assert "nothing (all stages up to date)" in result.output


def test_changed_setting_reruns_from_first_affected_stage(tiny_run, digits_folder, tmp_path):
    out = copy_of(tiny_run, tmp_path)
    result = CliRunner().invoke(main, cli_args(digits_folder, out, distill__alpha="0.9",
                                               quantize__enabled="false"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == ["teacher", "baseline"]
    assert manifest["executed"] == ["distill", "prune", "export", "benchmark", "package", "report"]
    report = json.loads((out / "report.json").read_text())
    # a stage turned off leaves its model out of the report and its files out of the folder
    assert list(report["models"]) == ["teacher", "student", "baseline", "student_pruned"]
    assert not (out / "onnx/student_int8.onnx").exists() and not (out / "onnx/quantize.json").exists()


def test_report_html_embeds_and_references_the_plots(full_run):
    out, result = full_run
    page = (out / "report.html").read_text()
    for name in ("accuracy_vs_latency", "size", "training", "confusion", "gradcam", "sensitivity"):
        assert f'href="plots/{name}.png"' in page
        assert (out / f"plots/{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count("data:image/png;base64,") == 6
    # what report.md explains is in the page too: the ⚠ legend, the batch table, the int8 candidates
    assert "⚠ marks a noisy" in page and "p50 ms @ batch 8" in page and "int8 layouts measured" in page
    chosen = json.loads((out / "onnx/quantize.json").read_text())["deployable"]
    assert chosen in ("student_int8", "student_pruned")
    assert f"Deployable: {chosen}" in page
    assert f"deployable: {chosen}" in result.output and "x smaller" in result.output


def test_int8_candidates_are_measured_and_the_choice_explained(full_run):
    out, _ = full_run
    q = json.loads((out / "onnx/quantize.json").read_text())
    names = ["qoperator_u8s8", "qdq_s8s8", "qdq_u8s8", "dynamic", "fp16"]
    measured = [c["name"] for c in q["candidates"]]
    # the plain layouts always; a mixed and a QAT candidate only when plain PTQ missed the budget
    assert measured[:5] == names and all(n.startswith(("mixed_", "qat_")) for n in measured[5:])
    assert bool(measured[5:]) == bool(q["mixed"] or q["qat"])
    val = json.loads((out / "report.json").read_text())["dataset"]["val_size"]  # accuracies count val images
    assert all(c["p50_ms"] > 0 and c["accuracy"] * val == pytest.approx(round(c["accuracy"] * val))
               for c in q["candidates"])
    assert q["chosen"] in ("fp32", *measured) and q["reason"]
    report = json.loads((out / "report.json").read_text())
    assert report["quantization"]["chosen"] == q["chosen"]
    assert "int8 layouts measured" in (out / "report.md").read_text()


def test_deploy_folder_is_self_explanatory(full_run):
    out, _ = full_run
    q = json.loads((out / "onnx/quantize.json").read_text())
    deployable = q["deployable"]
    assert (out / "deploy/model.onnx").read_bytes() == (out / f"onnx/{deployable}.onnx").read_bytes()
    assert (out / "deploy/labels.txt").read_text().splitlines() == ["digit0", "digit1", "digit2"]
    card = (out / "deploy/model_card.md").read_text()
    report = json.loads((out / "report.json").read_text())
    for needle in ("name `input`, shape ['batch', 3, 16, 16]", "dtype float32", "shorter** side is 20 px",
                   "Centre-crop 16×16", "[0.485, 0.456, 0.406]", "0 = digit0", report["environment"]["cpu"],
                   f"{report['environment']['threads']} ONNX Runtime threads", "config sha256", "resnet50 teacher",
                   f"{report['models'][deployable]['accuracy']:.4f}"):
        assert needle in card, needle
    ops = (out / "deploy/model.required_operators.config").read_text()
    assert "ai.onnx;" in ops and "Conv" in ops and "/tmp" not in ops
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    onnx_out = ort.InferenceSession(str(out / "deploy/model_mobile.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    ort_out = ort.InferenceSession(str(out / "deploy/model.ort"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.allclose(onnx_out, ort_out, atol=1e-4)  # model.ort is the Android file in ONNX Runtime's format
    phones = json.loads((out / "deploy/accelerators.json").read_text())
    nnapi = {c["provider"]: c for c in phones["files"]["deploy/model_mobile.onnx"]["coverage"]}["NNAPI"]
    assert nnapi["supported"] == nnapi["nodes"] and nnapi["partitions"] == 1
    assert phones["files"]["deploy/model_mobile.onnx"]["top1_agreement_with_model_onnx"] >= 0.9
    assert "| model_mobile.onnx | NNAPI |" in card and "Android NNAPI: model_mobile.onnx" in card


def test_fixed_batch_export(full_run, tmp_path):
    from compress.exports.onnx import fix_batch
    out, _ = full_run
    target = tmp_path / "fixed.onnx"
    target.write_bytes((out / "deploy/model.onnx").read_bytes())
    fix_batch(target, 4)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [4, 3, 16, 16]
    assert session.run(None, {"input": np.zeros((4, 3, 16, 16), np.float32)})[0].shape == (4, 3)


def test_hidden_fc_heads_run_end_to_end(digits_folder, tmp_path):
    """Reference 000's heads (a teacher with two hidden FC layers and dropout, a student with
    one) train, distil, prune, export with PyTorch parity, and reload from their checkpoints."""
    from compress.core.heads import ClassifierHead
    from compress.core.models import load_model
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(digits_folder, out, teacher__head_hidden="[32, 16]",
                                               teacher__dropout="0.5", distill__head_hidden="[16]",
                                               distill__baseline="false", quantize__enabled="false"))
    assert result.exit_code == 0, result.output
    teacher, meta = load_model(out / "checkpoints/teacher.pt")
    assert isinstance(teacher.get_classifier(), ClassifierHead) and meta["head_hidden"] == [32, 16]
    assert [m.out_features for m in teacher.get_classifier() if isinstance(m, torch.nn.Linear)] == [32, 16, 3]
    pruned, _ = load_model(out / "checkpoints/student_pruned.pt")
    linears = [m for m in pruned.get_classifier() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 and linears[-1].out_features == 3
    assert (out / "onnx/student_pruned.onnx").is_file()


def test_a_code_change_reruns_that_stage_and_what_depends_on_it(tiny_run, digits_folder, tmp_path):
    """The package copied and one stage's module edited, as an upgrade would: the stages before it
    are served from the cache, it reruns saying why, and so does every stage after it."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import compress
    out = copy_of(tiny_run, tmp_path)
    source = Path(compress.__file__).parent
    package = tmp_path / "pkg" / "compress"
    shutil.copytree(source, package, ignore=shutil.ignore_patterns(
        ".*", "tests", "benchmarks", "runs", "build", "docs", "*.egg-info", "__pycache__", "configs"))
    stage = package / "stages" / "export.py"
    code = stage.read_text()
    assert code.count("cfg.export.opset)") == 1
    stage.write_text(code.replace("cfg.export.opset)", "cfg.export.opset - 1)"))  # files of another opset
    command = [sys.executable, "-P", "-c", "from compress.pipeline.cli import main; main()",
               *cli_args(digits_folder, out)]
    command.remove("--quiet")
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(package.parent)})
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == ["teacher", "distill", "baseline", "prune"]
    assert manifest["executed"] == ["export", "quantize", "benchmark", "package", "report"]
    assert "stage 5/9: export (code changed: stages/export.py)" in done.stderr
    assert manifest["stages"]["export"]["reason"] == "code changed: stages/export.py"
    opset = {o.domain: o.version for o in onnx.load(str(out / "onnx/student.onnx")).opset_import}[""]
    assert opset == 16  # the edited code made them
