"""The one training loop every stage uses, in the shape of torchvision's reference scripts:
`train_one_epoch` and `evaluate`, with `fit` running epochs and `TrainingState` saving what a
resume needs after every epoch. What to train with (optimizer, schedule, the fine-tuning recipe)
is compress.methods.training's job; this module only runs it.

The caller builds the optimizer, schedule and batches (a `Recipe`) and supplies
`compute_loss(model, images, targets, index) -> loss` (index: the batch's positions in the
train set); the loop knows nothing about distillation. Data order and augmentation depend only
on (seed, epoch), so a run resumed from its last epoch reaches the same weights as one that was
never interrupted. bf16 autocast and channels_last on CUDA; the loss is summed on the device and
read once per epoch, so no step waits for the host.
"""
from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from compress.core import faults
from compress.core.config import DataConfig
from compress.core.data import Dataset, eval_batch_size, eval_batches
from compress.core.distributed import average_gradients, is_main, mean_over_ranks
from compress.core.errors import CompressError
from compress.core.loader import TrainBatch
from compress.core.rundir import atomic_path

log = logging.getLogger("compress")

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


def train_mode(model: nn.Module) -> None:
    """model.train(), except BatchNorm layers whose weights are frozen keep their running stats."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None and not m.weight.requires_grad:
            m.eval()


@torch.no_grad()
def predict_logits(model: nn.Module, batches: Iterable, device: torch.device, quiet: bool = True,
                   desc: str = "evaluate", total: int | None = None) -> torch.Tensor:
    """Logits (float32, on the CPU) for every batch, in eval mode."""
    model.eval()
    out = []
    for x, _ in tqdm(batches, disable=bar_disabled(quiet), desc=desc, leave=False, unit="batch", total=total):
        with autocast(device):
            out.append(model(to_device(x, device)).float().cpu())
    return torch.cat(out)


def evaluate(model: nn.Module, data: Dataset, dcfg: DataConfig, device: torch.device, quiet: bool = True) -> float:
    """Top-1 accuracy on the val split (PyTorch; the benchmark measures through ONNX Runtime)."""
    size = eval_batch_size(dcfg)
    logits = predict_logits(model, eval_batches(data, dcfg, size), device, quiet, total=-(-len(data.val) // size))
    return float((logits.argmax(1) == data.val.labels).float().mean())


def _cpu(tree):
    """A state_dict (possibly nested, e.g. an optimizer's) with every tensor moved to the CPU."""
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return {k: _cpu(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_cpu(v) for v in tree)
    return tree


@dataclass
class Recipe:
    """How one model is trained; built by the caller, run by `fit`."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epochs: int
    batches: Callable[[int], Iterable[TrainBatch]]  # epoch -> that epoch's batches
    steps_per_epoch: int
    device: torch.device
    extra_modules: tuple[nn.Module, ...] = ()  # train with the model (a FitNets regressor, a DML peer)
    on_epoch_end: Callable[[nn.Module], None] | None = None
    on_epoch_start: Callable[[nn.Module, int], None] | None = None  # (model, epoch): e.g. freeze while a head probes
    # (epoch, its batches) -> the epoch's loss when it ran some other way (LP-FT's linear probe), None to train
    probe_epoch: Callable[[int, Iterable[TrainBatch]], float | None] | None = None
    keep_best: bool = False  # end with the weights of the best val epoch (LP-FT: never below its own probe)
    distributed: bool = False  # the model is DDP-wrapped and every rank runs this recipe


class TrainingState:
    """Everything a resume needs, saved to `path` after every epoch: weights of the model and its
    extra modules, optimizer, schedule, the history so far, and `objects` (anything with
    state_dict/load_state_dict that trains some other way: a discriminator and its optimizer).
    A file written under another `key` (the stage's cache key) belongs to other settings: ignored."""

    def __init__(self, path: Path, key: str, model: nn.Module, recipe: Recipe, objects: tuple = ()):
        self.path, self.key, self.model, self.recipe, self.objects = path, key, model, recipe, objects
        self.best: dict | None = None  # with recipe.keep_best: the model's weights at its best val epoch so far

    def resume(self) -> tuple[int, list[dict]]:
        """(first epoch to run, history so far), after loading the saved state if it is ours."""
        if not self.path.is_file():
            return 0, []
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, corrupt or not ours: unpickling refused or failed
            log.warning("%s cannot be read (%s); training this stage from the start", self.path, type(exc).__name__)
            return 0, []
        if not isinstance(state, dict) or state.get("key") != self.key:
            return 0, []
        self.model.load_state_dict(state["model"])
        for module, sd in zip(self.recipe.extra_modules, state.get("extra", []), strict=False):
            module.load_state_dict(sd)
        for obj, sd in zip(self.objects, state.get("objects", []), strict=False):
            obj.load_state_dict(sd)
        self.recipe.optimizer.load_state_dict(state["optimizer"])  # moves its tensors to the parameters' device
        self.recipe.scheduler.load_state_dict(state["scheduler"])
        self.best = state.get("best")
        return state["epoch"] + 1, state["history"]

    def save(self, epoch: int, history: list[dict]) -> None:
        if not is_main():  # under DDP every rank holds the same state; rank 0 writes it
            return
        with atomic_path(self.path) as tmp:
            torch.save({"key": self.key, "epoch": epoch, "history": history,
                        "model": _cpu(self.model.state_dict()),
                        "extra": [_cpu(m.state_dict()) for m in self.recipe.extra_modules],
                        "objects": [_cpu(o.state_dict()) for o in self.objects],
                        "optimizer": self.recipe.optimizer.state_dict(),
                        "scheduler": self.recipe.scheduler.state_dict(), "best": self.best}, tmp)

    def remember_if_best(self, history: list[dict]) -> None:
        """Keep a copy of the model's weights when the last epoch of `history` is the best on val so far."""
        if best_epoch(history) == len(history) - 1:
            self.best = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def train_one_epoch(model: nn.Module, compute_loss: LossFn, optimizer: torch.optim.Optimizer,
                    batches: Iterable[TrainBatch], device: torch.device, progress: tqdm,
                    also_averaged: tuple[nn.Module, ...] | None = None) -> float:
    """One pass over `batches`; returns the mean loss (read from the device once, at the end; under
    DDP, `also_averaged` is not None and the mean is over every rank's images, and the gradients
    of those modules, which DDP does not wrap, are averaged across ranks too)."""
    total = torch.zeros((), device=device)
    count = 0
    for x, y, index in batches:
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        with autocast(device):
            loss = compute_loss(model, x, y, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if also_averaged:
            average_gradients(also_averaged)
        optimizer.step()
        total += loss.detach().float() * len(y)
        count += len(y)
        progress.update()
    return mean_over_ranks(total, count) if also_averaged is not None else float(total) / max(count, 1)


def best_epoch(history: list[dict]) -> int:
    """Index of the epoch with the highest val accuracy in `history`, the earliest of ties."""
    return max(range(len(history)), key=lambda i: (history[i]["val_accuracy"], -i))


def fit(model: nn.Module, compute_loss: LossFn, recipe: Recipe, state: TrainingState, *,
        validate: Callable[[nn.Module], float], desc: str, quiet: bool = False) -> list[dict]:
    """Train for `recipe.epochs` (resuming from `state`), validating and saving after every epoch.
    Returns the per-epoch history: loss, val accuracy, seconds."""
    start, history = state.resume()
    if start:
        log.info("%s: resuming after epoch %d of %d", desc, start, recipe.epochs)
    for epoch in range(start, recipe.epochs):
        t0 = time.perf_counter()
        for module in (model, *recipe.extra_modules):
            train_mode(module)
        if recipe.on_epoch_start is not None:  # after train_mode: it may put layers back in eval mode
            recipe.on_epoch_start(model, epoch)
        batches = recipe.batches(epoch)
        loss = recipe.probe_epoch(epoch, batches) if recipe.probe_epoch is not None else None
        probed = loss is not None
        if loss is None:
            with tqdm(total=recipe.steps_per_epoch, disable=bar_disabled(quiet), leave=False, unit="batch",
                      desc=f"{desc} {epoch + 1}/{recipe.epochs}") as progress:
                loss = train_one_epoch(model, compute_loss, recipe.optimizer, batches, recipe.device, progress,
                                       recipe.extra_modules if recipe.distributed else None)
        with warnings.catch_warnings():
            if probed:  # the optimizer did not step this epoch, by design: the schedule still counts it
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            recipe.scheduler.step()
        if recipe.on_epoch_end is not None:
            recipe.on_epoch_end(model)
        faults.reach("train.epoch", desc=desc, epoch=epoch)
        accuracy = validate(model)
        history.append({"epoch": epoch + 1, "loss": loss, "val_accuracy": accuracy,
                        "seconds": round(time.perf_counter() - t0, 3)})
        log.info("%s epoch %d/%d: loss %.4f, val accuracy %.4f", desc, epoch + 1, recipe.epochs, loss, accuracy)
        if recipe.keep_best:
            state.remember_if_best(history)
        state.save(epoch, history)
    if recipe.keep_best and state.best is not None and history:
        best = best_epoch(history)
        if best != len(history) - 1:
            model.load_state_dict(state.best)
            log.info("%s: kept epoch %d (val accuracy %.4f), the best on val; the last reached %.4f", desc,
                     best + 1, history[best]["val_accuracy"], history[-1]["val_accuracy"])
        history[best]["kept"] = True
    model.eval()
    return history
