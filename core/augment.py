"""Training-time augmentation: presets none / light / strong, and mixup / cutmix.

Reference document 000 regularises the teacher hard and leaves the student bare, so each
training stage picks its own preset (`teacher.augment`, `distill.augment`):

- none:   centre crop, nothing random (the teacher's logits can then be cached per image);
- light:  random crop, plus a horizontal flip when `data.augment = "crop_flip"` (digits must
          not be mirrored, photos may be); `data.augment = "none"` turns light into none;
- strong: light + brightness/contrast/saturation jitter (±40%) + random erasing of 2-20% of
          the image (Zhong et al. 2017) with probability 0.5.

Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019), from `train.mixup` / `train.cutmix`
(the Beta-distribution alpha; 0 turns them off), mix whole batches and turn the labels into
soft targets. Every random draw comes from the batch generator, so (seed, epoch) fixes them.
"""
from __future__ import annotations

import torch

PRESETS = ("none", "light", "strong")


def random_crop(img: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    _, h, w = img.shape
    top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
    return img[:, top:top + size, left:left + size]


def color_jitter(img: torch.Tensor, gen: torch.Generator, strength: float = 0.4) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1-s, 1+s] (uint8 in, uint8 out)."""
    b, c, s = (1 + strength * (2 * torch.rand(3, generator=gen) - 1)).tolist()
    x = img.float() * b
    x = (x - x.mean()) * c + x.mean()
    gray = x.mean(0, keepdim=True)
    x = (x - gray) * s + gray
    return x.clamp(0, 255).to(torch.uint8)


def random_erase(img: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Zero a random rectangle covering 2-20% of the image, with probability p."""
    if float(torch.rand(1, generator=gen)) >= p:
        return img
    _, h, w = img.shape
    area = (0.02 + 0.18 * float(torch.rand(1, generator=gen))) * h * w
    aspect = float(torch.empty(1).uniform_(0.3, 3.3, generator=gen))
    eh = min(h, max(1, int(round((area * aspect) ** 0.5))))
    ew = min(w, max(1, int(round((area / aspect) ** 0.5))))
    top = int(torch.randint(0, h - eh + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - ew + 1, (1,), generator=gen))
    img = img.clone()
    img[:, top:top + eh, left:left + ew] = 0
    return img


def augment_image(img: torch.Tensor, preset: str, geometric: str, size: int, gen: torch.Generator,
                  center_crop) -> torch.Tensor:
    """One training crop (uint8 CHW) under `preset`; `geometric` is data.augment."""
    if preset == "none" or geometric == "none":
        return center_crop(img, size)
    crop = random_crop(img, size, gen)
    if geometric == "crop_flip" and float(torch.rand(1, generator=gen)) < 0.5:
        crop = crop.flip(-1)
    if preset == "strong":
        crop = random_erase(color_jitter(crop, gen), gen)
    return crop


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup: float, cutmix: float,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (chosen with equal odds when both are on); returns soft targets [N, C].

    With both off, the labels stay class indices and the batch is returned untouched.
    """
    if mixup <= 0 and cutmix <= 0:
        return x, y
    onehot = torch.nn.functional.one_hot(y, num_classes).float()
    perm = torch.randperm(len(x), generator=gen)
    use_cutmix = cutmix > 0 and (mixup <= 0 or float(torch.rand(1, generator=gen)) < 0.5)
    a = cutmix if use_cutmix else mixup
    lam = _beta(a, gen)
    if use_cutmix:
        _, _, h, w = x.shape
        ch, cw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = int(torch.randint(0, h, (1,), generator=gen)), int(torch.randint(0, w, (1,), generator=gen))
        top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (h * w)  # the share of pixels actually kept
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * onehot + (1 - lam) * onehot[perm]


def _beta(a: float, gen: torch.Generator) -> float:
    """A Beta(a, a) draw fixed by the batch generator (torch.distributions ignores generators)."""
    import numpy as np
    return float(np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen))).beta(a, a))
