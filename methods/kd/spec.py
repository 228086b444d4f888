"""`distill.loss`: one term name or a weighted sum of them, e.g. "kl", "kl + 0.5*hint",
"0.3*mse+rkd"; parsed against the registry, with what the named terms need."""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from compress.core import architectures
from compress.core.errors import CompressError
from compress.methods.kd.registry import TERMS


def parse_spec(spec: str) -> list[tuple[float, str]]:
    """"kl + 0.5*hint" -> [(1.0, "kl"), (0.5, "hint")]; unknown names and bad weights are errors."""
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
    return any(TERMS[name].uses_temperature for _, name in parse_spec(spec))


def needs_teacher_features(spec: str) -> set[str]:
    return {f for _, name in parse_spec(spec) for f in TERMS[name].features}


def needs_teacher(spec: str) -> bool:
    return any(TERMS[name].needs_teacher for _, name in parse_spec(spec))


@dataclass(frozen=True)
class HintLayers:
    """`distill.hint_layers` "student_module:teacher_module": the maps a FitNets hint compares."""

    student: str
    teacher: str

    @classmethod
    def parse(cls, text: str) -> HintLayers:
        if text == "auto":
            return cls("auto", "auto")
        student, sep, teacher = text.partition(":")
        if not sep or not student or not teacher or ":" in teacher:
            raise CompressError(f"distill.hint_layers {text!r} must be auto or student_module:teacher_module, "
                                "e.g. layer3:layer3")
        return cls(student.strip(), teacher.strip())

    def resolve(self, student: nn.Module, teacher: nn.Module) -> HintLayers:
        """Module paths for `auto` sides: each network's stride-16 stage output (ResNet: layer3)."""
        return HintLayers(*(_stride16(model, name, side) if name == "auto" else name
                            for model, name, side in ((student, self.student, "student"),
                                                      (teacher, self.teacher, "teacher"))))


def _stride16(model: nn.Module, name: str, side: str) -> str:
    found = architectures.stride16_map(model)
    if found is None:
        raise CompressError(f"distill.hint_layers = auto: the {side} ({type(model).__name__}) has no stride-16 "
                            "feature map to compare; name its module in distill.hint_layers, or use a loss on logits")
    return found
