"""Stage `baseline`: the student's CE-only twin, with the identical initialisation and data
order, so the report shows exactly what the teacher added (Hinton et al. 2015 compare against
the same network trained on hard labels; PyTorch's KD tutorial does the same)."""
from __future__ import annotations

from compress.core.config import Config
from compress.core.roster import BASELINE, checkpoint_path
from compress.core.stage import Context
from compress.core.weights import WeightsSource
from compress.methods.recipe import choose_recipe
from compress.methods.student import build_student, train_student
from compress.stages.training_stage import StudentStage

# what shapes a CE-only student: the baseline's settings, and what a sweep's cells share
STUDENT_KEYS = ("distill.arch", "distill.weights", "distill.epochs", "distill.lr", "distill.seed", "distill.augment",
                "distill.freeze_encoder", "distill.head_hidden")


class BaselineStage(StudentStage):
    name = "baseline"
    distributed = True  # DDP under torchrun

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "train", "finetune", *STUDENT_KEYS)  # no loss, alpha or temperature: sweep cells share it

    def enabled(self, cfg: Config) -> bool:
        return cfg.distill.baseline

    def external_inputs(self, cfg: Config) -> list[str]:
        return WeightsSource.parse(cfg.distill.weights).files()

    def outputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path(BASELINE)]

    def run(self, ctx: Context, key: str) -> dict:
        d, seed = ctx.cfg.distill, self.seed(ctx)
        finetune = choose_recipe(ctx.cfg.finetune, d.weights)  # the student's own recipe: a fair twin
        model = build_student(d, len(ctx.data.classes), seed, finetune.head_init_std if finetune else None)
        run = self.train_run(ctx, BASELINE, key, d.epochs, d.lr, seed, d.augment, finetune)
        history = train_student(self.trainer(ctx), model, run, None)
        return self.save_student(ctx, model, BASELINE, history, None, "CE", run.describe(ctx.cfg.train))
