"""The registry of distillation terms by name, and nothing else.

Term modules (logit, feature, online, adversarial) register themselves on import with
`@register`; importing the `compress.stages.kd` package imports them all, so `TERMS` is complete
whenever anything from the package is used. This module imports none of them (no cycle).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compress.stages.kd.terms import Term

TERMS: dict[str, type[Term]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str):
    """Class decorator: make a Term available to `distill.loss` under `name`."""
    def wrap(cls: type[Term]) -> type[Term]:
        if name in TERMS:
            raise RuntimeError(f"distillation term {name!r} registered twice")
        TERMS[name] = cls
        DESCRIPTIONS[name] = description
        return cls
    return wrap
