"""Distillation losses, registered by name. Config names a loss; it never imports code.

Every loss here returns only the distillation term D(student, teacher); the stage combines it
with the label term as  alpha * CE(student, labels) + (1 - alpha) * D(student, teacher).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from pipeline.errors import CompressError

KDLoss = Callable[..., torch.Tensor]
LOSSES: dict[str, KDLoss] = {}


def register(name: str):
    def wrap(fn: KDLoss) -> KDLoss:
        if name in LOSSES:
            warnings.warn(f"distillation loss {name!r} registered twice; the later one wins")
        LOSSES[name] = fn
        return fn
    return wrap


def get_loss(name: str) -> KDLoss:
    if name not in LOSSES:
        raise CompressError(f"unknown distillation loss {name!r}; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


@register("kl")
def kl_divergence(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    D = T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch. The T² keeps the
    gradient scale of the soft term comparable to CE's as T changes.
    """
    log_p_student = F.log_softmax(student.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature ** 2


@register("mse")
def logit_mse(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean squared error between raw logits (reference document 002; Ba & Caruana 2014).

    D = mean((s - t)²). The temperature does not apply.
    """
    return F.mse_loss(student.float(), teacher.float())


def distillation_objective(name: str, alpha: float, temperature: float):
    """alpha · CE(s, y) + (1 − alpha) · D(s, t), with D the registered loss `name`."""
    kd = get_loss(name)

    def objective(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(student.float(), labels)
        if teacher is None or alpha >= 1.0:
            return ce
        return alpha * ce + (1.0 - alpha) * kd(student, teacher, temperature=temperature)

    return objective
