"""What a model is trained with: the optimizer and the learning-rate schedule from the train.*
settings (torch's own schedulers: a LinearLR warm-up, then CosineAnnealingLR or StepLR, chained
by SequentialLR)."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import lr_scheduler

from compress.core.config import TrainConfig


def make_optimizer(params: Iterable, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW or SGD over `params` (parameters, or groups each with its own "lr")."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, epochs: int) -> lr_scheduler.LRScheduler:
    """Stepped once per epoch: `warmup_epochs` of linear warm-up (Goyal et al. 2017; at most all
    but the last epoch), then cosine annealing to zero over the rest, a step decay, or constant."""
    warm = min(cfg.warmup_epochs, max(epochs - 1, 0))
    rest = max(epochs - warm, 1)
    if cfg.schedule == "cosine":
        main: lr_scheduler.LRScheduler = lr_scheduler.CosineAnnealingLR(opt, T_max=rest)
    elif cfg.schedule == "step":
        main = lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    else:
        main = lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    if not warm:
        return main
    warmup = lr_scheduler.LinearLR(opt, start_factor=1 / (warm + 1), end_factor=1.0, total_iters=warm)
    return lr_scheduler.SequentialLR(opt, [warmup, main], milestones=[warm])
