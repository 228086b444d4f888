"""How a student is trained, shared by the distill, baseline and prune stages: its seed, where
the teacher's signal comes from (live, cached logits, out-of-fold), the distillation objective,
and the loss description the report and model card show."""
from __future__ import annotations

import torch

from compress.core.config import Config
from compress.core.data import normalize
from compress.core.errors import CompressError
from compress.core.models import build_model, classification_archs, head_module, load_model, save_checkpoint
from compress.core.roster import TEACHER, checkpoint_path, training_state_path
from compress.core.stage import Context
from compress.core.train import prepare
from compress.stages.kd.logit import cross_entropy
from compress.stages.kd.objective import Objective, Settings, TeacherSignal, named_module
from compress.stages.kd.spec import needs_teacher, needs_teacher_features, parse_spec
from compress.stages.kd.teacher_signal import cached_train_logits, out_of_fold_logits
from compress.stages.teacher_recipe import train_teacher
from compress.stages.training import TrainSpec, train

# what shapes a CE-only student: the baseline's settings, and what a sweep's cells share
STUDENT_KEYS = ("distill.arch", "distill.weights", "distill.epochs", "distill.lr", "distill.seed", "distill.augment",
                "distill.freeze_encoder", "distill.head_hidden")


def student_seed(cfg: Config) -> int:
    """Student and baseline share this seed: same initial weights, same batches in the same order."""
    return cfg.distill.seed if cfg.distill.seed >= 0 else cfg.seed + 1


def check_student(cfg: Config) -> None:
    """The student's architecture and starting weights exist (checked before any work)."""
    if cfg.distill.arch not in classification_archs():
        raise CompressError(f"distill.arch: unknown architecture {cfg.distill.arch!r}; "
                            f"valid: {', '.join(classification_archs())}")
    if cfg.distill.weights not in ("none", ""):
        build_model(cfg.distill.arch, 2, cfg.distill.weights)


def check_loss_recipe(cfg: Config) -> None:
    """The loss spec parses, and the teacher signal it needs can be had with these settings."""
    spec = cfg.distill.loss
    parse_spec(spec)
    features = needs_teacher_features(spec)
    if cfg.distill.teacher_folds >= 2 and features:
        raise CompressError(f"distill.teacher_folds = {cfg.distill.teacher_folds} gives logits only, but distill.loss "
                            f"{spec!r} compares {', '.join(sorted(features))}; use kl/mse/adversarial or teacher_folds = 0")
    if cfg.distill.teacher_folds >= 2 and (cfg.train.mixup > 0 or cfg.train.cutmix > 0):
        raise CompressError("distill.teacher_folds gives one soft label per image, which mixup/cutmix images do not "
                            "have; set train.mixup = train.cutmix = 0 or distill.teacher_folds = 0")
    if "hint" in features:
        student_layer, teacher_layer = cfg.distill.hint_layers.split(":")
        for arch, layer in ((cfg.distill.arch, student_layer), (cfg.teacher.arch, teacher_layer)):
            named_module(build_model(arch, 2), layer)


def logits_can_be_cached(cfg: Config, spec: str) -> bool:
    """The teacher sees the same centre crop every epoch and only its logits are read."""
    bare = cfg.distill.augment == "none" or cfg.data.augment == "none"
    return bare and cfg.train.mixup == 0 and cfg.train.cutmix == 0 and not needs_teacher_features(spec)


def load_teacher(ctx: Context) -> torch.nn.Module:
    teacher, _ = load_model(ctx.run.path(checkpoint_path(TEACHER)))
    return prepare(teacher, ctx.device).eval()


def teacher_signal(ctx: Context, spec: str):
    """(teacher module or None, cached logits or None, a few words on where the signal comes from)."""
    cfg = ctx.cfg
    if not needs_teacher(spec):
        return None, None, "none (online/self distillation)"
    if cfg.distill.teacher_folds >= 2:
        def fold_teacher(data, state, key, desc, seed_offset):
            return train_teacher(ctx, data, state, key, desc, seed_offset)[0]
        return (None, out_of_fold_logits(ctx, fold_teacher),
                f"out-of-fold logits from {cfg.distill.teacher_folds} fold teachers")
    if logits_can_be_cached(cfg, spec):
        logits = cached_train_logits(ctx, lambda: load_teacher(ctx), ctx.run.path(checkpoint_path(TEACHER)))
        return None, logits, "cached teacher logits"
    return load_teacher(ctx), None, "teacher run on each augmented batch"


def make_objective(ctx: Context, model: torch.nn.Module, spec: str, seed: int) -> tuple[Objective, str]:
    """The distillation objective for `model` (alpha < 1), and where its teacher signal comes from."""
    cfg = ctx.cfg
    teacher, logits, source = teacher_signal(ctx, spec)
    example = normalize(ctx.data.val_crops(cfg.data.crop)[:2], cfg.data.mean, cfg.data.std).to(ctx.device)
    prepare(model, ctx.device)
    settings = Settings(cfg.distill.alpha, cfg.distill.temperature, cfg.train.label_smoothing, cfg.distill, seed)
    objective = Objective(spec, settings, model, TeacherSignal(teacher, logits), example, ctx.device)
    return objective, source


def freeze_encoder(model: torch.nn.Module) -> None:
    """Only the classifier head (hidden FC layers included) keeps training; the encoder's
    BatchNorms then keep their running stats."""
    trainable = {id(p) for p in head_module(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)


def train_student(ctx: Context, key: str, name: str, distill: bool) -> dict:
    """Build the student at its seed and train it with the distillation objective (`distill`)
    or CE alone (the baseline); saves `checkpoints/<name>.pt`."""
    cfg, data = ctx.cfg, ctx.data
    seed = student_seed(cfg)
    torch.manual_seed(seed)
    model = build_model(cfg.distill.arch, len(data.classes), cfg.distill.weights, head_hidden=cfg.distill.head_hidden)
    if cfg.distill.freeze_encoder:
        freeze_encoder(model)
    spec = TrainSpec(name, key, cfg.distill.epochs, cfg.distill.lr, seed, cfg.distill.augment)
    if distill and cfg.distill.alpha < 1.0:
        objective, source = make_objective(ctx, model, cfg.distill.loss, seed)
        try:
            history = train(ctx, model, objective, spec, objective=objective)
        finally:
            objective.close()
        loss_desc = describe_loss(cfg)
    else:
        smoothing = cfg.train.label_smoothing
        history = train(ctx, model, lambda m, x, y, _index: cross_entropy(m(x), y, smoothing), spec)
        source, loss_desc = "none (CE only)", "CE"
    accuracy = history[-1]["val_accuracy"] if history else None
    meta = {"arch": cfg.distill.arch, "classes": data.classes, "crop": cfg.data.crop, "loss": loss_desc,
            "history": history, "val_accuracy": accuracy}
    with ctx.run.atomic(checkpoint_path(name)) as tmp:
        save_checkpoint(model, tmp, meta)
    ctx.run.path(training_state_path(name)).unlink(missing_ok=True)
    return {"val_accuracy": accuracy, "loss": loss_desc, "teacher_signal": source, "history": history}


def describe_loss(cfg: Config) -> str:
    """The distillation objective in words, e.g. "0.5*CE + 0.5*(kl) (T=1)"."""
    alpha = cfg.distill.alpha
    if alpha >= 1.0:
        return "CE"
    terms = " + ".join(f"{w:g}*{n}" if w != 1 else n for w, n in parse_spec(cfg.distill.loss))
    return f"{alpha:g}*CE + {1 - alpha:.3g}*({terms}) (T={cfg.distill.temperature:g})"
