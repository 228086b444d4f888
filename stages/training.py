"""How the training stages (teacher, distill, baseline, prune) train a model: the optimizer,
schedule and seeded batches from config, resume state, validation on val. The loop itself is
`compress.core.train.fit`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from compress.core.data import Dataset
from compress.core.image_store import DecodedOnRead, DiskImages
from compress.core.loader import TrainLoader, default_workers
from compress.core.roster import training_state_path
from compress.core.stage import Context
from compress.core.train import LossFn, Recipe, TrainingState, evaluate, fit, make_optimizer, make_scheduler, prepare


@dataclass
class TrainSpec:
    """One training run of a stage: its name (progress and resume file), the stage's cache key
    (a resume file under another key is ignored), length, learning rate, seed and augment preset."""

    name: str
    key: str
    epochs: int
    lr: float
    seed: int
    augment: str


def train(ctx: Context, model: nn.Module, compute_loss: LossFn, spec: TrainSpec, *, data: Dataset | None = None,
          state_path: Path | None = None, objective=None) -> list[dict]:
    """Train `model` on `data` (default: the run's) with the run's train.* settings, resumable from
    `state_path` (default `checkpoints/<name>.training.pt`; the caller removes it once the model
    is saved). `objective` (a distillation Objective) adds its trainable parts, state and epoch hook."""
    cfg, data = ctx.cfg, data or ctx.data
    extra = objective.trainable_modules() if objective else ()
    for module in (model, *extra):
        prepare(module, ctx.device)
    optimizer = make_optimizer([p for m in (model, *extra) for p in m.parameters() if p.requires_grad], cfg.train,
                               spec.lr)
    in_memory = not isinstance(data.train.images, DiskImages | DecodedOnRead)
    with TrainLoader(data.train, cfg.data, spec.seed, augment=spec.augment, mixup=cfg.train.mixup,
                     cutmix=cfg.train.cutmix, num_classes=len(data.classes), device=ctx.device,
                     workers=default_workers(cfg.data.workers, ctx.device, in_memory)) as loader:
        recipe = Recipe(
            optimizer=optimizer, scheduler=make_scheduler(optimizer, cfg.train, spec.epochs), epochs=spec.epochs,
            batches=loader.epoch, steps_per_epoch=len(loader), device=ctx.device, extra_modules=extra,
            on_epoch_end=objective.epoch_end if objective else None)
        state = TrainingState(state_path or ctx.run.path(training_state_path(spec.name)), spec.key, model, recipe,
                              objective.state_objects() if objective else ())
        return fit(model, compute_loss, recipe, state, desc=spec.name, quiet=ctx.quiet,
                   validate=lambda m: evaluate(m, data, cfg.data, ctx.device))
