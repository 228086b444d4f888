"""How a model is trained in a run: the optimizer, schedule and seeded batches from the train.*
settings, a resume file, validation on val, and DistributedDataParallel under torchrun. The loop
itself is `compress.core.loop.fit`.

`Trainer` holds what every training of a run shares (the data, its settings, the device);
`TrainRun` is one training (its name, cache key, resume file, length, learning rate, seed and
augmentation preset). Stages build both; nothing here reads a stage's Context.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from compress.core.config import DataConfig, TrainConfig
from compress.core.data import Dataset
from compress.core.distributed import rank, world_size
from compress.core.errors import CompressError
from compress.core.heads import head_module
from compress.core.image_store import DecodedOnRead, DiskImages
from compress.core.loader import TrainLoader, default_workers
from compress.core.loop import LossFn, Recipe, TrainingState, evaluate, fit, prepare
from compress.methods.kd.logit import cross_entropy
from compress.methods.kd.objective import Objective
from compress.methods.recipe import FineTune, finetune_optimization, make_optimizer, make_scheduler, scratch_description

log = logging.getLogger("compress")

@dataclass(frozen=True)
class TrainRun:
    """One training: its progress label, the cache key its resume file belongs to (a file written
    under another key is ignored), where that file lives, and length, lr, seed, augment preset."""

    name: str
    key: str
    state_path: Path
    epochs: int
    lr: float
    seed: int
    augment: str
    finetune: FineTune | None = None  # a pretrained start: LP-FT instead of the train.* recipe at `lr`

    def describe(self, train_cfg: TrainConfig) -> str:
        """The recipe this training follows, in words (terminal, manifest, report, card)."""
        return self.finetune.describe(self.epochs) if self.finetune else scratch_description(train_cfg, self.lr,
                                                                                             self.epochs)


@dataclass(frozen=True)
class Trainer:
    """What every training of a run shares: the data, the data and train.* settings, the device,
    and whether the model trains on every torch.distributed rank."""

    data: Dataset
    data_cfg: DataConfig
    train_cfg: TrainConfig
    device: torch.device
    quiet: bool = False
    distributed: bool = False

    def on(self, data: Dataset) -> Trainer:
        """The same trainer on other data (a fold teacher's training folds)."""
        return replace(self, data=data)

    def cross_entropy(self) -> LossFn:
        """CE on the labels with train.label_smoothing: the loss of a teacher, a baseline, a CE fine-tune."""
        smoothing = self.train_cfg.label_smoothing
        return lambda model, x, y, _index: cross_entropy(model(x), y, smoothing)

    def fit(self, model: nn.Module, run: TrainRun, objective: Objective | None = None) -> list[dict]:
        """Train `model` with `objective` (CE when None), resumable from `run.state_path`; the
        caller removes that file once the model is saved. Returns the per-epoch history."""
        extra = objective.trainable_modules() if objective else ()
        for module in (model, *extra):
            prepare(module, self.device)
        start = probe = None
        if run.finetune:
            tuning = finetune_optimization(run.finetune, model, head_module(model), extra, run.epochs, self.device)
            optimizer, schedule, start, probe = (tuning.optimizer, tuning.scheduler, tuning.on_epoch_start,
                                                 tuning.probe_epoch)
        else:
            optimizer = make_optimizer([p for m in (model, *extra) for p in m.parameters() if p.requires_grad],
                                       self.train_cfg, run.lr)
            schedule = make_scheduler(optimizer, self.train_cfg, run.epochs)
        log.info("%s: %s", run.name, run.describe(self.train_cfg))
        trained = self._data_parallel(model, objective) if self.distributed else model
        in_memory = not isinstance(self.data.train.images, DiskImages | DecodedOnRead)
        with TrainLoader(self.data.train, self.data_cfg, run.seed, augment=run.augment, mixup=self.train_cfg.mixup,
                         cutmix=self.train_cfg.cutmix, num_classes=len(self.data.classes), device=self.device,
                         workers=default_workers(self.data_cfg.workers, self.device, in_memory),
                         rank=rank() if self.distributed else 0,
                         world=world_size() if self.distributed else 1) as loader:
            recipe = Recipe(
                optimizer=optimizer, scheduler=schedule, epochs=run.epochs, on_epoch_start=start, probe_epoch=probe,
                keep_best=run.finetune is not None,
                batches=loader.epoch, steps_per_epoch=len(loader), device=self.device, extra_modules=extra,
                on_epoch_end=objective.epoch_end if objective else None, distributed=self.distributed)
            state = TrainingState(run.state_path, run.key, model, recipe, objective.state_objects() if objective else ())
            return fit(trained, objective or self.cross_entropy(), recipe, state, desc=run.name, quiet=self.quiet,
                       validate=lambda _: evaluate(model, self.data, self.data_cfg, self.device))

    def _data_parallel(self, model: nn.Module, objective: Objective | None) -> nn.Module:
        """`model` wrapped in DistributedDataParallel (BatchNorm synchronised across ranks when
        train.sync_bn); the unwrapped model keeps the weights that are saved and validated."""
        if objective is not None and objective.state_objects():
            raise CompressError("distill.loss trains a second network with its own optimizer (adversarial), which "
                                "multi-process training does not synchronise yet; run it in one process")
        if self.train_cfg.sync_bn:
            for name, child in list(model.named_children()):
                setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        return nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index]
                                                   if self.device.type == "cuda" else None)
