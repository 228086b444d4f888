"""Where a student's teacher signal comes from, and teacher logits for every training image
computed once: plain (from the trained teacher) or out-of-fold (k-fold cross-fitting: no soft
label comes from a teacher that trained on the image).

Live: with augmentation (or a loss that compares features) the teacher runs on each batch.

Plain: when the student trains without augmentation, the teacher would see the same centre
crop of each image every epoch, so its logits are computed once and cached under
`<cache>/teacher_logits-<hash>.pt`, the hash covering the teacher checkpoint's sha256, the data
fingerprint and the preprocessing. Students, the pruning fine-tune and every cell of a sweep
that share the teacher share the file.

Out-of-fold: a teacher that was trained on an image is over-confident on it, so its soft label
there carries little "dark knowledge". With `distill.teacher_folds = k`, the training split is
cut into k stratified folds; fold teacher i trains (with every `teacher.*` setting) on the other
k−1 folds and predicts fold i. Each training image's soft label then comes from a teacher that
never saw it. The k fold teachers are discarded; the main teacher is still the one evaluated,
exported and benchmarked. Cached under `<cache>/teacher_oof-<hash>.pt`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.core.config import DataConfig, DistillConfig, TeacherConfig, TrainConfig
from compress.core.data import Dataset, ImageSet, eval_batches
from compress.core.distributed import barrier, is_main
from compress.core.loop import predict_logits, prepare
from compress.core.models import load_model
from compress.core.rundir import atomic_path, sha256_file, sha256_json
from compress.exports.given_onnx import OnnxTeacher
from compress.methods.kd.objective import TeacherSignal
from compress.methods.kd.spec import needs_teacher, needs_teacher_features
from compress.methods.teacher import train_teacher
from compress.methods.training import Trainer, TrainRun


@dataclass(frozen=True)
class TeacherSource:
    """What a teacher signal can be made from in a run: the trained teacher's checkpoint, the cache
    folder, and for out-of-fold logits the teacher recipe, the run's seed and the settings that
    key the fold teachers' cache file."""

    checkpoint: Path  # or the given ONNX teacher
    cache_dir: Path
    recipe: TeacherConfig | None  # only for out-of-fold logits
    seed: int
    fold_settings: dict  # data_cfg, train and teacher settings (without teacher.checkpoint)


def logits_can_be_cached(augment: str, data_cfg: DataConfig, train_cfg: TrainConfig, spec: str) -> bool:
    """The teacher sees the same centre crop every epoch (`augment`: the training's preset) and only
    its logits are read."""
    bare = augment == "none" or data_cfg.augment == "none"
    return bare and train_cfg.mixup == 0 and train_cfg.cutmix == 0 and not needs_teacher_features(spec)


def teacher_signal(spec: str, recipe: DistillConfig, trainer: Trainer, source: TeacherSource,
                   augment: str) -> tuple[TeacherSignal, str]:
    """The teacher's outputs `spec` needs (a live module, or logits per training image), and a few
    words on where they come from; `augment`: the augmentation preset of the training they feed."""
    if not needs_teacher(spec):
        return TeacherSignal(), "none (online/self distillation)"
    if recipe.teacher_folds >= 2:
        logits = out_of_fold_logits(trainer, source, recipe.teacher_folds)
        return TeacherSignal(logits=logits), f"out-of-fold logits from {recipe.teacher_folds} fold teachers"
    if logits_can_be_cached(augment, trainer.data_cfg, trainer.train_cfg, spec):
        logits = cached_train_logits(source.checkpoint, lambda: _load(source.checkpoint, trainer.device), trainer.data,
                                     trainer.data_cfg, source.cache_dir, trainer.device, trainer.distributed)
        return TeacherSignal(logits=logits), "cached teacher logits"
    return TeacherSignal(module=_load(source.checkpoint, trainer.device)), "teacher run on each augmented batch"


