"""Stages `student` and `baseline`: the ResNet18 student distilled from the teacher, and its
CE-only twin with the identical initialisation and data order, so the report shows exactly
what the teacher added (reference documents 000 and 003)."""
from __future__ import annotations

import torch

from pipeline.config import Config
from pipeline.models import build_model, load_model, save_checkpoint
from pipeline.rundir import checkpoint_path, training_state_path
from pipeline.stage import Context, Stage, section_without_path
from pipeline.train import fit, prepare
from stages.losses import distillation_objective


def student_seed(cfg: Config) -> int:
    """Student and baseline share this seed: same initial weights, same batches in the same order."""
    return cfg.seed + 1


def distill_loss_fn(teacher: torch.nn.Module | None, loss: str, alpha: float, temperature: float):
    """compute_loss for the training loop: the teacher runs on the same (augmented) batch."""
    objective = distillation_objective(loss, alpha, temperature)

    def compute_loss(model, x, y):
        t = None
        if teacher is not None and alpha < 1.0:
            with torch.no_grad():
                t = teacher(x)
        return objective(model(x), t, y)

    return compute_loss


def train_student(ctx: Context, key: str, name: str, teacher: torch.nn.Module | None) -> dict:
    cfg, data = ctx.cfg, ctx.data
    torch.manual_seed(student_seed(cfg))
    model = build_model(cfg.distill.arch, len(data.classes), cfg.distill.weights)
    alpha = cfg.distill.alpha if teacher is not None else 1.0
    compute_loss = distill_loss_fn(teacher, cfg.distill.loss, alpha, cfg.distill.temperature)
    history = fit(model, compute_loss, data=data, dcfg=cfg.data, tcfg=cfg.train, epochs=cfg.distill.epochs,
                  lr=cfg.distill.lr, seed=student_seed(cfg), device=ctx.device,
                  state_path=ctx.run.path(training_state_path(name)), key=key, desc=name, quiet=ctx.quiet)
    accuracy = history[-1]["val_accuracy"] if history else None
    loss_desc = (f"{alpha}*CE + {1 - alpha:.3g}*{cfg.distill.loss}(T={cfg.distill.temperature})"
                 if teacher is not None else "CE")
    meta = {"arch": cfg.distill.arch, "classes": data.classes, "crop": cfg.data.crop, "loss": loss_desc,
            "history": history, "val_accuracy": accuracy}
    with ctx.run.atomic(checkpoint_path(name)) as tmp:
        save_checkpoint(model, tmp, meta)
    ctx.run.path(training_state_path(name)).unlink(missing_ok=True)
    return {"val_accuracy": accuracy, "loss": loss_desc, "history": history}


def load_teacher(ctx: Context) -> torch.nn.Module:
    teacher, _ = load_model(ctx.run.path(checkpoint_path("teacher")))
    return prepare(teacher, ctx.device).eval()


class DistillStage(Stage):
    name = "student"
    sections = ("data", "train")

    def key_config(self, cfg: Config) -> dict:
        distill = {k: v for k, v in cfg.section("distill").items() if k != "baseline"}
        return {**super().key_config(cfg), "distill": distill}

    def inputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path("teacher")]

    def external_inputs(self, cfg: Config) -> list[str]:
        return [cfg.distill.weights] if cfg.distill.weights not in ("none", "imagenet", "") else []

    def outputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path(self.name)]

    def run(self, ctx: Context, key: str) -> dict:
        return train_student(ctx, key, self.name, load_teacher(ctx))


class BaselineStage(DistillStage):
    name = "baseline"

    def enabled(self, cfg: Config) -> bool:
        return cfg.distill.baseline

    def key_config(self, cfg: Config) -> dict:
        d = cfg.distill  # only what shapes a CE-only student: no loss, alpha or temperature
        return {"seed": cfg.seed, "data": section_without_path(cfg, "data"), "train": cfg.section("train"),
                "student": {"arch": d.arch, "weights": d.weights, "epochs": d.epochs, "lr": d.lr}}

    def inputs(self, cfg: Config) -> list[str]:
        return []

    def run(self, ctx: Context, key: str) -> dict:
        return train_student(ctx, key, self.name, None)
