"""Architectures, initial weights (including the offline ImageNet path) and safe checkpoints."""
from __future__ import annotations

import os
import urllib.error

import pytest
import torch
import torchvision

from compress.core.config import PruneConfig
from compress.core.errors import CompressError
from compress.core.models import build_model, count_macs, load_model, save_checkpoint
from compress.methods.pruning import Pruner, taylor_gradients


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(CompressError, match="resnet18"):
        build_model("resnet-18", 3)


def test_imagenet_weights_offline_names_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(CompressError) as err:
        build_model("resnet18", 3, "imagenet")
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    assert str(tmp_path / "hub" / "checkpoints" / os.path.basename(url)) in str(err.value)
    assert url in str(err.value)


def test_imagenet_weights_from_the_cache(tmp_path, monkeypatch):
    """A cached file is used without touching the network; the head is replaced for our classes."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    cache = tmp_path / "hub" / "checkpoints" / os.path.basename(url)
    cache.parent.mkdir(parents=True)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), cache)
    model = build_model("resnet18", 3, "imagenet")
    assert model.fc.out_features == 3
    assert torch.equal(model.conv1.weight, reference.conv1.weight)


def test_checkpoint_as_initial_weights_keeps_backbone_and_resets_head(tmp_path):
    source = torchvision.models.resnet18(num_classes=5)
    save_checkpoint(source, tmp_path / "s.pt", {"arch": "resnet18", "classes": list("abcde")})
    model = build_model("resnet18", 3, str(tmp_path / "s.pt"))
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert model.fc.out_features == 3


def _pruned(cfg: PruneConfig, crop: int = 32):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    images, labels = torch.randn(8, 3, crop, crop), torch.tensor([0, 1, 2, 3] * 2)
    pruner = Pruner(model, cfg, crop, taylor_gradients(images, labels))
    if cfg.target == "params":
        pruner.prune_until("params", cfg.params_ratio)
    else:
        pruner.prune_until("macs", cfg.macs_ratio)
    return model, pruner.summary(cfg)


@pytest.mark.parametrize("importance, global_pruning", [("l1", False), ("bn", False), ("taylor", False), ("l2", True)])
def test_every_importance_reaches_the_macs_target(importance, global_pruning):
    model, summary = _pruned(PruneConfig(target="macs", macs_ratio=0.5, importance=importance, global_pruning=global_pruning))
    assert 0.40 <= summary["macs_ratio"] <= 0.5, summary
    assert all(m.out_channels % 8 == 0 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert all(p.grad is None for p in model.parameters())  # Taylor's gradients are not left behind


def test_params_target():
    _, summary = _pruned(PruneConfig(target="params", params_ratio=0.3))
    assert 0.22 <= summary["params_ratio"] <= 0.3, summary


def test_pruned_model_reaches_target_and_reloads_without_unpickling(tmp_path):
    model, summary = _pruned(PruneConfig(target="macs", macs_ratio=0.5, round_to=8))
    assert 0.40 <= summary["macs_ratio"] <= 0.5
    assert count_macs(model, 32) == summary["macs_after"]
    assert all(m.out_channels % 8 == 0 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    path = tmp_path / "pruned.pt"
    save_checkpoint(model, path, {"arch": "resnet18", "classes": list("abcd")})
    raw = torch.load(path, weights_only=True)  # plain tensors and JSON-able meta only
    assert set(raw) == {"state_dict", "meta"}
    reloaded, meta = load_model(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reloaded(x), atol=1e-6)
    assert meta["shapes"]["layer1.0.conv1"][1] < 64


def test_head_dropout_survives_a_checkpoint_round_trip(tmp_path):
    from compress.core.models import build_model
    model = build_model("resnet18", 3, head_dropout=0.5).eval()
    assert isinstance(model.fc, torch.nn.Sequential) and model.fc[0].p == 0.5
    save_checkpoint(model, tmp_path / "t.pt", {"arch": "resnet18", "classes": list("abc"), "head_dropout": 0.5})
    reloaded, _ = load_model(tmp_path / "t.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reloaded(x), atol=1e-6)


def test_hidden_head_layers_are_built_pruned_and_reloaded(tmp_path):
    """Reference 000's heads: hidden FC layers with dropout before each Linear, rebuilt from the
    checkpoint meta, pruned like any layer except the classifier itself."""
    from compress.core.heads import head_module
    model = build_model("resnet18", 3, head_dropout=0.5, head_hidden=[32, 16]).eval()
    kinds = [type(m).__name__ for m in model.fc]
    assert kinds == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert [m.out_features for m in model.fc if isinstance(m, torch.nn.Linear)] == [32, 16, 3]
    assert head_module(model) is model.fc
    Pruner(model, PruneConfig(target="params", params_ratio=0.6), crop=32, gradients=None).prune_until("params", 0.6)
    assert model.fc[-1].out_features == 3
    meta = {"arch": "resnet18", "classes": list("abc"), "head_dropout": 0.5, "head_hidden": [32, 16]}
    save_checkpoint(model, tmp_path / "h.pt", meta)
    reloaded, _ = load_model(tmp_path / "h.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reloaded(x), atol=1e-5)


def test_frozen_encoder_trains_the_whole_hidden_head():
    from compress.methods.student import freeze_encoder
    model = build_model("resnet18", 3, head_hidden=[16])
    freeze_encoder(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"}


def test_head_hidden_must_be_positive_widths():
    from compress.core.config import Config
    with pytest.raises(CompressError, match="distill.head_hidden"):
        Config.from_toml(None, ("distill.head_hidden=[0]",))
