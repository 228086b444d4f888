"""Stage `distill`: the ResNet18 student distilled from the teacher (checkpoint `student`), with
the objective alpha·CE + (1 − alpha)·Σ wᵢ·Dᵢ from `distill.loss` (compress.stages.kd)."""
from __future__ import annotations

from compress.core.config import Config
from compress.core.data import Dataset
from compress.core.roster import STUDENT, TEACHER, checkpoint_path
from compress.core.stage import Context, Stage
from compress.stages.student_recipe import check_loss_recipe, check_student, train_student


class DistillStage(Stage):
    name = "distill"
    distributed = True  # DDP under torchrun

    def reads(self, cfg: Config) -> tuple[str, ...]:
        distill = tuple(f"distill.{k}" for k in cfg.section("distill") if k != "baseline")
        # out-of-fold teachers are trained from the teacher recipe, not read from its checkpoint
        folds = tuple(f"teacher.{k}" for k in cfg.section("teacher") if k != "checkpoint") \
            if cfg.distill.teacher_folds >= 2 else ()
        return ("data", "train", *distill, *folds)

    def check(self, cfg: Config, data: Dataset | None) -> None:
        check_student(cfg)
        check_loss_recipe(cfg)

    def inputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path(TEACHER)]

    def external_inputs(self, cfg: Config) -> list[str]:
        return [cfg.distill.weights] if cfg.distill.weights not in ("none", "imagenet", "") else []

    def outputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path(STUDENT)]

    def run(self, ctx: Context, key: str) -> dict:
        return train_student(ctx, key, STUDENT, distill=True)
