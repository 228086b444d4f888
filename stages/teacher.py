"""Stage `teacher`: fine-tune a classifier (ResNet50 by default; torchvision or timm) on the train
split, adopt a finished teacher checkpoint after checking its classes against the data, or take
a teacher given as an ONNX file from any framework (checked, and adapted to the run's
preprocessing, in onnx/teacher.onnx)."""
from __future__ import annotations

from pathlib import Path

import torch

from compress.core import architectures
from compress.core.config import Config
from compress.core.data import Dataset
from compress.core.errors import CompressError
from compress.core.loop import evaluate
from compress.core.models import build_model, save_checkpoint
from compress.core.roster import TEACHER, checkpoint_path, onnx_path, teacher_file
from compress.core.stage import Context
from compress.core.weights import WeightsSource
from compress.exports import given_onnx
from compress.exports.metadata import client_metadata
from compress.methods.fitness import check_runs
from compress.methods.recipe import choose_recipe
from compress.methods.teacher import given_teacher, train_teacher
from compress.stages.training_stage import TrainingStage


class TeacherStage(TrainingStage):
    name = "teacher"
    distributed = True  # DDP under torchrun

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "train", "teacher", "finetune")

    def check(self, cfg: Config, data: Dataset | None) -> None:
        t = cfg.teacher
        if t.onnx:
            if t.checkpoint:
                raise CompressError("teacher.onnx and teacher.checkpoint both name a finished teacher; keep one")
            given_onnx.inspect(t.onnx, data.classes if data is not None else None, t.classes, cfg.data.crop)
            return
        architectures.check_arch(t.arch, "teacher.arch")
        weights = WeightsSource.parse(t.weights)
        for key, path in (("teacher.checkpoint", t.checkpoint), ("teacher.weights", weights.file)):
            if path and not Path(path).is_file():
                raise CompressError(f"{key}: checkpoint file {path} does not exist")
        if data is None:
            if not t.checkpoint:
                check_runs(t.arch, "teacher.arch", cfg.data.crop, cfg.export.opset, t.head_hidden, t.dropout)
            return
        if t.checkpoint:
            given_teacher(t.checkpoint, data.classes, t.arch)
        elif weights.kind != "none":
            build_model(t.arch, len(data.classes), t.weights)  # fails now, not after an hour of training

    def external_inputs(self, cfg: Config) -> list[str]:
        given = [p for p in (cfg.teacher.checkpoint, cfg.teacher.onnx) if p]
        return given + WeightsSource.parse(cfg.teacher.weights).files()

    def outputs(self, cfg: Config) -> list[str]:
        return [teacher_file(cfg)]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, data = ctx.cfg, ctx.data
        if cfg.teacher.onnx:
            return self._given_onnx(ctx)
        meta = {"arch": cfg.teacher.arch, "classes": data.classes, "crop": cfg.data.crop}
        finetune = None if cfg.teacher.checkpoint else choose_recipe(cfg.finetune, cfg.teacher.weights)
        run = self.train_run(ctx, TEACHER, key, cfg.teacher.epochs, cfg.teacher.lr, cfg.seed, cfg.teacher.augment,
                             finetune)
        if cfg.teacher.checkpoint:
            model, given_meta = given_teacher(cfg.teacher.checkpoint, data.classes, cfg.teacher.arch)
            meta.update(arch=given_meta["arch"], source=cfg.teacher.checkpoint, history=[])
            model = model.to(ctx.device)
        else:
            model, history = train_teacher(self.trainer(ctx), cfg.teacher, run)
            meta.update(source=f"trained from weights={cfg.teacher.weights}", history=history,
                        recipe=run.describe(cfg.train))
        accuracy = evaluate(model, data, cfg.data, ctx.device)
        meta["val_accuracy"] = accuracy
        with ctx.run.atomic(checkpoint_path(TEACHER)) as tmp:
            save_checkpoint(model, tmp, meta)
        run.state_path.unlink(missing_ok=True)
        ctx.log(f"teacher: val accuracy {accuracy:.4f}")
        return {"val_accuracy": accuracy, "history": meta["history"], "recipe": meta.get("recipe", "given")}

    @staticmethod
    def _given_onnx(ctx: Context) -> dict:
        """The ONNX teacher, checked and adapted to the run's preprocessing, as onnx/teacher.onnx."""
        cfg, data = ctx.cfg, ctx.data
        given = given_onnx.inspect(cfg.teacher.onnx, data.classes, cfg.teacher.classes, cfg.data.crop)
        metadata = client_metadata(data.classes, cfg.data.mean, cfg.data.std, cfg.data.resize, cfg.data.crop,
                                   model_name=TEACHER, arch=f"onnx:{Path(cfg.teacher.onnx).name}",
                                   producer=f"given ONNX file {cfg.teacher.onnx}")
        with ctx.run.atomic(onnx_path(TEACHER)) as tmp:
            given_onnx.adapt(given, tmp, cfg.data.mean, cfg.data.std, metadata)
        teacher = given_onnx.OnnxTeacher(ctx.run.path(onnx_path(TEACHER)), torch.device("cpu"))
        accuracy = evaluate(teacher, data, cfg.data, torch.device("cpu"))
        renormalised = given.mean is not None and (given.mean != list(cfg.data.mean) or given.std != list(cfg.data.std))
        ctx.log(f"teacher: the given ONNX file {cfg.teacher.onnx}, val accuracy {accuracy:.4f}"
                + (" (its own mean/std restored in front of its graph)" if renormalised else ""))
        return {"val_accuracy": accuracy, "history": [], "source": cfg.teacher.onnx, "renormalised": renormalised}
