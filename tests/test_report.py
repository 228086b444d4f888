"""Grad-CAM maps and the HTML report."""
from __future__ import annotations

import torch
import torchvision

from compress.methods.gradcam import gradcam, top_region_iou


def test_gradcam_maps_have_the_image_size_and_range():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    images = torch.randn(2, 3, 64, 64)
    cams, grid = gradcam(model, images, torch.tensor([0, 2]))
    assert cams.shape == (2, 64, 64) and grid == (2, 2)
    assert float(cams.min()) >= 0.0 and float(cams.max()) == 1.0
    same_image = images[:1].repeat(2, 1, 1, 1)
    per_class, _ = gradcam(model, same_image, torch.tensor([0, 2]))
    assert not torch.allclose(per_class[0], per_class[1])  # the map explains the class asked for


def test_gradcam_of_a_1x1_map_is_flat_zero():
    model = torchvision.models.resnet18(num_classes=3).eval()
    cams, grid = gradcam(model, torch.randn(1, 3, 16, 16), torch.tensor([1]))
    assert grid == (1, 1) and float(cams.abs().max()) == 0.0


def test_top_region_iou_by_hand():
    a = torch.zeros(1, 10, 10)
    a[0, :2, :] = 1.0  # top 20% = the first two rows
    b = torch.zeros(1, 10, 10)
    b[0, 1:3, :] = 1.0  # rows 1-2: overlap one row of two
    assert top_region_iou(a, a).item() == 1.0
    assert top_region_iou(a, b).item() == torch.tensor(10 / 30).item()
