"""How a teacher is made: trained with CE from config (the teacher stage, and the fold teachers
of out-of-fold distillation), or adopted from a finished checkpoint after checking its classes."""
from __future__ import annotations

from pathlib import Path

import torch

from compress.core.data import Dataset
from compress.core.errors import CompressError
from compress.core.models import build_model, load_checkpoint, load_model
from compress.core.stage import Context
from compress.stages.kd.logit import cross_entropy
from compress.stages.training import TrainSpec, train


def given_teacher(path: str, classes: list[str], arch: str):
    """Load a finished teacher; its classes must be the data's, in the same order."""
    state, meta = load_checkpoint(path)
    if "classes" in meta:
        if list(meta["classes"]) != list(classes):
            raise CompressError(f"teacher checkpoint {path} was trained on classes {meta['classes']}, "
                                f"but the data has {classes}")
        model, meta = load_model(path)
        return model, meta
    model = build_model(arch, len(classes))  # a bare state_dict: trust teacher.arch, check the head
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CompressError(f"teacher checkpoint {path} does not fit {arch} with {len(classes)} classes "
                            f"({str(exc).splitlines()[-1].strip()[:160]})") from None
    return model.eval(), {"arch": arch, "classes": list(classes)}


def train_teacher(ctx: Context, data: Dataset, state_path: Path, key: str, desc: str, seed_offset: int = 0):
    """A teacher trained with CE (label smoothing, mixup/cutmix and augment preset from config).
    Also trains the fold teachers of out-of-fold distillation (`data` = the other folds)."""
    cfg = ctx.cfg
    seed = cfg.seed + seed_offset
    torch.manual_seed(seed)
    model = build_model(cfg.teacher.arch, len(data.classes), cfg.teacher.weights, cfg.teacher.dropout,
                        cfg.teacher.head_hidden)
    smoothing = cfg.train.label_smoothing
    spec = TrainSpec(desc, key, cfg.teacher.epochs, cfg.teacher.lr, seed, cfg.teacher.augment)
    history = train(ctx, model, lambda m, x, y, _index: cross_entropy(m(x), y, smoothing), spec, data=data,
                    state_path=state_path)
    return model, history
