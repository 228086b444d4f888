"""Stage `distill`: the ResNet18 student distilled from the teacher (checkpoint `student`), with
the objective alpha·CE + (1 − alpha)·Σ wᵢ·Dᵢ from `distill.loss` (compress.methods.kd)."""
from __future__ import annotations

from compress.core.config import Config
from compress.core.data import Dataset
from compress.core.roster import STUDENT, checkpoint_path, teacher_file
from compress.core.stage import Context
from compress.core.weights import WeightsSource
from compress.methods.fitness import check_runs
from compress.methods.recipe import choose_recipe
from compress.methods.student import build_student, check_loss_recipe, check_student, describe_loss, train_student
from compress.stages.training_stage import StudentStage


class DistillStage(StudentStage):
    name = "distill"
    distributed = True  # DDP under torchrun

    def reads(self, cfg: Config) -> tuple[str, ...]:
        distill = tuple(f"distill.{k}" for k in cfg.section("distill") if k != "baseline")
        return ("data", "train", "finetune", *distill, "teacher.onnx", *self.fold_teacher_keys(cfg))

    def check(self, cfg: Config, data: Dataset | None) -> None:
        check_student(cfg.distill)
        check_loss_recipe(cfg.distill, cfg.train, cfg.teacher.arch, bool(cfg.teacher.onnx))
        if data is None:
            check_runs(cfg.distill.arch, "distill.arch", cfg.data.crop, cfg.export.opset, cfg.distill.head_hidden)

    def inputs(self, cfg: Config) -> list[str]:
        return [teacher_file(cfg)]

    def external_inputs(self, cfg: Config) -> list[str]:
        return WeightsSource.parse(cfg.distill.weights).files()

    def outputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path(STUDENT)]

    def run(self, ctx: Context, key: str) -> dict:
        d, trainer, seed = ctx.cfg.distill, self.trainer(ctx), self.seed(ctx)
        finetune = choose_recipe(ctx.cfg.finetune, d.weights)
        model = build_student(d, len(ctx.data.classes), seed, finetune.head_init_std if finetune else None)
        plan = self.distillation(ctx, trainer, d.loss, seed, d.augment)
        run = self.train_run(ctx, STUDENT, key, d.epochs, d.lr, seed, d.augment, finetune)
        history = train_student(trainer, model, run, plan)
        return self.save_student(ctx, model, STUDENT, history, plan, describe_loss(d) if plan else "CE",
                                 run.describe(ctx.cfg.train))
