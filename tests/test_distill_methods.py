"""Every distillation method trains a real student end to end, and the teacher signal comes from
where it should: the live teacher, cached logits, or out-of-fold fold teachers."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from helpers import tiny_overrides

from compress.core.config import Config
from compress.methods.teacher_signal import stratified_folds
from compress.pipeline.cli import main
from compress.pipeline.runner import run_pipeline
from compress.stages.distill import DistillStage
from compress.stages.teacher import TeacherStage

pytestmark = pytest.mark.slow  # whole pipeline runs; `-m 'not slow'` skips them

ALL = "kl,mse,hint,cosine,rkd,adversarial,dml,self,kl + 0.5*hint"


def test_every_method_trains_a_student(digits_folder, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--data", str(digits_folder), "--out", str(out), "--seeds", "0", "--quiet",
            "--grid", f"distill.loss={ALL}"]
    for item in tiny_overrides(distill__epochs=2):
        args += ["--set", item]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "sweep.json").read_text())
    assert len(summary["cells"]) == 9
    for name in summary["cells"]:
        manifest = json.loads((out / "cells" / name / "seed-0" / "manifest.json").read_text())
        signal = manifest["stages"]["distill"]["summary"]["teacher_signal"]
        expected = "online/self" if name in ("loss-dml", "loss-self") else "teacher run on each augmented batch"
        assert expected in signal, (name, signal)
        history = manifest["stages"]["distill"]["summary"]["history"]
        assert len(history) == 2 and all(h["loss"] == h["loss"] for h in history)  # no NaN


def _cfg(digits_folder, **extra):
    return Config.from_toml(None, tuple(tiny_overrides(data__path=str(digits_folder), distill__baseline="false", **extra)))


def test_bare_student_uses_cached_teacher_logits(digits_folder, tmp_path):
    cfg = _cfg(digits_folder, distill__augment="none")
    manifest = run_pipeline(cfg, tmp_path / "run", quiet=True, stages=(TeacherStage(), DistillStage()))
    assert manifest["stages"]["distill"]["summary"]["teacher_signal"] == "cached teacher logits"
    cached = list((tmp_path / "run" / "cache").glob("teacher_logits-*.pt"))
    assert len(cached) == 1
    logits = torch.load(cached[0], weights_only=True)["logits"]
    assert logits.shape == (36, 3)


def test_out_of_fold_logits_come_from_teachers_that_did_not_see_the_image(digits_folder, tmp_path):
    cfg = _cfg(digits_folder, distill__teacher_folds=3)
    manifest = run_pipeline(cfg, tmp_path / "run", quiet=True, stages=(TeacherStage(), DistillStage()))
    assert "out-of-fold logits from 3 fold teachers" in manifest["stages"]["distill"]["summary"]["teacher_signal"]
    (oof,) = (tmp_path / "run" / "cache").glob("teacher_oof-*.pt")
    assert torch.load(oof, weights_only=True)["logits"].abs().sum(1).min() > 0  # every image got a soft label
    assert not list((tmp_path / "run" / "cache").glob("*.state.pt"))  # fold training states cleaned up


def test_stratified_folds_partition_every_class():
    labels = torch.tensor([0] * 6 + [1] * 4 + [2] * 5)
    folds = stratified_folds(labels, 3, seed=0)
    assert sorted(torch.cat(folds).tolist()) == list(range(15))
    for f in folds:
        counts = torch.bincount(labels[f], minlength=3)
        assert counts[0] == 2 and 1 <= counts[1] <= 2 and 1 <= counts[2] <= 2


def test_latency_target_pruning_iterates_and_says_when_it_fails(digits_folder, tmp_path):
    from compress.stages.prune import PruneStage
    cfg = _cfg(digits_folder, prune__target="latency", prune__target_latency_ms="0.001", prune__max_rounds="2",
               prune__round_epochs="0", prune__epochs="0")
    manifest = run_pipeline(cfg, tmp_path / "run", quiet=True, stages=(TeacherStage(), DistillStage(), PruneStage()))
    record = manifest["stages"]["prune"]
    rounds = record["summary"]["latency_rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and all(r["p50_ms"] > 0 for r in rounds)
    assert rounds[1]["macs_ratio"] <= 0.85 ** 2 + 0.03 and rounds[0]["macs_ratio"] <= 0.85 + 0.03
    assert any("not met after 2 rounds" in w for w in record["warnings"])
