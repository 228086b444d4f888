"""Distillation terms, registered by name, and the loss spec that combines them.

The training objective for a student is

    alpha · CE(student, labels) + (1 − alpha) · Σ_i w_i · D_i(student, teacher)  [+ Σ extra_i]

where `distill.loss` names the terms and weights, e.g. "kl", "kl + 0.5*hint", "0.3*mse+rkd".
Each D_i is a `Term`: it cites its paper and states its formula once, in its docstring. A term
may carry trainable parts (a FitNets regressor, a projection, a peer network) that the student's
optimizer trains with it, or state of its own (a discriminator and its optimizer, a snapshot);
`extra` is a loss for such a part that is not weighted by alpha (the DML peer's own objective).

Logit terms live here; feature and relation terms in stages/feature_losses.py, the adversarial
term in stages/adversarial.py, online and self distillation in stages/online_losses.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import CompressError


@dataclass
class Outputs:
    """What a network produced for a batch: logits, and the features a term asked for."""

    logits: torch.Tensor
    embedding: torch.Tensor | None = None  # pooled penultimate features, the head's input [N, D]
    hint: torch.Tensor | None = None  # the intermediate map named in distill.hint_layers [N, C, H, W]


@dataclass
class Step:
    """One training batch as a term sees it."""

    x: torch.Tensor
    y: torch.Tensor  # class indices, or soft targets after mixup/cutmix
    student: Outputs
    teacher: Outputs | None  # None for terms that need no fixed teacher


@dataclass
class Setup:
    """What a term factory may look at: settings and the shapes the networks produce."""

    temperature: float
    alpha: float
    label_smoothing: float
    student: nn.Module
    student_probe: Outputs
    teacher_probe: Outputs | None
    options: object  # the DistillConfig, for term-specific keys (hint_layers, rkd_angle_weight, ...)
    seed: int


class Term(nn.Module):
    """One distillation term. Subclasses set the class attributes that say what they need."""

    needs_teacher = True  # reads the fixed teacher's outputs
    features: tuple[str, ...] = ()  # "embedding" and/or "hint", from both student and teacher
    uses_temperature = False

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


TERMS: dict[str, type[Term]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str):
    def wrap(cls: type[Term]) -> type[Term]:
        if name in TERMS:
            raise RuntimeError(f"distillation term {name!r} registered twice")
        TERMS[name] = cls
        DESCRIPTIONS[name] = description
        return cls
    return wrap


def parse_spec(spec: str) -> list[tuple[float, str]]:
    """"kl + 0.5*hint" -> [(1.0, "kl"), (0.5, "hint")]; unknown names and bad weights are errors."""
    _load_all_terms()
    terms = []
    for part in [p.strip() for p in spec.split("+")]:
        m = re.fullmatch(r"(?:([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*\*\s*)?([a-z_]+)", part)
        if not m:
            raise CompressError(f"distill.loss {spec!r}: cannot read {part!r}; write e.g. \"kl\" or "
                                f"\"kl + 0.5*hint\" with terms from: {', '.join(sorted(TERMS))}")
        weight, name = float(m.group(1) or 1.0), m.group(2)
        if name not in TERMS:
            raise CompressError(f"unknown distillation loss {name!r}; valid: {', '.join(sorted(TERMS))}")
        if weight <= 0:
            raise CompressError(f"distill.loss {spec!r}: the weight of {name} must be > 0")
        terms.append((weight, name))
    if len({n for _, n in terms}) != len(terms):
        raise CompressError(f"distill.loss {spec!r}: a term appears twice; give it one weight")
    return terms


def uses_temperature(spec: str) -> bool:
    """Whether any term in `spec` reads distill.temperature (sweeps skip T for those that do not)."""
    return any(_term_class(name).uses_temperature for _, name in parse_spec(spec))


def needs_teacher_features(spec: str) -> set[str]:
    return {f for _, name in parse_spec(spec) for f in _term_class(name).features}


def needs_teacher(spec: str) -> bool:
    return any(_term_class(name).needs_teacher for _, name in parse_spec(spec))


def _term_class(name: str) -> type[Term]:
    return TERMS[name]


def _load_all_terms() -> None:
    """Import the modules whose import registers the non-logit terms."""
    import stages.adversarial  # noqa: F401
    import stages.feature_losses  # noqa: F401
    import stages.online_losses  # noqa: F401


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """CE against class indices or soft targets (mixup/cutmix), with optional label smoothing."""
    return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)


# ---------------------------------------------------------------- logit terms

def kl_divergence(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    D = T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch. The T² keeps the
    gradient scale of the soft term comparable to CE's as T changes.
    """
    log_p_student = F.log_softmax(student.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature ** 2


def logit_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between raw logits (reference document 002; Ba & Caruana 2014).

    D = mean((s − t)²). The temperature does not apply.
    """
    return F.mse_loss(student.float(), teacher.float())


@register("kl", "Hinton et al. 2015: T²·KL(softmax(t/T) ‖ softmax(s/T))")
class KLTerm(Term):
    uses_temperature = True

    def __init__(self, setup: Setup):
        super().__init__()
        self.temperature = setup.temperature

    def forward(self, step: Step):
        return kl_divergence(step.student.logits, step.teacher.logits, self.temperature), None


@register("mse", "Ba & Caruana 2014 / reference 002: mean((s − t)²) on raw logits")
class MSETerm(Term):
    def __init__(self, setup: Setup):
        super().__init__()

    def forward(self, step: Step):
        return logit_mse(step.student.logits, step.teacher.logits), None
