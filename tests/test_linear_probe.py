"""LP-FT's linear probe: the head fit to convergence on cached frozen features, for a Linear head
and a convolutional one, and the loop's keeping of the best val epoch."""
from __future__ import annotations

import torch
from torch import nn

from compress.core.heads import init_small
from compress.core.models import build_model
from compress.methods.linear_probe import fit_head, head_inputs


def test_the_probe_fits_separable_features_far_better_than_its_start():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 32, generator=gen) * 3
    labels = torch.arange(3).repeat_interleave(40)
    features = centres[labels] + torch.randn(120, 32, generator=gen)
    torch.manual_seed(0)
    head = nn.Linear(32, 3)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    with torch.no_grad():
        start = float(nn.functional.cross_entropy(head(features), labels))
    loss = fit_head(head, features, labels, l2=1e-3)
    assert start > 0.5 and loss < 0.05 and loss < start / 10, (start, loss)  # a small head starts near ln 3
    assert (head(features).argmax(1) == labels).all()
    weak = nn.Linear(32, 3)
    fit_head(weak, features, labels, l2=1.0)  # a strong penalty keeps the weights small
    assert weak.weight.norm() < head.weight.norm()


def test_a_convolutional_head_is_probed_on_the_map_that_enters_it():
    model = build_model("squeezenet1_1", 3).eval()  # its classifier is Dropout, Conv2d, ReLU, pool
    head = model.classifier
    init_small(head, 0.01)  # as a pretrained start's new head begins (finetune.head_init_std)
    x = torch.randn(6, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    features, targets = head_inputs(model, head, [(x, y, None)], torch.device("cpu"))
    assert features.dim() == 4 and features.shape[:2] == (6, 512) and torch.equal(targets, y)
    with torch.no_grad():
        before = float(nn.functional.cross_entropy(model(x).flatten(1), y))
    fit_head(head, features, targets, l2=1e-4)
    with torch.no_grad():
        after = float(nn.functional.cross_entropy(model(x).flatten(1), y))
    assert after < before, (before, after)


def test_a_view_reads_no_more_of_the_epoch_than_its_budget():
    model = build_model("resnet18", 3).eval()
    batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]), None) for _ in range(5)]
    everything, _ = head_inputs(model, model.fc, batches, torch.device("cpu"))
    assert everything.shape == (20, 512)
    capped, targets = head_inputs(model, model.fc, batches, torch.device("cpu"), budget=2 * 4 * 512 * 4)
    assert capped.shape == (8, 512) and len(targets) == 8  # two batches of 4, then it stopped
