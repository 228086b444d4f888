"""The fine-tuning recipe on a small pretrained stand-in: timm's test ResNet trained on one task (digits
0-4), then fine-tuned on another (digits 5-7) from that file. LP-FT fits the new head alone
first, so the whole-network epoch that follows starts from the probe's accuracy and must not fall
below it, the model kept is never below the probe, and the recipe is said in the run's records."""
from __future__ import annotations

import pytest
import torch
from helpers import write_digits

from compress.core.config import Config
from compress.core.data import load_dataset
from compress.pipeline.runner import run_pipeline
from compress.stages.teacher import TeacherStage

TINY = {"resize": 20, "crop": 16, "batch_size": 16}


def teacher_run(folder, data_path, finetune=None, **teacher) -> tuple[list[dict], str, float]:
    cfg = Config.from_dict({"data": {"path": str(data_path), **TINY}, "device": "cpu", "seed": 0,
                            "teacher": {"arch": "timm:test_resnet", **teacher}, "finetune": finetune or {}})
    manifest = run_pipeline(cfg, folder, quiet=True, stages=(TeacherStage(),), data=load_dataset(cfg.data, cfg.seed))
    summary = manifest["stages"]["teacher"]["summary"]
    return summary["history"], summary["recipe"], summary["val_accuracy"]


@pytest.mark.slow
def test_fine_tuning_a_pretrained_start_never_drops_below_where_it_started(tmp_path):
    first = write_digits(tmp_path / "task_a", classes=(0, 1, 2, 3, 4), per_class=24)
    second = write_digits(tmp_path / "task_b", classes=(5, 6, 7), per_class=24)
    history, _, _ = teacher_run(tmp_path / "pretrain", first, weights="none", epochs=8, lr=0.003)
    assert history[-1]["val_accuracy"] >= 0.6, history  # the stand-in learned its own task
    start = tmp_path / "pretrain/checkpoints/teacher.pt"
    assert torch.load(start, map_location="cpu", weights_only=True)["state_dict"]
    # two probe epochs (two augmented views of the training set), then two of the whole network
    history, recipe, kept = teacher_run(tmp_path / "finetune", second, {"probe_epochs": 2}, weights=str(start), epochs=4)
    assert recipe.startswith("LP-FT") and "L-BFGS" in recipe and "2 augmented views" in recipe, recipe
    *probes, first_full, _ = [h["val_accuracy"] for h in history]
    assert probes[-1] > 1 / 3 + 0.1, history  # pretrained features already separate the new task
    assert first_full >= probes[-1], history  # the first whole-network epoch keeps what the probe reached
    assert kept == pytest.approx(max(h["val_accuracy"] for h in history)) and kept >= probes[-1], (kept, history)
    assert sum(h.get("kept", False) for h in history) == 1
