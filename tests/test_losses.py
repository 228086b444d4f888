"""Distillation losses against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.errors import CompressError
from stages.losses import distillation_objective, get_loss


def test_kl_matches_hand_computed_value():
    s, t, T = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 2.0
    # softmax([0.5, 0]) and softmax([0, 0.5]) by hand
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    pt = [1 / (math.exp(0.5) + 1), math.exp(0.5) / (math.exp(0.5) + 1)]
    expected = T ** 2 * sum(q * math.log(q / p) for p, q in zip(ps, pt))
    assert get_loss("kl")(s, t, temperature=T).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.4898, abs=1e-4)


def test_kl_is_zero_for_identical_logits_and_batch_averaged():
    x = torch.randn(4, 5)
    assert get_loss("kl")(x, x, temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)
    one = get_loss("kl")(x[:1], x[1:2] * 2, temperature=1.0)
    two = get_loss("kl")(torch.cat([x[:1]] * 2), torch.cat([x[1:2] * 2] * 2), temperature=1.0)
    assert one.item() == pytest.approx(two.item(), rel=1e-6)


def test_mse_on_logits():
    s, t = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert get_loss("mse")(s, t).item() == pytest.approx((1 + 4 + 0 + 4) / 4)


def test_alpha_weighting():
    s, t, y = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([0])
    ce = math.log(1 + math.exp(-2.0))
    mse = 4.0
    assert distillation_objective("mse", 0.25, 1.0)(s, t, y).item() == pytest.approx(0.25 * ce + 0.75 * mse, rel=1e-6)
    assert distillation_objective("mse", 1.0, 1.0)(s, t, y).item() == pytest.approx(ce, rel=1e-6)
    assert distillation_objective("mse", 0.0, 1.0)(s, t, y).item() == pytest.approx(mse, rel=1e-6)


def test_unknown_loss_lists_valid_names():
    with pytest.raises(CompressError, match="valid: kl, mse"):
        get_loss("kld")
