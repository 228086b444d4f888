"""What a model is trained with, chosen by where it starts: from random initialisation, the
optimizer and schedule of the train.* settings (torch's own schedulers: a LinearLR warm-up, then
CosineAnnealingLR or StepLR, chained by SequentialLR); from pretrained weights, LP-FT with
discriminative rates (finetune.*)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import lr_scheduler

from compress.core.config import FinetuneConfig, TrainConfig
from compress.core.weights import WeightsSource


def fused_step(params: list) -> bool | None:
    """True (torch's `fused=True`) when every parameter is a float tensor on the CPU or a CUDA GPU:
    torch's fused AdamW/SGD kernels update all tensors in one pass instead of one small op per
    tensor (ResNet50's AdamW step on 2 CPU cores: 81 ms -> 18 ms, a fifth of a batch-32 step)."""
    tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    ok = bool(tensors) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)
    return True if ok else None  # None: torch's default, one op per tensor


def make_optimizer(params: Iterable, cfg: TrainConfig | FineTune, lr: float) -> torch.optim.Optimizer:
    """AdamW or SGD over `params` (parameters, or groups each with its own "lr"), with `cfg`'s
    optimizer, momentum and weight decay (the from-scratch settings, or LP-FT's)."""
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused_step(params))
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=fused_step(params))


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


# ---------------------------------------------------------------- fine-tuning a pretrained start

@dataclass(frozen=True)
class FineTune:
    """LP-FT (Kumar et al. 2022): the new head, started small, trains alone on frozen features for
    `probe_epochs` (linear probing: fit to convergence on cached features, one augmented view of the
    training set per probe epoch; compress.methods.linear_probe), then the whole network trains with discriminative rates (the
    pretrained layers at lr x backbone_lr_scale) on a cosine schedule. Why: a randomly initialised
    head beside trainable pretrained layers sends large gradients into them and "will destroy your
    pre-trained features" (Keras' transfer-learning guide); probing first gives the head a sensible
    start, so fine-tuning moves the features only as much as the task needs. The model that comes out
    is the best val epoch's, so fine-tuning never ends below its own linear probe."""

    probe_epochs: int
    probe_l2: float
    lr: float
    backbone_lr_scale: float
    optimizer: str
    momentum: float
    weight_decay: float
    head_init_std: float
    keep_bn_statistics: bool = True

    @classmethod
    def from_config(cls, cfg: FinetuneConfig) -> FineTune:
        return cls(cfg.probe_epochs, cfg.probe_l2, cfg.lr, cfg.backbone_lr_scale, cfg.optimizer, cfg.momentum,
                   cfg.weight_decay, cfg.head_init_std, cfg.keep_bn_statistics)

    def describe(self, epochs: int) -> str:
        """The recipe in words, as the terminal, manifest, report and card state it."""
        probe = min(self.probe_epochs, epochs)
        rest = epochs - probe
        text = (f"LP-FT from pretrained weights: new head initialised at std {self.head_init_std:g}, fit alone by "
                f"L-BFGS (L2 {self.probe_l2:g}) on the frozen features of {probe} augmented view{'s' if probe != 1 else ''} "
                f"of the training set")
        if rest:
            text += (f", then the whole network {rest} epoch{'s' if rest != 1 else ''} (head lr {self.lr:g}, backbone "
                     f"{self.lr * self.backbone_lr_scale:g}, cosine)")
        text += "; BatchNorm statistics kept" if self.keep_bn_statistics else ""
        text += "; the best val epoch is kept, the probe included"
        return text + f"; {self.optimizer}" + (f" momentum {self.momentum:g}" if self.optimizer == "sgd" else "") + \
            f", weight decay {self.weight_decay:g}"


def choose_recipe(cfg: FinetuneConfig, weights: str) -> FineTune | None:
    """The fine-tuning recipe for a model starting from `weights` (resolved: none | imagenet | a
    file), or None for the from-scratch train.* recipe."""
    pretrained = WeightsSource.parse(weights).kind in ("imagenet", "file")
    if cfg.recipe == "lp_ft" or (cfg.recipe == "auto" and pretrained):
        return FineTune.from_config(cfg)
    return None


def scratch_description(cfg: TrainConfig, lr: float, epochs: int) -> str:
    warm = f"{cfg.warmup_epochs} warm-up epochs, " if cfg.warmup_epochs else ""
    return f"from scratch: {cfg.optimizer} lr {lr:g}, {warm}{cfg.schedule} schedule over {epochs} epochs"


@dataclass
class FineTuneSchedule:
    """What `finetune_optimization` builds: the optimizer (a head group and a backbone group), its
    per-group schedule, the per-epoch hook that freezes the pretrained layers while the head is
    probed, and the probe epoch itself (None from the first whole-network epoch on)."""

    optimizer: torch.optim.Optimizer
    scheduler: lr_scheduler.LRScheduler
    on_epoch_start: Callable[[nn.Module, int], None]
    probe_epoch: Callable[[int, Iterable], float | None]


def finetune_optimization(ft: FineTune, model: nn.Module, head: nn.Module, extra: tuple[nn.Module, ...],
                          epochs: int, device: torch.device) -> FineTuneSchedule:
    """LP-FT for `model`: the first `probe_epochs` epochs fit `head` on cached frozen features
    (compress.methods.linear_probe); the rest train everything, the head at ft.lr and the
    pretrained layers at ft.lr x backbone_lr_scale, both on a cosine to zero."""
    from compress.methods.linear_probe import fit_head, head_inputs
    head_ids = {id(p) for m in (head, *extra) for p in m.parameters()}
    trainable = [p for m in (model, *extra) for p in m.parameters() if p.requires_grad]  # freeze_encoder stays
    head_params = [p for p in trainable if id(p) in head_ids]
    backbone = [p for p in trainable if id(p) not in head_ids]
    groups = [{"params": head_params, "lr": ft.lr}, {"params": backbone, "lr": ft.lr * ft.backbone_lr_scale}]
    opt = make_optimizer(groups, ft, ft.lr)
    probe = min(ft.probe_epochs, epochs)
    rest = max(epochs - probe, 1)

    def factor(epoch: int) -> float:  # 0 while probing (the optimizer is not used), then cosine to zero
        return 0.0 if epoch < probe else 0.5 * (1 + math.cos(math.pi * (epoch - probe) / rest))

    schedule = lr_scheduler.LambdaLR(opt, [factor, factor])  # one rule for both groups' own rates
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and not any(m is h for h in head.modules())]

    def freeze_while_probing(_model: nn.Module, epoch: int) -> None:
        tuning = epoch >= probe
        for p in backbone:
            p.requires_grad_(tuning)
        if not tuning or ft.keep_bn_statistics:  # small batches would re-estimate ImageNet's statistics badly
            for m in norms:
                m.eval()

    views: list[tuple[torch.Tensor, torch.Tensor]] = []

    def probe_epoch(epoch: int, batches: Iterable) -> float | None:
        if epoch >= probe:
            views.clear()  # the cache is not needed once the whole network trains
            return None
        views.append(head_inputs(model, head, batches, device))
        return fit_head(head, torch.cat([f for f, _ in views]), torch.cat([t for _, t in views]), ft.probe_l2)

    return FineTuneSchedule(opt, schedule, freeze_while_probing, probe_epoch)
