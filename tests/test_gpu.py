"""The CUDA path (bf16 autocast, channels_last). Skipped cleanly where torch sees no GPU."""
from __future__ import annotations

import pytest
import torch

from pipeline.config import load_config
from pipeline.runner import run_pipeline
from stages.distill import BaselineStage, DistillStage
from stages.teacher import TeacherStage
from tests.conftest import tiny_overrides

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_training_stages_run_on_cuda(digits_folder, tmp_path):
    cfg = load_config(None, tuple(tiny_overrides(device="cuda", data__path=str(digits_folder), teacher__epochs=2)))
    manifest = run_pipeline(cfg, tmp_path / "run", quiet=True, stages=(TeacherStage(), DistillStage(), BaselineStage()))
    assert manifest["device"].startswith("cuda")
    assert manifest["executed"] == ["teacher", "student", "baseline"]
    for name in ("teacher", "student", "baseline"):
        assert manifest["stages"][name]["summary"]["val_accuracy"] > 0.0
