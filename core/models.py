"""Architectures by torchvision name, classifier heads, initial weights, and safe checkpoints.

A checkpoint is a plain dict {"state_dict", "meta"} loaded with `weights_only=True`: no
pickled modules, so loading one never runs code. A pruned network is rebuilt from the channel
counts stored in its meta ("shapes"), then its state_dict is loaded.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
import torchvision
from torch import nn

from compress.core.errors import CompressError
from compress.core.weights import WeightsSource


def classification_archs() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier head: the last nn.Linear in module order (resnet.fc, vgg.classifier[-1], ...)."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CompressError(f"{type(model).__name__} has no nn.Linear classifier head to replace")
    return linears[-1]


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    name, head = last_linear(model)
    if head.out_features != num_classes:
        _set_module(model, name, nn.Linear(head.in_features, num_classes))
    return model


def imagenet_weights(arch: str):
    """torchvision's DEFAULT ImageNet weights for `arch`, checking the local cache before the network."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if cache.is_file():
        return weights
    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except Exception as exc:  # offline, proxy, HTTP error: all end the same way for the user
        raise CompressError(
            f"ImageNet weights for {arch} are not cached at {cache} and could not be downloaded "
            f"({type(exc).__name__}); copy {weights.url} to that path (or set TORCH_HOME), "
            "or use weights = \"none\"") from None
    return weights


class ClassifierHead(nn.Sequential):
    """A classifier head that replaced the network's last nn.Linear: optional hidden FC layers
    (Linear + ReLU) and dropout before every Linear (a heavily regularised teacher, e.g. two hidden
    FC layers with dropout 0.95, and a student with one hidden layer and none). With no hidden
    layers it is Sequential(Dropout, Linear), the layout of earlier checkpoints."""


def attach_head(model: nn.Module, hidden=(), dropout: float = 0.0) -> nn.Module:
    """Replace the last nn.Linear by a ClassifierHead; a no-op without hidden layers or dropout.
    Dropout is the identity in eval mode, so exports and latency are unaffected by it."""
    if not hidden and dropout <= 0:
        return model
    name, last = last_linear(model)
    widths = [last.in_features, *hidden, last.out_features]
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(zip(widths, widths[1:])):
        final = i == len(widths) - 2
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(last if final and not hidden else nn.Linear(width_in, width_out))
        if not final:
            layers.append(nn.ReLU(inplace=True))
    _set_module(model, name, ClassifierHead(*layers))
    return model


def head_module(model: nn.Module) -> nn.Module:
    """The whole classifier head: the ClassifierHead if one was attached, else the last Linear."""
    heads = [m for m in model.modules() if isinstance(m, ClassifierHead)]
    return heads[-1] if heads else last_linear(model)[1]


def head_description(model: nn.Module) -> dict:
    """What attach_head needs to rebuild the model's head: {} for a plain last Linear."""
    heads = [m for m in model.modules() if isinstance(m, ClassifierHead)]
    if not heads:
        return {}
    linears = [m for m in heads[-1] if isinstance(m, nn.Linear)]
    dropouts = [m.p for m in heads[-1] if isinstance(m, nn.Dropout)]
    return {"head_hidden": [m.out_features for m in linears[:-1]],
            "head_dropout": dropouts[0] if dropouts else 0.0}


def build_model(arch: str, num_classes: int, weights: str = "none", head_dropout: float = 0.0,
                head_hidden=()) -> nn.Module:
    """A torchvision classifier with a `num_classes` head; weights: none | imagenet | checkpoint path."""
    return attach_head(_build_model(arch, num_classes, weights), list(head_hidden), head_dropout)


