"""The stage classes that train, and what they share: how a stage's Trainer and TrainRun are
built from its config view, and for the stages that train the student (distill, baseline, prune,
quantize's QAT) its seed, its teacher's signal and how a trained student is saved."""
from __future__ import annotations

from torch import nn

from compress.core.config import Config
from compress.core.models import save_checkpoint
from compress.core.roster import checkpoint_path, teacher_file, training_state_path
from compress.core.stage import Context, Stage
from compress.methods.recipe import FineTune
from compress.methods.student import Distillation, distillation, student_seed
from compress.methods.teacher_signal import TeacherSource, teacher_signal
from compress.methods.training import Trainer, TrainRun


class TrainingStage(Stage):
    """A stage that trains a model."""

    @staticmethod
    def trainer(ctx: Context) -> Trainer:
        return Trainer(ctx.data, ctx.cfg.data, ctx.cfg.train, ctx.device, ctx.quiet, ctx.distributed)

    @staticmethod
    def train_run(ctx: Context, name: str, key: str, epochs: int, lr: float, seed: int, augment: str,
                  finetune: FineTune | None = None) -> TrainRun:
        """A training whose resume file is `checkpoints/<name>.training.pt` (`finetune`: a pretrained start's recipe)."""
        return TrainRun(name, key, ctx.run.path(training_state_path(name)), epochs, lr, seed, augment, finetune)


class StudentStage(TrainingStage):
    """A stage that trains the student (or a copy of it) with its distillation objective."""

    @staticmethod
    def fold_teacher_keys(cfg: Config) -> tuple[str, ...]:
        """Out-of-fold teachers are trained from the teacher recipe, not read from its checkpoint: with
        distill.teacher_folds a stage whose objective reads them depends on every other teacher.* key."""
        if cfg.distill.teacher_folds < 2:
            return ()
        return tuple(f"teacher.{k}" for k in cfg.section("teacher") if k != "checkpoint")

    @staticmethod
    def seed(ctx: Context) -> int:
        return student_seed(ctx.cfg.seed, ctx.cfg.distill.seed)

    @staticmethod
    def distillation(ctx: Context, trainer: Trainer, spec: str, seed: int, augment: str) -> Distillation | None:
        """The objective `spec` with its teacher signal for a training at `seed` with the augmentation
        preset `augment` (centre crops let the teacher's logits be cached); None (CE alone) when
        distill.alpha = 1."""
        cfg = ctx.cfg
        if cfg.distill.alpha >= 1.0:
            return None
        folds = cfg.distill.teacher_folds >= 2
        source = TeacherSource(
            checkpoint=ctx.run.path(teacher_file(cfg)), cache_dir=ctx.cache_dir,
            recipe=cfg.teacher if folds else None, seed=cfg.seed,
            fold_settings={"data_cfg": cfg.section("data"), "train": cfg.section("train"),
                           "teacher": {k: v for k, v in cfg.section("teacher").items() if k != "checkpoint"}}
            if folds else {})
        signal, words = teacher_signal(spec, cfg.distill, trainer, source, augment)
        return distillation(spec, cfg.distill, cfg.train, seed, signal, words)

    @staticmethod
    def save_student(ctx: Context, model: nn.Module, name: str, history: list[dict], plan: Distillation | None,
                     loss: str, recipe: str = "") -> dict:
        """Write `checkpoints/<name>.pt`, drop its resume file; the manifest summary."""
        accuracy = history[-1]["val_accuracy"] if history else None
        meta = {"arch": ctx.cfg.distill.arch, "classes": ctx.data.classes, "crop": ctx.cfg.data.crop, "loss": loss,
                "history": history, "val_accuracy": accuracy, "recipe": recipe}
        with ctx.run.atomic(checkpoint_path(name)) as tmp:
            save_checkpoint(model, tmp, meta)
        ctx.run.path(training_state_path(name)).unlink(missing_ok=True)
        return {"val_accuracy": accuracy, "loss": loss, "teacher_signal": plan.source if plan else "none (CE only)",
                "history": history, "recipe": recipe}
