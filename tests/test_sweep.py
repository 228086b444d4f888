"""A tiny sweep on real digit images: grid x seeds, paired baselines, outputs, and resume."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import tiny_overrides

from compress.core import faults
from compress.pipeline import sweep as sweep_mod
from compress.pipeline.cli import main
from compress.pipeline.sweep_report import mean_std, verdict


def sweep_args(data, out, *grid):
    args = ["sweep", "--data", str(data), "--out", str(out), "--seeds", "0,1", "--quiet"]
    for item in tiny_overrides():
        args += ["--set", item]
    for g in grid:
        args += ["--grid", g]
    return args


@pytest.mark.slow
def test_tiny_sweep_pairs_baselines_and_resumes(digits_folder, tmp_path):
    out = tmp_path / "sweep"
    grid = ("distill.loss=kl,mse", "distill.temperature=1,4")
    result = CliRunner().invoke(main, sweep_args(digits_folder, out, *grid))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "sweep.json").read_text())
    # mse ignores T, so 3 cells, not 4; each at both seeds
    assert sorted(summary["cells"]) == ["loss-kl_temperature-1", "loss-kl_temperature-4", "loss-mse"]
    for cell in summary["cells"].values():
        assert cell["seeds"] == [0, 1] and len(cell["accuracy"]) == 2
        assert cell["diff_mean"] == pytest.approx(cell["mean"] - cell["baseline_mean"], abs=1e-9)
    # one baseline per seed, shared by every cell, with the student's seed
    baselines = sorted(p.name for p in (out / "baseline").iterdir())
    assert len(baselines) == 2 and baselines[0].endswith("seed-0")
    # the same teacher file in every cell (linked, not retrained)
    teacher = out / "teacher" / "checkpoints" / "teacher.pt"
    assert (out / "cells" / "loss-mse" / "seed-1" / "checkpoints" / "teacher.pt").read_bytes() == teacher.read_bytes()
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG" and "| loss |" in (out / "sweep.md").read_text()
    assert "**Best cell:**" in (out / "sweep.md").read_text() and "[" in (out / "sweep.md").read_text()

    ran = []
    with faults.injected("stage.run", lambda stage: ran.append(stage)):
        again = CliRunner().invoke(main, sweep_args(digits_folder, out, *grid))
    assert again.exit_code == 0, again.output
    assert ran == []  # resumed: no stage of any cell ran twice
    assert json.loads((out / "sweep.json").read_text())["cells"] == summary["cells"]


@pytest.mark.slow
def test_same_seed_means_same_student_start(digits_folder, tmp_path):
    """At alpha = 1 the distilled student is the CE baseline: identical accuracy at each seed. The
    run's own distill.baseline is false (the default): a sweep trains its paired baselines anyway."""
    out = tmp_path / "sweep"
    args = sweep_args(digits_folder, out, "distill.alpha=1.0") + ["--set", "distill.baseline=false"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    cell = json.loads((out / "sweep.json").read_text())["cells"]["alpha-1"]
    assert cell["accuracy"] == cell["baseline"]


@pytest.mark.parametrize("grid, message", [
    (("teacher.epochs=1,2",), "keeps data, teacher"),
    (("distill.alpah=0.5",), "unknown config key"),
    (("distill.alpha=0.5,2",), "config key distill.alpha: input should be less than or equal to 1"),
    (("distill.loss=kl,klx",), "unknown distillation loss 'klx'"),
])
def test_bad_grid_is_one_line_error(digits_folder, tmp_path, grid, message):
    result = CliRunner().invoke(main, sweep_args(digits_folder, tmp_path / "s", *grid))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s").exists()


def test_statistics_by_hand():
    mean, std = mean_std([0.7, 0.8, 0.9])
    assert mean == pytest.approx(0.8) and std == pytest.approx(0.1)
    assert verdict(0.02, 3, 3, 5.0) == "better in every seed"
    assert "not conclusive" in verdict(0.02, 3, 3, 4.0)  # |t| = 4 < 4.30, the 95% critical value at n = 3
    assert "not conclusive" in verdict(0.02, 2, 3, 1.0)
    assert sweep_mod.cell_name({"distill.loss": "kl + 0.5*hint", "distill.alpha": 0.5}) == "loss-klplus0.5xhint_alpha-0.5"


def test_best_cell_is_named_only_when_it_beats_the_runner_up():
    from compress.pipeline.sweep_report import best_cell
    noisy = {"a": {"mean": 0.80, "accuracy": [0.78, 0.83, 0.79]}, "b": {"mean": 0.79, "accuracy": [0.80, 0.77, 0.80]}}
    tie = best_cell(noisy)
    assert tie["best"] is None and tie["tied"] == ["a", "b"] and "tie" in tie["best_note"]
    clear = {"a": {"mean": 0.90, "accuracy": [0.90, 0.91, 0.89]}, "b": {"mean": 0.80, "accuracy": [0.80, 0.80, 0.80]}}
    won = best_cell(clear)
    assert won["best"] == "a" and "beats the runner-up b" in won["best_note"]


def test_each_job_gets_its_own_gpu(monkeypatch):
    from compress.pipeline.sweep import claim_gpu, gpu_slots
    assert gpu_slots(4, 4) == [0, 1, 2, 3] and gpu_slots(3, 2) == [0, 1, 0] and gpu_slots(2, 0) == [None, None]
    import os
    import queue
    slots = queue.Queue()
    for gpu in gpu_slots(2, 2):
        slots.put(gpu)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    claim_gpu(slots)  # the first worker
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    claim_gpu(slots)  # the second
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
