"""How a student is trained, one helper for every training that starts from the student: the
distilled student, its CE baseline, the fine-tunes after pruning and QAT (each with its phase's
loss), its seed and initial weights, and the loss description the report and card show.

    loss = alpha · CE(s, y) + (1 − alpha) · Σ wᵢ · Dᵢ(s, t)   (compress.methods.kd)

`train_student` trains with CE alone when no distillation is given or alpha = 1; otherwise the
objective is opened around the training (`distillation_objective`) and its feature taps are
removed afterwards whatever happens.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from compress.core import architectures
from compress.core.config import DataConfig, DistillConfig, TrainConfig
from compress.core.data import Dataset, normalize
from compress.core.errors import CompressError
from compress.core.heads import head_module
from compress.core.loop import prepare
from compress.core.models import build_model
from compress.core.weights import WeightsSource
from compress.methods.kd.objective import Objective, Settings, TeacherSignal, named_module
from compress.methods.kd.registry import TERMS
from compress.methods.kd.spec import HintLayers, needs_teacher_features, parse_spec
from compress.methods.training import Trainer, TrainRun

Phase = Literal["distill", "prune", "qat"]


def student_seed(seed: int, distill_seed: int) -> int:
    """Student and baseline share this seed: same initial weights, same batches in the same order
    (distill.seed, or the run's seed + 1 when it is -1)."""
    return distill_seed if distill_seed >= 0 else seed + 1


def build_student(recipe: DistillConfig, classes: int, seed: int, new_head_std: float | None = None) -> nn.Module:
    """The student at `seed`: distill.arch, its starting weights and head (a new head at N(0,
    `new_head_std`) on a pretrained start), the encoder frozen when asked."""
    torch.manual_seed(seed)
    model = build_model(recipe.arch, classes, recipe.weights, head_hidden=recipe.head_hidden, new_head_std=new_head_std)
    if recipe.freeze_encoder:
        freeze_encoder(model)
    return model


def freeze_encoder(model: nn.Module) -> None:
    """Only the classifier head (hidden FC layers included) keeps training; the encoder's
    BatchNorms then keep their running stats."""
    trainable = {id(p) for p in head_module(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)


def phase_loss(spec: str, phase: Phase) -> str:
    """The student's loss spec adapted to a training phase.

    - distill: as written;
    - prune (a short fine-tune from the teacher): teacher-free terms (dml, self) become kl, since
      a fresh peer or a snapshot would start from nothing in a 2-epoch fine-tune;
    - qat: losses comparing intermediate features become kl on logits, since a traced,
      BatchNorm-folded graph no longer calls the hooked modules.
    """
    if phase == "qat":
        return "kl" if needs_teacher_features(spec) else spec
    if phase == "prune":
        terms: dict[str, float] = {}
        for w, name in parse_spec(spec):
            name = name if TERMS[name].needs_teacher else "kl"
            terms[name] = terms.get(name, 0.0) + w
        return " + ".join(f"{w:g}*{n}" for n, w in terms.items())
    return spec


@dataclass(frozen=True)
class Distillation:
    """What makes a student's training a distillation: the loss spec, its numbers (alpha, T, label
    smoothing, per-term settings, seed) and where the teacher's outputs come from."""

    spec: str
    settings: Settings
    signal: TeacherSignal
    source: str  # where the signal comes from, in words (report and card)


def distillation(spec: str, recipe: DistillConfig, train_cfg: TrainConfig, seed: int, signal: TeacherSignal,
                 source: str) -> Distillation:
    settings = Settings(recipe.alpha, recipe.temperature, train_cfg.label_smoothing, recipe, seed)
    return Distillation(spec, settings, signal, source)


def probe_batch(data: Dataset, data_cfg: DataConfig, device: torch.device) -> torch.Tensor:
    """Two normalised val images: what the terms size their trainable parts by."""
    return normalize(data.val_crops(data_cfg.crop)[:2], data_cfg.mean, data_cfg.std).to(device)


@contextmanager
def distillation_objective(model: nn.Module, plan: Distillation, example: torch.Tensor,
                           device: torch.device) -> Iterator[Objective]:
    """The objective for `model`, its forward hooks removed on leaving."""
    prepare(model, device)
    objective = Objective(plan.spec, plan.settings, model, plan.signal, example, device)
    try:
        yield objective
    finally:
        objective.close()


def train_student(trainer: Trainer, model: nn.Module, run: TrainRun, plan: Distillation | None) -> list[dict]:
    """Train `model` with `plan`'s objective, or with CE alone when there is none or alpha = 1."""
    if plan is None or plan.settings.alpha >= 1.0:
        return trainer.fit(model, run)
    with distillation_objective(model, plan, probe_batch(trainer.data, trainer.data_cfg, trainer.device),
                                trainer.device) as objective:
        return trainer.fit(model, run, objective)


def describe_loss(recipe: DistillConfig) -> str:
    """The distillation objective in words, e.g. "0.5*CE + 0.5*(kl) (T=1)"."""
    alpha = recipe.alpha
    if alpha >= 1.0:
        return "CE"
    terms = " + ".join(f"{w:g}*{n}" if w != 1 else n for w, n in parse_spec(recipe.loss))
    return f"{alpha:g}*CE + {1 - alpha:.3g}*({terms}) (T={recipe.temperature:g})"


def check_student(recipe: DistillConfig) -> None:
    """The student's architecture and starting weights exist (checked before any work)."""
    architectures.check_arch(recipe.arch, "distill.arch")
    if WeightsSource.parse(recipe.weights).kind != "none":
        build_model(recipe.arch, 2, recipe.weights)


def check_loss_recipe(recipe: DistillConfig, train_cfg: TrainConfig, teacher_arch: str,
                      onnx_teacher: bool = False) -> None:
    """The loss spec parses, and the teacher signal it needs can be had with these settings."""
    spec = recipe.loss
    parse_spec(spec)
    features = needs_teacher_features(spec)
    if onnx_teacher and features:
        raise CompressError(f"distill.loss {spec!r} compares the teacher's {', '.join(sorted(features))}, and a teacher "
                            "given as teacher.onnx gives logits only; use kl, mse or adversarial")
    if onnx_teacher and recipe.teacher_folds >= 2:
        raise CompressError("distill.teacher_folds trains fold teachers from teacher.arch; a teacher given as "
                            "teacher.onnx cannot be retrained: set distill.teacher_folds = 0")
    if recipe.teacher_folds >= 2 and features:
        raise CompressError(f"distill.teacher_folds = {recipe.teacher_folds} gives logits only, but distill.loss "
                            f"{spec!r} compares {', '.join(sorted(features))}; use kl/mse/adversarial or teacher_folds = 0")
    if recipe.teacher_folds >= 2 and (train_cfg.mixup > 0 or train_cfg.cutmix > 0):
        raise CompressError("distill.teacher_folds gives one soft label per image, which mixup/cutmix images do not "
                            "have; set train.mixup = train.cutmix = 0 or distill.teacher_folds = 0")
    if "hint" in features:
        student, teacher = build_model(recipe.arch, 2), build_model(teacher_arch, 2)
        layers = HintLayers.parse(recipe.hint_layers).resolve(student, teacher)
        for model, layer in ((student, layers.student), (teacher, layers.teacher)):
            named_module(model, layer)
