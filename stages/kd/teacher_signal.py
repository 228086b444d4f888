"""Teacher logits for every training image, computed once: plain (from the trained teacher) or
out-of-fold (k-fold cross-fitting: no soft label comes from a teacher that trained on the image).

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
from pathlib import Path

import torch

from compress.core.data import Dataset, ImageSet, eval_batches
from compress.core.distributed import barrier, is_main
from compress.core.rundir import atomic_path, sha256_file, sha256_json
from compress.core.stage import Context
from compress.core.train import predict_logits


def train_set_batches(images: ImageSet, ctx: Context):
    """Centre crops of `images` as eval batches (what a teacher sees without augmentation)."""
    view = Dataset(ctx.data.classes, images, images, "", "")
    return eval_batches(view, ctx.cfg.data)


def _cached(path: Path, compute, distributed: bool = False) -> torch.Tensor:
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


def cached_train_logits(ctx: Context, load_teacher: Callable[[], torch.nn.Module], teacher_file: Path) -> torch.Tensor:
    """[N_train, C] logits of the teacher on the centre crop of every training image; the
    teacher is loaded (`load_teacher()`) only when the cache does not have them yet."""
    d = ctx.cfg.data
    digest = sha256_json({"teacher": sha256_file(teacher_file), "data": ctx.data.fingerprint,
                          "crop": d.crop, "mean": d.mean, "std": d.std})[:16]
    return _cached(ctx.cache_dir / f"teacher_logits-{digest}.pt",
                   lambda: predict_logits(load_teacher(), train_set_batches(ctx.data.train, ctx), ctx.device),
                   ctx.distributed)


def stratified_folds(labels: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    """k disjoint index sets covering every position, each class spread evenly (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)].tolist()
        for j, i in enumerate(idx):
            folds[(j + offset) % k].append(i)
        offset += len(idx)
    return [torch.tensor(sorted(f), dtype=torch.long) for f in folds]


def _subset(images: ImageSet, idx: torch.Tensor) -> ImageSet:
    ids = idx.tolist()
    return ImageSet([images.images[i] for i in ids], images.labels[idx], [images.sources[i] for i in ids])


TrainFoldTeacher = Callable[[Dataset, Path, str, str, int], torch.nn.Module]
"""(fold data, resume-state path, cache key, progress label, seed offset) -> a trained teacher."""


def out_of_fold_logits(ctx: Context, train_teacher: TrainFoldTeacher) -> torch.Tensor:
    """[N_train, C] logits, each from the fold teacher that did not train on that image.
    `train_teacher` is the teacher stage's recipe, passed in (this library imports no stage)."""
    cfg, data, k = ctx.cfg, ctx.data, ctx.cfg.distill.teacher_folds
    digest = sha256_json({"data": data.fingerprint, "data_cfg": cfg.section("data"),
                          "train": cfg.section("train"),
                          "teacher": {k_: v for k_, v in cfg.section("teacher").items() if k_ != "checkpoint"},
                          "seed": cfg.seed, "folds": k})[:16]

    def compute() -> torch.Tensor:
        folds = stratified_folds(data.train.labels, k, cfg.seed)
        logits = torch.zeros(len(data.train), len(data.classes))
        for i, held_out in enumerate(folds):
            keep = torch.cat([f for j, f in enumerate(folds) if j != i])
            fold_data = Dataset(data.classes, _subset(data.train, keep), data.val, data.fingerprint, data.name)
            state = ctx.cache_dir / f"teacher_oof-{digest}-fold{i}.state.pt"
            model = train_teacher(fold_data, state, digest, f"fold teacher {i + 1}/{k}", 101 * (i + 1))
            logits[held_out] = predict_logits(model, train_set_batches(_subset(data.train, held_out), ctx), ctx.device)
            state.unlink(missing_ok=True)
        return logits

    return _cached(ctx.cache_dir / f"teacher_oof-{digest}.pt", compute)
