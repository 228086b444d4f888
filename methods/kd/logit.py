"""Logit terms: cross-entropy on labels, Hinton's temperature KL and MSE on raw logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from compress.methods.kd.registry import register
from compress.methods.kd.terms import Setup, Step, Term


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """CE against class indices or soft targets (mixup/cutmix), with optional label smoothing."""
    return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)


def kl_divergence(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    D = T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch. The T² keeps the
    gradient scale of the soft term comparable to CE's as T changes.
    """
    log_p_student = F.log_softmax(student.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature ** 2


def logit_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between raw logits (Ba & Caruana 2014, "Do Deep Nets Really Need to be
    Deep?"). D = mean((s − t)²). The temperature does not apply."""
    return F.mse_loss(student.float(), teacher.float())


@register("kl")
class KLTerm(Term):

    def __init__(self, setup: Setup):
        super().__init__()
        self.temperature = setup.temperature

    def forward(self, step: Step):
        return kl_divergence(step.student.logits, step.fixed_teacher().logits, self.temperature), None


@register("mse")
class MSETerm(Term):
    def __init__(self, setup: Setup):
        super().__init__()

    def forward(self, step: Step):
        return logit_mse(step.student.logits, step.fixed_teacher().logits), None
