"""What a distillation term is and what it sees: the Term base class and its inputs.

The training objective for a student is

    alpha · CE(student, labels) + (1 − alpha) · Σ_i w_i · D_i(student, teacher)  [+ Σ extra_i]

Each D_i is a `Term`: it cites its paper and states its formula once, in its docstring. A term
may carry trainable parts (a FitNets regressor, a projection, a peer network) that the student's
optimizer trains with it, or state of its own (a discriminator and its optimizer, a snapshot);
`extra` is a loss for such a part that is not weighted by alpha (the DML peer's own objective).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compress.core.config import DistillConfig


@dataclass
class Outputs:
    """What a network produced for a batch: logits, and the features a term asked for."""

    logits: torch.Tensor
    embedding: torch.Tensor | None = None  # pooled penultimate features, the head's input [N, D]
    hint: torch.Tensor | None = None  # the intermediate map named in distill.hint_layers [N, C, H, W]

    def feature(self, name: str) -> torch.Tensor:
        """A tapped feature a term declared it needs (`features`); the objective taps exactly those."""
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"{name} was not tapped: the term must list it in its catalog features")
        return value


@dataclass
class Step:
    """One training batch as a term sees it."""

    x: torch.Tensor
    y: torch.Tensor  # class indices, or soft targets after mixup/cutmix
    student: Outputs
    teacher: Outputs | None  # None for terms that need no fixed teacher

    def fixed_teacher(self) -> Outputs:
        """The teacher's outputs, for a term that needs a teacher (the objective refuses a spec without one)."""
        if self.teacher is None:
            raise RuntimeError("this term needs the teacher's outputs, and the objective has none")
        return self.teacher


@dataclass
class Setup:
    """What a term factory may look at: settings and the shapes the networks produce."""

    temperature: float
    alpha: float
    label_smoothing: float
    student: nn.Module
    student_probe: Outputs
    teacher_probe: Outputs | None  # only for terms that compare features

    def teacher_shapes(self) -> Outputs:
        if self.teacher_probe is None:
            raise RuntimeError("a feature term needs the teacher probed, and it was not")
        return self.teacher_probe
    options: DistillConfig  # the distill.* settings, for term-specific keys (hint_layers, rkd_angle_weight, ...)
    seed: int


class Term(nn.Module):
    """One distillation term. Subclasses set the class attributes that say what they need."""

    needs_teacher = True  # reads the fixed teacher's outputs
    features: tuple[str, ...] = ()  # "embedding" and/or "hint", from both student and teacher
    uses_temperature = False
    settings: tuple[str, ...] = ()  # distill.* keys of this term alone

    def forward(self, step: Step) -> tuple[torch.Tensor, torch.Tensor | None]:  # (D, extra)
        raise NotImplementedError

    def trainable_modules(self) -> list[nn.Module]:
        """Trained by the student's optimizer and saved with the training state."""
        return [self] if any(p.requires_grad for p in self.parameters()) else []

    def state_objects(self) -> list:
        """Saved with the training state but trained some other way (or not at all)."""
        return []

    def epoch_end(self, model: nn.Module) -> None:
        """Called after every training epoch."""
