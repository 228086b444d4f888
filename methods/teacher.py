"""How a teacher is made: trained with CE from the teacher.* recipe (the teacher stage, and the
fold teachers of out-of-fold distillation), or adopted from a finished checkpoint after its
classes are checked against the data."""
from __future__ import annotations

import torch
from torch import nn

from compress.core.config import TeacherConfig
from compress.core.errors import CompressError
from compress.core.models import build_model, load_model
from compress.core.weights import load_checkpoint
from compress.methods.training import Trainer, TrainRun


def given_teacher(path: str, classes: list[str], arch: str) -> tuple[nn.Module, dict]:
    """Load a finished teacher; its classes must be the data's, in the same order."""
    state, meta = load_checkpoint(path)
    if "classes" in meta:
        if list(meta["classes"]) != list(classes):
            raise CompressError(f"teacher checkpoint {path} was trained on classes {meta['classes']}, "
                                f"but the data has {classes}")
        return load_model(path)
    model = build_model(arch, len(classes))  # a bare state_dict: trust teacher.arch, check the head
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CompressError(f"teacher checkpoint {path} does not fit {arch} with {len(classes)} classes "
                            f"({str(exc).splitlines()[-1].strip()[:160]})") from None
    return model.eval(), {"arch": arch, "classes": list(classes)}


def train_teacher(trainer: Trainer, recipe: TeacherConfig, run: TrainRun) -> tuple[nn.Module, list[dict]]:
    """A teacher built at `run.seed` and trained with CE (label smoothing, mixup/cutmix and the
    augment preset from the settings) on `trainer`'s data."""
    torch.manual_seed(run.seed)
    model = build_model(recipe.arch, len(trainer.data.classes), recipe.weights, recipe.dropout, recipe.head_hidden,
                        new_head_std=run.finetune.head_init_std if run.finetune else None)
    return model, trainer.fit(model, run)
