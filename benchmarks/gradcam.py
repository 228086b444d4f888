"""Grad-CAM (Selvaraju et al. 2017): where a CNN looks when it predicts a class.

For class c, with A the feature maps entering global pooling:  w_k = mean_ij dy_c/dA_kij,
CAM = ReLU(Σ_k w_k A_k), upsampled to the image and scaled to [0, 1]. Reference document 001
compared where teacher and student look; `overlap` is the IoU of their top-20% regions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _pool_module(model: nn.Module) -> nn.Module:
    pool = getattr(model, "avgpool", None)
    if pool is None:
        raise ValueError(f"{type(model).__name__} has no `avgpool`; Grad-CAM needs the maps entering it")
    return pool


def gradcam(model: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """CAMs [N, H, W] in [0, 1] for `images` [N, 3, H, W] and one target class per image, and the
    feature-map size they come from. A constant map (e.g. 1x1 features) carries no location: zeros."""
    model.eval()
    store = {}

    def keep(_, inputs):
        inputs[0].retain_grad()
        store["maps"] = inputs[0]
    handle = _pool_module(model).register_forward_pre_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(images.requires_grad_(False))
            model.zero_grad(set_to_none=True)
            logits.gather(1, classes.view(-1, 1)).sum().backward()
    finally:
        handle.remove()
    maps, grads = store["maps"], store["maps"].grad
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * maps).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    flat = cam.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    located = span > 1e-4 * hi.abs().clamp_min(1e-12)
    scaled = torch.where(located, (flat - lo) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return scaled.view_as(cam).detach(), tuple(maps.shape[-2:])


def top_region_iou(a: torch.Tensor, b: torch.Tensor, share: float = 0.2) -> torch.Tensor:
    """Per-image IoU of the `share` most salient pixels of two CAM batches [N, H, W]."""
    k = max(1, int(share * a[0].numel()))

    def mask(cam):
        flat = cam.flatten(1)
        idx = flat.topk(k, dim=1).indices
        return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    ma, mb = mask(a), mask(b)
    return (ma & mb).sum(1).float() / (ma | mb).sum(1).float()
