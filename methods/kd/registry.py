"""The registry of distillation terms by name, and nothing else.

Term modules (logit, feature, online, adversarial) register themselves on import with
`@register`; importing the `compress.methods.kd` package imports them all, so `TERMS` is complete
whenever anything from the package is used. This module imports none of them (no cycle). What a
term needs and says about itself lives in `compress.methods.loss_catalog` (plain data, readable without torch);
registering copies it onto the class.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from compress.methods.loss_catalog import CATALOG

if TYPE_CHECKING:
    from compress.methods.kd.terms import Term

TERMS: dict[str, type[Term]] = {}


def register(name: str):
    """Class decorator: make a Term available to `distill.loss` under `name`, with the attributes
    its catalog entry states."""
    def wrap(cls: type[Term]) -> type[Term]:
        if name in TERMS:
            raise RuntimeError(f"distillation term {name!r} registered twice")
        if name not in CATALOG:
            raise RuntimeError(f"distillation term {name!r} has no entry in compress.methods.loss_catalog")
        info = CATALOG[name]
        cls.needs_teacher, cls.features = info.needs_teacher, info.features
        cls.uses_temperature, cls.settings = info.uses_temperature, info.settings
        TERMS[name] = cls
        return cls
    return wrap
