"""The student's training objective: the loss spec's terms, the taps that expose the features
they need, and where the teacher's outputs come from (the live teacher, or logits cached per
training image).

    loss = alpha · CE(s, y) + (1 − alpha) · Σ w_i · D_i  +  Σ extra_i

`Objective` is what `fit()` calls as `compute_loss(model, x, y, index)`; it also hands `fit()`
the terms' trainable parts, their saved state and their end-of-epoch hooks.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from compress.core.config import DistillConfig
from compress.core.errors import CompressError
from compress.core.heads import classifier_head
from compress.methods.kd.logit import cross_entropy
from compress.methods.kd.registry import TERMS
from compress.methods.kd.spec import HintLayers, parse_spec
from compress.methods.kd.terms import Outputs, Setup, Step


class FeatureTap:
    """Forward hooks that keep a network's head input (embedding) and one named feature map."""

    def __init__(self, model: nn.Module, hint_module: str | None, embedding: bool):
        self.embedding = self.hint = None
        self.handles = []
        if embedding:
            _, head = classifier_head(model)
            self.handles.append(head.register_forward_pre_hook(self._keep_embedding))
        if hint_module:
            self.handles.append(named_module(model, hint_module).register_forward_hook(self._keep_hint))

    def _keep_embedding(self, _module, inputs):
        x = inputs[0]
        self.embedding = x.mean(dim=(2, 3)) if x.dim() == 4 else x  # a 1x1-conv head takes the map itself

    def _keep_hint(self, _module, _inputs, output):
        self.hint = output

    def outputs(self, logits: torch.Tensor) -> Outputs:
        return Outputs(logits, self.embedding, self.hint)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def named_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise CompressError(f"distill.hint_layers: {type(model).__name__} has no module {name!r}; "
                            f"its top-level modules are {', '.join(names)}") from None


@torch.no_grad()
def probe(model: nn.Module, x: torch.Tensor, hint_module: str | None) -> Outputs:
    """Shapes of what `model` produces on `x` (eval mode; training mode restored afterwards)."""
    was_training = model.training
    tap = FeatureTap(model, hint_module, embedding=True)
    try:
        model.eval()
        out = tap.outputs(model(x))
    finally:
        tap.remove()
        model.train(was_training)
    return out


TeacherFn = Callable[[torch.Tensor, torch.Tensor], Outputs]  # (x, index) -> teacher outputs


def live_teacher(teacher: nn.Module, tap: FeatureTap) -> TeacherFn:
    """The teacher runs on the same (augmented) batch as the student."""
    def outputs(x, _index):
        with torch.no_grad():
            return tap.outputs(teacher(x))
    return outputs


def cached_teacher(logits: torch.Tensor) -> TeacherFn:
    """Logits computed once per training image (no augmentation, or out-of-fold teachers)."""
    def outputs(x, index):
        return Outputs(logits[index.to(logits.device)].to(x.device))
    return outputs


@dataclass
class Settings:
    """The objective's numbers: alpha·CE + (1 − alpha)·Σ wᵢ·Dᵢ, T, label smoothing; `options` (the
    distill.* settings) holds the per-term keys; `seed` initialises parts such as a DML peer."""

    alpha: float
    temperature: float
    label_smoothing: float
    options: DistillConfig
    seed: int


@dataclass
class TeacherSignal:
    """Where the teacher's outputs come from: a live module, or logits cached per training image."""

    module: nn.Module | None = None
    logits: torch.Tensor | None = None


class Objective:
    def __init__(self, spec: str, settings: Settings, student: nn.Module, signal: TeacherSignal,
                 example: torch.Tensor, device: torch.device):
        self.alpha, self.label_smoothing = settings.alpha, settings.label_smoothing
        self.weighted = parse_spec(spec) if settings.alpha < 1.0 else []
        kinds = [TERMS[name] for _, name in self.weighted]
        features = {f for k in kinds for f in k.features}
        hint = "hint" in features
        teacher = signal.module
        layers = HintLayers.parse(settings.options.hint_layers).resolve(student, teacher) if hint and teacher else None
        s_layer, t_layer = (layers.student, layers.teacher) if layers else (None, None)
        self.needs_teacher = any(k.needs_teacher for k in kinds)
        if self.needs_teacher and teacher is None and signal.logits is None:
            raise CompressError(f"distill.loss {spec!r} needs a teacher, and none was given")
        if features and teacher is None:
            raise CompressError(f"distill.loss {spec!r} compares features, which cached teacher logits do not have")
        student_probe = probe(student, example, s_layer)
        teacher_probe = probe(teacher, example.to(next(teacher.parameters()).device), t_layer) \
            if teacher is not None and features else None
        setup = Setup(settings.temperature, settings.alpha, settings.label_smoothing, student, student_probe,
                      teacher_probe, settings.options, settings.seed)
        self.terms = [(w, TERMS[name](setup).to(device)) for w, name in self.weighted]  # before the taps
        self.student_tap = FeatureTap(student, s_layer, "embedding" in features)
        self.teacher_fn: TeacherFn | None = None
        self.teacher_tap: FeatureTap | None = None
        if self.needs_teacher and signal.logits is not None:
            self.teacher_fn = cached_teacher(signal.logits)
        elif self.needs_teacher and teacher is not None:
            self.teacher_tap = FeatureTap(teacher, t_layer, "embedding" in features)
            self.teacher_fn = live_teacher(teacher, self.teacher_tap)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        loss = cross_entropy(logits, y, self.label_smoothing)
        if not self.terms:
            return loss
        step = Step(x, y, self.student_tap.outputs(logits),
                    self.teacher_fn(x, index) if self.teacher_fn else None)
        distill, extra = 0.0, 0.0
        for weight, term in self.terms:
            d, e = term(step)
            distill = distill + weight * d
            if e is not None:
                extra = extra + e
        return self.alpha * loss + (1 - self.alpha) * distill + extra

    def trainable_modules(self) -> tuple[nn.Module, ...]:
        return tuple(m for _, term in self.terms for m in term.trainable_modules())

    def state_objects(self) -> tuple:
        return tuple(o for _, term in self.terms for o in term.state_objects())

    def epoch_end(self, model: nn.Module) -> None:
        for _, term in self.terms:
            term.epoch_end(model)

    def close(self) -> None:
        for tap in (self.student_tap, self.teacher_tap):
            if tap is not None:
                tap.remove()
