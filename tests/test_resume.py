"""A training run killed after an epoch resumes there and ends with the same weights as an
uninterrupted run (same config and seed on the CPU give the same result)."""
from __future__ import annotations

import pytest
import torch
from helpers import tiny_overrides

from compress.core import faults
from compress.core.config import Config
from compress.core.weights import load_checkpoint
from compress.pipeline.runner import run_pipeline
from compress.stages.teacher import TeacherStage


def test_interrupted_teacher_resumes_and_matches_uninterrupted(digits_folder, tmp_path):
    cfg = Config.from_toml(None, tuple(tiny_overrides(teacher__epochs=3,
                                                 data__path=str(digits_folder))))
    stages = (TeacherStage(),)
    run_pipeline(cfg, tmp_path / "straight", quiet=True, stages=stages)

    def dies_in_second_epoch(desc, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
    with faults.injected("train.epoch", dies_in_second_epoch), pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, tmp_path / "killed", quiet=True, stages=stages)
    assert (tmp_path / "killed/checkpoints/teacher.training.pt").is_file()
    assert not (tmp_path / "killed/checkpoints/teacher.pt").exists()

    epochs_run = []
    with faults.injected("train.epoch", lambda desc, epoch: epochs_run.append(epoch)):
        manifest = run_pipeline(cfg, tmp_path / "killed", quiet=True, stages=stages)
    assert manifest["executed"] == ["teacher"]
    assert len(epochs_run) == 2  # only epochs 2 and 3 were trained again
    assert not (tmp_path / "killed/checkpoints/teacher.training.pt").exists()

    a, meta_a = load_checkpoint(tmp_path / "straight/checkpoints/teacher.pt")
    b, meta_b = load_checkpoint(tmp_path / "killed/checkpoints/teacher.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["val_accuracy"] for h in meta_a["history"]] == [h["val_accuracy"] for h in meta_b["history"]]
