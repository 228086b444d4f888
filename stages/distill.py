"""Stages `student` and `baseline`: the ResNet18 student distilled from the teacher, and its
CE-only twin with the identical initialisation and data order, so the report shows exactly
what the teacher added (reference documents 000 and 003)."""
from __future__ import annotations

import torch

from pipeline.config import Config
from pipeline.data import normalize
from pipeline.models import build_model, head_module, load_model, save_checkpoint
from pipeline.rundir import checkpoint_path, training_state_path
from pipeline.stage import Context, Stage, section_without_path
from pipeline.train import fit, prepare
from stages.losses import needs_teacher, needs_teacher_features, parse_spec
from stages.objective import Objective
from stages.teacher_outputs import cached_train_logits, out_of_fold_logits


def student_seed(cfg: Config) -> int:
    """Student and baseline share this seed: same initial weights, same batches in the same order."""
    return cfg.distill.seed if cfg.distill.seed >= 0 else cfg.seed + 1


def logits_can_be_cached(cfg: Config, spec: str, augment: str) -> bool:
    """The teacher sees the same centre crop every epoch and only its logits are read."""
    bare = augment == "none" or cfg.data.augment == "none"
    return bare and cfg.train.mixup == 0 and cfg.train.cutmix == 0 and not needs_teacher_features(spec)


def make_objective(ctx: Context, model: torch.nn.Module, spec: str, alpha: float, augment: str,
                   seed: int) -> tuple[Objective, str]:
    """The training objective for `model`, and a few words on where the teacher signal comes from."""
    cfg = ctx.cfg
    teacher = logits = None
    source = "none (CE only)" if alpha >= 1.0 else "none (online/self distillation)"
    if alpha < 1.0 and needs_teacher(spec):
        if cfg.distill.teacher_folds >= 2:
            logits, source = out_of_fold_logits(ctx), f"out-of-fold logits from {cfg.distill.teacher_folds} fold teachers"
        elif logits_can_be_cached(cfg, spec, augment):
            teacher_file = ctx.run.path(checkpoint_path("teacher"))
            logits = cached_train_logits(ctx, lambda: load_teacher(ctx), teacher_file)
            source = "cached teacher logits"
        else:
            teacher, source = load_teacher(ctx), "teacher run on each augmented batch"
    example = normalize(ctx.data.val_crops(cfg.data.crop)[:2], cfg.data.mean, cfg.data.std).to(ctx.device)
    prepare(model, ctx.device)
    objective = Objective(spec, alpha=alpha, temperature=cfg.distill.temperature,
                          label_smoothing=cfg.train.label_smoothing, options=cfg.distill, student=model,
                          teacher=teacher, teacher_logits=logits, example=example, seed=seed, device=ctx.device)
    return objective, source


def train_with(ctx: Context, model: torch.nn.Module, objective: Objective, *, key: str, name: str, epochs: int,
               lr: float, seed: int) -> list[dict]:
    """fit() with the objective's trainable parts, saved state and epoch hooks wired in."""
    try:
        return fit(model, objective, data=ctx.data, dcfg=ctx.cfg.data, tcfg=ctx.cfg.train, epochs=epochs, lr=lr,
                   seed=seed, device=ctx.device, state_path=ctx.run.path(training_state_path(name)), key=key,
                   desc=name, quiet=ctx.quiet, augment=ctx.cfg.distill.augment,
                   extra_modules=objective.trainable_modules(), state_objects=objective.state_objects(),
                   on_epoch_end=objective.epoch_end)
    finally:
        objective.close()


def freeze_encoder(model: torch.nn.Module) -> None:
    """Only the classifier head (hidden FC layers included) keeps training; the encoder's
    BatchNorms then keep their running stats."""
    trainable = {id(p) for p in head_module(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)


def train_student(ctx: Context, key: str, name: str, distill: bool) -> dict:
    cfg, data = ctx.cfg, ctx.data
    seed = student_seed(cfg)
    torch.manual_seed(seed)
    model = build_model(cfg.distill.arch, len(data.classes), cfg.distill.weights, head_hidden=cfg.distill.head_hidden)
    if cfg.distill.freeze_encoder:
        freeze_encoder(model)
    alpha = cfg.distill.alpha if distill else 1.0
    objective, source = make_objective(ctx, model, cfg.distill.loss, alpha, cfg.distill.augment, seed)
    history = train_with(ctx, model, objective, key=key, name=name, epochs=cfg.distill.epochs,
                         lr=cfg.distill.lr, seed=seed)
    accuracy = history[-1]["val_accuracy"] if history else None
    loss_desc = describe_loss(cfg, alpha)
    meta = {"arch": cfg.distill.arch, "classes": data.classes, "crop": cfg.data.crop, "loss": loss_desc,
            "history": history, "val_accuracy": accuracy}
    with ctx.run.atomic(checkpoint_path(name)) as tmp:
        save_checkpoint(model, tmp, meta)
    ctx.run.path(training_state_path(name)).unlink(missing_ok=True)
    return {"val_accuracy": accuracy, "loss": loss_desc, "teacher_signal": source, "history": history}


def describe_loss(cfg: Config, alpha: float) -> str:
    if alpha >= 1.0:
        return "CE"
    terms = " + ".join(f"{w:g}*{n}" if w != 1 else n for w, n in parse_spec(cfg.distill.loss))
    return f"{alpha:g}*CE + {1 - alpha:.3g}*({terms}) (T={cfg.distill.temperature:g})"


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
        return train_student(ctx, key, self.name, distill=True)


class BaselineStage(DistillStage):
    name = "baseline"

    def enabled(self, cfg: Config) -> bool:
        return cfg.distill.baseline

    def key_config(self, cfg: Config) -> dict:
        d = cfg.distill  # only what shapes a CE-only student: no loss, alpha or temperature
        return {"seed": cfg.seed, "data": section_without_path(cfg, "data"), "train": cfg.section("train"),
                "student": {"arch": d.arch, "weights": d.weights, "epochs": d.epochs, "lr": d.lr,
                            "seed": student_seed(cfg), "augment": d.augment, "freeze_encoder": d.freeze_encoder}}

    def inputs(self, cfg: Config) -> list[str]:
        return []

    def run(self, ctx: Context, key: str) -> dict:
        return train_student(ctx, key, self.name, distill=False)