def _build_model(arch: str, num_classes: int, weights: str) -> nn.Module:
    if arch not in classification_archs():
        raise CompressError(f"unknown architecture {arch!r}; valid: {', '.join(classification_archs())}")
    source = WeightsSource.parse(weights)
    if source.kind == "imagenet":
        model = torchvision.models.get_model(arch, weights=imagenet_weights(arch))
        return replace_head(model, num_classes)
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if source.file:
        state, _ = load_checkpoint(source.file)
        head_name, _ = last_linear(model)
        own = model.state_dict()
        # a checkpoint from another task keeps its backbone; its head is re-initialised
        head = head_name + "."
        state = {k: v for k, v in state.items()
                 if not (k.startswith(head) and (k not in own or v.shape != own[k].shape))}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise CompressError(f"checkpoint {weights} does not fit {arch}: {str(exc).splitlines()[-1].strip()}") from None
        missing = [k for k in missing if not k.startswith(head)]
        if missing or unexpected:
            raise CompressError(f"checkpoint {weights} does not fit {arch}: "
                                f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


# ---------------------------------------------------------------- shapes of pruned networks

def module_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Channel counts of every conv/BN/linear layer: enough to rebuild a pruned network."""
    shapes = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            shapes[name] = [m.in_channels, m.out_channels, m.groups]
        elif isinstance(m, nn.BatchNorm2d):
            shapes[name] = [m.num_features]
        elif isinstance(m, nn.Linear):
            shapes[name] = [m.in_features, m.out_features]
    return shapes


def apply_shapes(model: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Replace layers whose channel counts differ from `shapes` with freshly sized ones."""
    current = module_shapes(model)
    for name, shape in shapes.items():
        if name not in current:
            raise CompressError(f"checkpoint describes layer {name!r}, which the architecture does not have")
        if current[name] == list(shape):
            continue
        old = model.get_submodule(name)
        new: nn.Module
        if isinstance(old, nn.Conv2d):  # torch's stubs type the tuples as tuple[int, ...]
            new = nn.Conv2d(shape[0], shape[1], old.kernel_size, old.stride, old.padding,  # type: ignore[arg-type]
                            old.dilation, groups=shape[2], bias=old.bias is not None,  # type: ignore[arg-type]
                            padding_mode=old.padding_mode)
        elif isinstance(old, nn.BatchNorm2d):
            new = nn.BatchNorm2d(shape[0], old.eps, old.momentum, old.affine, old.track_running_stats)
        else:
            new = nn.Linear(shape[0], shape[1], bias=old.bias is not None)
        _set_module(model, name, new)
    return model


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(model: nn.Module, path: Path, meta: dict) -> None:
    """Write {"state_dict", "meta"}; meta holds arch, classes, shapes and the head's layout
    (plain JSON-able values, the last two read off the model)."""
    meta = dict(meta, shapes=module_shapes(model), **head_description(model))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, path)


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, meta) from our format or a bare state_dict; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CompressError(f"checkpoint {path} holds Python objects or code, which compress does not unpickle "
                            "(that could run code); save the model's state_dict instead: "
                            "torch.save(model.state_dict(), PATH)") from None
    except Exception as exc:
        raise CompressError(f"checkpoint {path} cannot be read as a PyTorch file ({type(exc).__name__}); "
                            "is it truncated or another format?") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj["state_dict"], obj.get("meta", {})
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise CompressError(f"checkpoint {path} holds neither a state_dict nor {{state_dict, meta}}")


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the network a checkpoint of ours describes (pruned or not) and load its weights."""
    state, meta = load_checkpoint(path)
    if "arch" not in meta or "classes" not in meta:
        raise CompressError(f"checkpoint {path} has no arch/classes metadata; it was not written by compress")
    model = torchvision.models.get_model(meta["arch"], weights=None, num_classes=len(meta["classes"]))
    attach_head(model, [int(w) for w in meta.get("head_hidden", [])], float(meta.get("head_dropout", 0.0)))
    apply_shapes(model, meta.get("shapes", {}))
    model.load_state_dict(state)
    return model.eval(), meta


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, crop: int) -> int:
    """Multiply-accumulates for one image at `crop`x`crop`, counted by torch-pruning's op counter."""
    import torch_pruning as tp
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    macs, _ = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, crop, crop, device=device))
    model.train(was_training)
    return int(macs)
