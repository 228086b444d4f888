"""A classifier's head, in one place: finding the layer that produces the logits (a Linear or a
1x1 convolution, read off the model), replacing it for the data's classes, optional hidden FC
layers and dropout before it, and how a new head starts.

How a new head starts matters on a pretrained network: timm initialises a new Linear with
std 1/sqrt(fan_out) (1/sqrt(2) for two classes) and torchvision uniformly in ±1/sqrt(fan_in); on
EfficientNet-Lite0's ImageNet features the 2-class head then started at |logits| ≈ 11, and the
first fine-tuning steps pushed large gradients into the backbone (the loss of epoch 1 was 1.9-3.4
for 2 classes). `init_small` starts it at std 0.01 and zero bias, as linear probing does
(Kumar et al. 2022, LP-FT), so the backbone's features are not destroyed before the head has
learned to read them.
"""
from __future__ import annotations

from torch import nn

from compress.core.errors import CompressError


def classifier_head(model: nn.Module) -> tuple[str, nn.Module]:
    """(module path, module) of the layer that produces the logits: timm's classifier, else the last
    nn.Linear in module order, else the last 1×1 convolution (SqueezeNet's conv classifier)."""
    if hasattr(model, "get_classifier") and hasattr(model, "pretrained_cfg"):  # timm
        head = model.get_classifier()  # type: ignore[operator]
        for name, module in model.named_modules():
            if module is head and isinstance(head, nn.Linear | nn.Conv2d):
                return name, module
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    if convs:
        return convs[-1]
    raise CompressError(f"{type(model).__name__} has no nn.Linear or 1x1-convolution classifier head to replace")


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def head_width(head: nn.Module) -> tuple[int, int]:
    """(input features, classes) of a Linear or convolution head."""
    if isinstance(head, nn.Linear):
        return head.in_features, head.out_features
    if isinstance(head, nn.Conv2d):
        return head.in_channels, head.out_channels
    raise CompressError(f"{type(head).__name__} is not a classifier head compress can replace")


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """The same network with a freshly initialised head for `num_classes` (kept when it already fits)."""
    path, head = classifier_head(model)
    width, classes = head_width(head)
    if classes == num_classes:
        return model
    if isinstance(head, nn.Conv2d):
        set_module(model, path, nn.Conv2d(width, num_classes, kernel_size=1))
    else:
        set_module(model, path, nn.Linear(width, num_classes))
    return model



class ClassifierHead(nn.Sequential):
    """A classifier head that replaced the network's Linear head: optional hidden FC layers
    (Linear + ReLU) and dropout before every Linear (a heavily regularised teacher, e.g. two hidden
    FC layers with dropout 0.95, and a student with one hidden layer and none). With no hidden
    layers it is Sequential(Dropout, Linear), the layout of earlier checkpoints."""


def attach_head(model: nn.Module, hidden=(), dropout: float = 0.0) -> nn.Module:
    """Replace the Linear head by a ClassifierHead; a no-op without hidden layers or dropout.
    Dropout is the identity in eval mode, so exports and latency are unaffected by it."""
    if not hidden and dropout <= 0:
        return model
    name, last = classifier_head(model)
    if not isinstance(last, nn.Linear):
        raise CompressError(f"{type(model).__name__}'s classifier is a 1x1 convolution; hidden head layers and head "
                            "dropout apply to Linear heads: leave head_hidden = [] and dropout = 0")
    widths = [last.in_features, *hidden, last.out_features]
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(zip(widths, widths[1:])):
        final = i == len(widths) - 2
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(last if final and not hidden else nn.Linear(width_in, width_out))
        if not final:
            layers.append(nn.ReLU(inplace=True))
    set_module(model, name, ClassifierHead(*layers))
    return model


def head_module(model: nn.Module) -> nn.Module:
    """The whole classifier head: the ClassifierHead if one was attached, else the head layer."""
    heads = [m for m in model.modules() if isinstance(m, ClassifierHead)]
    return heads[-1] if heads else classifier_head(model)[1]


def head_description(model: nn.Module) -> dict:
    """What attach_head needs to rebuild the model's head: {} for a plain last Linear."""
    heads = [m for m in model.modules() if isinstance(m, ClassifierHead)]
    if not heads:
        return {}
    linears = [m for m in heads[-1] if isinstance(m, nn.Linear)]
    dropouts = [m.p for m in heads[-1] if isinstance(m, nn.Dropout)]
    return {"head_hidden": [m.out_features for m in linears[:-1]],
            "head_dropout": dropouts[0] if dropouts else 0.0}




def init_small(head: nn.Module, std: float = 0.01) -> None:
    """Start every Linear or 1x1 convolution of a head at N(0, std) weights and zero bias."""
    for layer in head.modules() if isinstance(head, nn.Module) else ():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            nn.init.normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
