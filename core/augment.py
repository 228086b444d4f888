"""Training-time augmentation with torchvision.transforms.v2: presets none / light / strong, and
MixUp / CutMix.

The teacher is regularised hard and the student left bare in Hinton-style distillation, so each
training stage picks its own preset (`teacher.augment`, `distill.augment`):

- none:   centre crop, nothing random (the teacher's logits can then be cached per image);
- light:  RandomCrop, plus RandomHorizontalFlip when `data.augment = "crop_flip"` (digits must
          not be mirrored, photos may be); `data.augment = "none"` turns light into none;
- strong: light + TrivialAugmentWide (Müller & Hutter 2021: one random op of random strength per
          image, no tuning) + RandomErasing of 2-20% of the image (Zhong et al. 2017), p = 0.5.

MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019), from `train.mixup` / `train.cutmix` (the
Beta-distribution alpha; 0 turns them off), mix whole batches and turn the labels into soft
targets; with both on, each batch uses one of them with equal odds.

Reproducibility: every random draw is made under `seeded(...)`, a forked RNG seeded from (seed,
epoch, image index) for per-image transforms and (seed, epoch, batch) for batch mixing, so the
data a step sees depends on nothing else: not on worker processes, their number, or a resume.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib

import torch
from torchvision.transforms import v2


def image_transform(preset: str, geometric: str, size: int, center_crop) -> v2.Transform:
    """The per-image transform (uint8 CHW in, uint8 out) for `preset`; `geometric` is
    data.augment. `none` (or data.augment = none) is the deterministic `center_crop`, the crop
    evaluation uses, so cached teacher logits line up with it."""
    if preset == "none" or geometric == "none":
        return v2.Lambda(functools.partial(center_crop, size=size))  # picklable: workers may be started fresh
    ops: list[v2.Transform] = [v2.RandomCrop(size)]
    if geometric == "crop_flip":
        ops.append(v2.RandomHorizontalFlip())
    if preset == "strong":
        ops += [v2.TrivialAugmentWide(), v2.RandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.3, 3.3), value=0)]
    return v2.Compose(ops)


def batch_mixer(mixup: float, cutmix: float, num_classes: int) -> v2.Transform | None:
    """MixUp and/or CutMix on a normalised float batch with integer labels -> soft targets [N, C]."""
    mixers = ([v2.MixUp(alpha=mixup, num_classes=num_classes)] if mixup > 0 else []) + \
             ([v2.CutMix(alpha=cutmix, num_classes=num_classes)] if cutmix > 0 else [])
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def draw_seed(*parts: int) -> int:
    """A 63-bit seed from integers (a hash, so neighbouring epochs/images get unrelated streams)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


@contextlib.contextmanager
def seeded(*parts: int):
    """Run torchvision's random transforms (which draw from torch's global RNG) on a stream
    fixed by `parts`, leaving the caller's RNG state untouched. Only the CPU generator is seeded
    (the transforms run on the CPU): torch.manual_seed also queues a seed for every accelerator
    backend, recording a stack trace each time, 0.14 ms a call, once per training image."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(draw_seed(*parts))
        yield
