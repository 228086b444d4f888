"""Stage `baseline`: the student's CE-only twin, with the identical initialisation and data
order, so the report shows exactly what the teacher added (Hinton et al. 2015 compare against
the same network trained on hard labels; PyTorch's KD tutorial does the same)."""
from __future__ import annotations

from compress.core.config import Config
from compress.core.roster import BASELINE, checkpoint_path
from compress.core.stage import Context, Stage
from compress.stages.student_recipe import STUDENT_KEYS, train_student


class BaselineStage(Stage):
    name = "baseline"
    distributed = True  # DDP under torchrun

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "train", *STUDENT_KEYS)  # no loss, alpha or temperature: sweep cells share it

    def enabled(self, cfg: Config) -> bool:
        return cfg.distill.baseline

    def external_inputs(self, cfg: Config) -> list[str]:
        return [cfg.distill.weights] if cfg.distill.weights not in ("none", "imagenet", "") else []

    def outputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path(BASELINE)]

    def run(self, ctx: Context, key: str) -> dict:
        return train_student(ctx, key, BASELINE, distill=False)
