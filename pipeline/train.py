"""The one training loop every stage uses: device placement, bf16 autocast on CUDA, per-epoch
checkpoints for resume, progress bars, and validation accuracy per epoch.

A stage supplies `compute_loss(model, images, targets, index) -> loss` (index: the batch's
positions in the train set); the loop knows nothing about distillation. Data order and augmentation depend only on (seed, epoch), so a run resumed from
its last epoch checkpoint reaches the same weights as one that was never interrupted.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from pipeline.config import DataConfig, TrainConfig
from pipeline.data import Dataset, eval_batches, train_batches
from pipeline.errors import CompressError
from pipeline.rundir import atomic_path

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def bar_disabled(quiet: bool) -> bool | None:
    """tqdm's `disable`: off when quiet; None lets tqdm hide bars when stderr is not a terminal."""
    return True if quiet else None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CompressError("device cuda was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed); full fp32 on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def make_optimizer(params: Iterable, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, epochs: int, epoch: int) -> float:
    """Multiplier of the base learning rate in `epoch` (0-based): linear warm-up, then the schedule."""
    import math
    warm = min(cfg.warmup_epochs, max(epochs - 1, 0))
    if epoch < warm:
        return (epoch + 1) / (warm + 1)
    if cfg.schedule == "cosine":
        span = max(epochs - warm, 1)
        return 0.5 * (1 + math.cos(math.pi * (epoch - warm) / span))
    if cfg.schedule == "step":
        return cfg.gamma ** ((epoch - warm) // cfg.step_size)
    return 1.0


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, epochs: int):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: lr_factor(cfg, epochs, epoch))


def train_mode(model: nn.Module) -> None:
    """model.train(), except BatchNorm layers whose weights are frozen keep their running stats."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None and not m.weight.requires_grad:
            m.eval()


@torch.no_grad()
def predict_logits(model: nn.Module, batches: Iterable, device: torch.device, quiet: bool = True,
                   desc: str = "evaluate") -> torch.Tensor:
    """Logits (float32, on the CPU) for every batch, in eval mode."""
    model.eval()
    out = []
    for x, _ in tqdm(batches, disable=bar_disabled(quiet), desc=desc, leave=False, unit="batch"):
        with autocast(device):
            out.append(model(to_device(x, device)).float().cpu())
    return torch.cat(out)


def evaluate(model: nn.Module, data: Dataset, dcfg: DataConfig, device: torch.device, quiet: bool = True) -> float:
    """Top-1 accuracy on the val split (PyTorch; the benchmark measures through ONNX Runtime)."""
    logits = predict_logits(model, eval_batches(data, dcfg), device, quiet)
    return float((logits.argmax(1) == data.val.labels).float().mean())


def _cpu(tree):
    """A state_dict (possibly nested, e.g. an optimizer's) with every tensor moved to the CPU."""
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return {k: _cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cpu(v) for v in tree)
    return tree


def fit(model: nn.Module, compute_loss: LossFn, *, data: Dataset, dcfg: DataConfig, tcfg: TrainConfig,
        epochs: int, lr: float, seed: int, device: torch.device, state_path: Path, key: str,
        desc: str, quiet: bool = False, augment: str = "light", extra_modules: tuple[nn.Module, ...] = (),
        state_objects: tuple = (), on_epoch_end: Callable[[nn.Module], None] | None = None) -> list[dict]:
    """Train `model` for `epochs`, saving a resumable state to `state_path` after every epoch.

    `extra_modules` train with the model (a FitNets regressor, a DML peer); `state_objects`
    (anything with state_dict/load_state_dict: a discriminator and its optimizer) are only
    saved and restored. A state file written under the same `key` (the stage's cache key) is
    resumed; any other is ignored. Returns the per-epoch history: loss, val accuracy, seconds.
    """
    prepare(model, device)
    for module in extra_modules:
        prepare(module, device)
    params = [p for m in (model, *extra_modules) for p in m.parameters() if p.requires_grad]
    opt = make_optimizer(params, tcfg, lr)
    sched = make_scheduler(opt, tcfg, epochs)
    start, history = 0, []
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            for module, sd in zip(extra_modules, state.get("extra", [])):
                module.load_state_dict(sd)
            for obj, sd in zip(state_objects, state.get("objects", [])):
                obj.load_state_dict(sd)
            opt.load_state_dict(state["optimizer"])  # moves its tensors to the parameters' device
            sched.load_state_dict(state["scheduler"])
            start, history = state["epoch"] + 1, state["history"]
            if not quiet:
                tqdm.write(f"{desc}: resuming after epoch {start} of {epochs}")
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        train_mode(model)
        for module in extra_modules:
            train_mode(module)
        total, count = 0.0, 0
        n_batches = -(-len(data.train) // dcfg.batch_size)
        batches = train_batches(data.train, dcfg, seed, epoch, augment=augment, mixup=tcfg.mixup,
                                cutmix=tcfg.cutmix, num_classes=len(data.classes))
        bar = tqdm(batches, total=n_batches, disable=bar_disabled(quiet),
                   desc=f"{desc} {epoch + 1}/{epochs}", leave=False, unit="batch")
        for x, y, index in bar:
            x, y = to_device(x, device), y.to(device)
            with autocast(device):
                loss = compute_loss(model, x, y, index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
            bar.set_postfix(loss=f"{total / count:.4f}")
        sched.step()
        if on_epoch_end is not None:
            on_epoch_end(model)
        accuracy = evaluate(model, data, dcfg, device, quiet)
        history.append({"epoch": epoch + 1, "loss": total / max(count, 1), "val_accuracy": accuracy,
                        "seconds": round(time.perf_counter() - t0, 3)})
        if not quiet:
            tqdm.write(f"{desc} epoch {epoch + 1}/{epochs}: loss {total / max(count, 1):.4f}, "
                       f"val accuracy {accuracy:.4f}")
        with atomic_path(state_path) as tmp:
            torch.save({"key": key, "epoch": epoch, "history": history,
                        "model": _cpu(model.state_dict()),
                        "extra": [_cpu(m.state_dict()) for m in extra_modules],
                        "objects": [_cpu(o.state_dict()) for o in state_objects],
                        "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp)
    model.eval()
    return history
