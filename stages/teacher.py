"""Stage `teacher`: fine-tune a torchvision classifier (ResNet50 by default) on the train split,
or adopt a finished teacher checkpoint after checking its classes against the data."""
from __future__ import annotations

from pathlib import Path

from compress.core.config import Config
from compress.core.data import Dataset
from compress.core.errors import CompressError
from compress.core.models import build_model, classification_archs, save_checkpoint
from compress.core.roster import TEACHER, checkpoint_path
from compress.core.stage import Context
from compress.core.train import evaluate
from compress.core.weights import WeightsSource
from compress.methods.teacher import given_teacher, train_teacher
from compress.stages.training_stage import TrainingStage


class TeacherStage(TrainingStage):
    name = "teacher"
    distributed = True  # DDP under torchrun

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "train", "teacher")

    def check(self, cfg: Config, data: Dataset | None) -> None:
        t = cfg.teacher
        if t.arch not in classification_archs():
            raise CompressError(f"teacher.arch: unknown architecture {t.arch!r}; valid: {', '.join(classification_archs())}")
        weights = WeightsSource.parse(t.weights)
        for key, path in (("teacher.checkpoint", t.checkpoint), ("teacher.weights", weights.file)):
            if path and not Path(path).is_file():
                raise CompressError(f"{key}: checkpoint file {path} does not exist")
        if data is None:
            return
        if t.checkpoint:
            given_teacher(t.checkpoint, data.classes, t.arch)
        elif weights.kind != "none":
            build_model(t.arch, len(data.classes), t.weights)  # fails now, not after an hour of training

    def external_inputs(self, cfg: Config) -> list[str]:
        given = [cfg.teacher.checkpoint] if cfg.teacher.checkpoint else []
        return given + WeightsSource.parse(cfg.teacher.weights).files()

    def outputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path(TEACHER)]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, data = ctx.cfg, ctx.data
        meta = {"arch": cfg.teacher.arch, "classes": data.classes, "crop": cfg.data.crop}
        run = self.train_run(ctx, TEACHER, key, cfg.teacher.epochs, cfg.teacher.lr, cfg.seed, cfg.teacher.augment)
        if cfg.teacher.checkpoint:
            model, given_meta = given_teacher(cfg.teacher.checkpoint, data.classes, cfg.teacher.arch)
            meta.update(arch=given_meta["arch"], source=cfg.teacher.checkpoint, history=[])
            model = model.to(ctx.device)
        else:
            model, history = train_teacher(self.trainer(ctx), cfg.teacher, run)
            meta.update(source=f"trained from weights={cfg.teacher.weights}", history=history)
        accuracy = evaluate(model, data, cfg.data, ctx.device)
        meta["val_accuracy"] = accuracy
        with ctx.run.atomic(checkpoint_path(TEACHER)) as tmp:
            save_checkpoint(model, tmp, meta)
        run.state_path.unlink(missing_ok=True)
        ctx.log(f"teacher: val accuracy {accuracy:.4f}")
        return {"val_accuracy": accuracy, "history": meta["history"]}
