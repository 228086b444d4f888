"""Stage `teacher`: fine-tune a torchvision classifier (ResNet50 by default) on the train split,
or adopt a finished teacher checkpoint after checking its classes against the data."""
from __future__ import annotations

import torch

from pipeline.config import Config
from pipeline.data import Dataset
from pipeline.errors import CompressError
from pipeline.models import build_model, load_checkpoint, load_model, save_checkpoint
from pipeline.rundir import checkpoint_path, training_state_path
from pipeline.stage import Context, Stage
from pipeline.train import evaluate, fit
from stages.losses import cross_entropy


def given_teacher(path: str, classes: list[str], arch: str):
    """Load a finished teacher; its classes must be the data's, in the same order."""
    state, meta = load_checkpoint(path)
    if "classes" in meta:
        if list(meta["classes"]) != list(classes):
            raise CompressError(f"teacher checkpoint {path} was trained on classes {meta['classes']}, "
                                f"but the data has {classes}")
        model, meta = load_model(path)
        return model, meta
    model = build_model(arch, len(classes))  # a bare state_dict: trust teacher.arch, check the head
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CompressError(f"teacher checkpoint {path} does not fit {arch} with {len(classes)} classes "
                            f"({str(exc).splitlines()[-1].strip()[:160]})") from None
    return model.eval(), {"arch": arch, "classes": list(classes)}


def train_teacher(ctx: Context, data: Dataset, state_path, key: str, desc: str, seed_offset: int = 0):
    """A teacher trained with CE (label smoothing, mixup/cutmix and augment preset from config)."""
    cfg = ctx.cfg
    torch.manual_seed(cfg.seed + seed_offset)
    model = build_model(cfg.teacher.arch, len(data.classes), cfg.teacher.weights, cfg.teacher.dropout,
                        cfg.teacher.head_hidden)
    smoothing = cfg.train.label_smoothing
    history = fit(model, lambda m, x, y, _index: cross_entropy(m(x), y, smoothing), data=data, dcfg=cfg.data,
                  tcfg=cfg.train, epochs=cfg.teacher.epochs, lr=cfg.teacher.lr, seed=cfg.seed + seed_offset,
                  device=ctx.device, state_path=state_path, key=key, desc=desc, quiet=ctx.quiet,
                  augment=cfg.teacher.augment)
    return model, history


class TeacherStage(Stage):
    name = "teacher"
    sections = ("data", "train", "teacher")

    def external_inputs(self, cfg: Config) -> list[str]:
        given = [cfg.teacher.checkpoint] if cfg.teacher.checkpoint else []
        weights = cfg.teacher.weights
        return given + ([weights] if weights not in ("none", "imagenet", "") else [])

    def outputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path("teacher")]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, data = ctx.cfg, ctx.data
        meta = {"arch": cfg.teacher.arch, "classes": data.classes, "crop": cfg.data.crop}
        if cfg.teacher.checkpoint:
            model, given_meta = given_teacher(cfg.teacher.checkpoint, data.classes, cfg.teacher.arch)
            meta.update(arch=given_meta["arch"], source=cfg.teacher.checkpoint, history=[])
            model = model.to(ctx.device)
        else:
            model, history = train_teacher(ctx, data, ctx.run.path(training_state_path(self.name)), key, "teacher")
            meta.update(source=f"trained from weights={cfg.teacher.weights}", history=history)
        accuracy = evaluate(model, data, cfg.data, ctx.device)
        meta["val_accuracy"] = accuracy
        with ctx.run.atomic(checkpoint_path(self.name)) as tmp:
            save_checkpoint(model, tmp, meta)
        ctx.run.path(training_state_path(self.name)).unlink(missing_ok=True)
        ctx.log(f"teacher: val accuracy {accuracy:.4f}")
        return {"val_accuracy": accuracy, "history": meta["history"]}