def _load(checkpoint: Path, device: torch.device) -> nn.Module:
    """The trained teacher, or a given ONNX teacher run by ONNX Runtime."""
    if checkpoint.suffix == ".onnx":
        return OnnxTeacher(checkpoint, device).eval()
    teacher, _ = load_model(checkpoint)
    return prepare(teacher, device).eval()


def train_set_batches(images: ImageSet, data: Dataset, data_cfg: DataConfig):
    """Centre crops of `images` as eval batches (what a teacher sees without augmentation)."""
    view = Dataset(data.classes, images, images, "", "")
    return eval_batches(view, data_cfg)


def _cached(path: Path, compute: Callable[[], torch.Tensor], distributed: bool = False) -> torch.Tensor:
    """Logits from `path`, computed and saved first when missing (under DDP by rank 0 alone,
    while the other ranks wait, then read the same file)."""
    if not path.is_file() and (not distributed or is_main()):
        logits = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"logits": logits}, tmp)
    if distributed:
        barrier()
    return torch.load(path, map_location="cpu", weights_only=True)["logits"]


def cached_train_logits(teacher_file: Path, load_teacher: Callable[[], nn.Module], data: Dataset, data_cfg: DataConfig,
                        cache_dir: Path, device: torch.device, distributed: bool = False) -> torch.Tensor:
    """[N_train, C] logits of the teacher on the centre crop of every training image; the
    teacher is loaded (`load_teacher()`) only when the cache does not have them yet."""
    digest = sha256_json({"teacher": sha256_file(teacher_file), "data": data.fingerprint,
                          "crop": data_cfg.crop, "mean": data_cfg.mean, "std": data_cfg.std})[:16]
    return _cached(cache_dir / f"teacher_logits-{digest}.pt",
                   lambda: predict_logits(load_teacher(), train_set_batches(data.train, data, data_cfg), device),
                   distributed)


def stratified_folds(labels: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    """k disjoint index sets covering every position, each class spread evenly (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        shuffled = members[torch.randperm(len(members), generator=gen)].tolist()
        for j, i in enumerate(shuffled):
            folds[(j + offset) % k].append(i)
        offset += len(shuffled)
    return [torch.tensor(sorted(f), dtype=torch.long) for f in folds]


def _subset(images: ImageSet, idx: torch.Tensor) -> ImageSet:
    ids = idx.tolist()
    return ImageSet([images.images[i] for i in ids], images.labels[idx], [images.sources[i] for i in ids])


def out_of_fold_logits(trainer: Trainer, source: TeacherSource, k: int) -> torch.Tensor:
    """[N_train, C] logits, each from the fold teacher that did not train on that image."""
    data, recipe = trainer.data, source.recipe
    if recipe is None:
        raise ValueError("out-of-fold logits need the teacher recipe")
    digest = sha256_json({"data": data.fingerprint, **source.fold_settings, "seed": source.seed, "folds": k})[:16]

    def compute() -> torch.Tensor:
        folds = stratified_folds(data.train.labels, k, source.seed)
        logits = torch.zeros(len(data.train), len(data.classes))
        for i, held_out in enumerate(folds):
            keep = torch.cat([f for j, f in enumerate(folds) if j != i])
            fold_data = Dataset(data.classes, _subset(data.train, keep), data.val, data.fingerprint, data.name)
            state = source.cache_dir / f"teacher_oof-{digest}-fold{i}.state.pt"
            run = TrainRun(f"fold teacher {i + 1}/{k}", digest, state, recipe.epochs, recipe.lr,
                           source.seed + 101 * (i + 1), recipe.augment)
            model, _ = train_teacher(trainer.on(fold_data), recipe, run)
            logits[held_out] = predict_logits(model, train_set_batches(_subset(data.train, held_out), data,
                                                                       trainer.data_cfg), trainer.device)
            state.unlink(missing_ok=True)
        return logits

    return _cached(source.cache_dir / f"teacher_oof-{digest}.pt", compute)
