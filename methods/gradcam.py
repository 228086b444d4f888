"""Grad-CAM (Selvaraju et al. 2017): where a CNN looks when it predicts a class.

For class c, with A the feature maps entering global pooling:  w_k = mean_ij dy_c/dA_kij,
CAM = ReLU(Σ_k w_k A_k), upsampled to the image and scaled to [0, 1]. Distillation studies
compare where teacher and student look; `top_region_iou` is the IoU of their top-20% regions.
The maps are the output of the module compress.core.architectures.gradcam_map finds (ResNet:
layer4), and images go through in batches, so memory does not grow with the val set.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.core.architectures import gradcam_map

BATCH = 16  # images per backward pass: bounds Grad-CAM's memory whatever the val set's size


def gradcam(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, layer: str | None = None,
            batch: int = BATCH) -> tuple[torch.Tensor, tuple[int, int]]:
    """CAMs [N, H, W] in [0, 1] of the maps module `layer` returns (default: the last spatial map
    before pooling), for `images` [N, 3, H, W] and one target class per image, and the feature-map
    size they come from. A constant map (e.g. 1x1 features) carries no location: zeros."""
    layer = layer or gradcam_map(model)
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no spatial feature map before pooling")
    parts = [_gradcam_batch(model, layer, images[i:i + batch], classes[i:i + batch])
             for i in range(0, len(images), batch)]
    return torch.cat([cam for cam, _ in parts]), parts[0][1]


def _gradcam_batch(model: nn.Module, layer: str, images: torch.Tensor,
                   classes: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    model.eval()
    store = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        store["maps"] = output
    handle = model.get_submodule(layer).register_forward_hook(keep)
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
    return scaled.view_as(cam).detach(), (int(maps.shape[-2]), int(maps.shape[-1]))


def top_region_iou(a: torch.Tensor, b: torch.Tensor, share: float = 0.2) -> torch.Tensor:
    """Per-image IoU of the `share` most salient pixels of two CAM batches [N, H, W]."""
    k = max(1, int(share * a[0].numel()))

    def mask(cam):
        flat = cam.flatten(1)
        idx = flat.topk(k, dim=1).indices
        return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    ma, mb = mask(a), mask(b)
    return (ma & mb).sum(1).float() / (ma | mb).sum(1).float()
