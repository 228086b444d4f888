"""The CUDA path (bf16 autocast, channels_last). Skipped cleanly where torch sees no GPU."""
from __future__ import annotations

import pytest
import torch
from helpers import tiny_overrides

from compress.core.config import Config
from compress.pipeline.runner import run_pipeline
from compress.stages.baseline import BaselineStage
from compress.stages.distill import DistillStage
from compress.stages.teacher import TeacherStage

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_training_stages_run_on_cuda(digits_folder, tmp_path):
    cfg = Config.from_toml(None, tuple(tiny_overrides(device="cuda", data__path=str(digits_folder), teacher__epochs=2)))
    manifest = run_pipeline(cfg, tmp_path / "run", quiet=True, stages=(TeacherStage(), DistillStage(), BaselineStage()))
    assert manifest["device"].startswith("cuda")
    assert manifest["executed"] == ["teacher", "distill", "baseline"]
    for name in ("teacher", "student", "baseline"):
        assert manifest["stages"][name]["summary"]["val_accuracy"] > 0.0


def test_benchmark_reports_gpu_latency(digits_folder, tmp_path):
    import json

    from click.testing import CliRunner
    from helpers import cli_args

    from compress.pipeline.cli import main
    out = tmp_path / "gpu_run"
    result = CliRunner().invoke(main, cli_args(digits_folder, out, device="cuda"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    models = json.loads((out / "report.json").read_text())["models"]
    for name in ("teacher", "student", "baseline", "student_pruned"):
        assert models[name]["gpu"]["latency_ms_by_batch"]["1"]["p50"] > 0
    assert "gpu" not in models["student_int8"]
    assert "PyTorch fp32 on" in (out / "report.md").read_text()
