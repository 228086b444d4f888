"""How the training stages (teacher, distill, baseline, prune) train a model: the optimizer,
schedule and seeded batches from config, resume state, validation on val. The loop itself is
`compress.core.train.fit`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from compress.core.data import Dataset
from compress.core.distributed import rank, world_size
from compress.core.errors import CompressError
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
    trained = data_parallel(ctx, model, objective) if ctx.distributed else model
    in_memory = not isinstance(data.train.images, DiskImages | DecodedOnRead)
    shard = dict(rank=rank(), world=world_size()) if ctx.distributed else {}
    with TrainLoader(data.train, cfg.data, spec.seed, augment=spec.augment, mixup=cfg.train.mixup,
                     cutmix=cfg.train.cutmix, num_classes=len(data.classes), device=ctx.device,
                     workers=default_workers(cfg.data.workers, ctx.device, in_memory), **shard) as loader:
        recipe = Recipe(
            optimizer=optimizer, scheduler=make_scheduler(optimizer, cfg.train, spec.epochs), epochs=spec.epochs,
            batches=loader.epoch, steps_per_epoch=len(loader), device=ctx.device, extra_modules=extra,
            on_epoch_end=objective.epoch_end if objective else None, distributed=ctx.distributed)
        state = TrainingState(state_path or ctx.run.path(training_state_path(spec.name)), spec.key, model, recipe,
                              objective.state_objects() if objective else ())
        return fit(trained, compute_loss, recipe, state, desc=spec.name, quiet=ctx.quiet,
                   validate=lambda _: evaluate(model, data, cfg.data, ctx.device))


def data_parallel(ctx: Context, model: nn.Module, objective) -> nn.Module:
    """`model` wrapped in DistributedDataParallel (BatchNorm synchronised across ranks when
    train.sync_bn); the unwrapped model keeps the weights that are saved and validated."""
    if objective is not None and objective.state_objects():
        raise CompressError("distill.loss trains a second network with its own optimizer (adversarial), which "
                            "multi-process training does not synchronise yet; run it in one process")
    if ctx.cfg.train.sync_bn:
        for name, child in list(model.named_children()):
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                               else None)
