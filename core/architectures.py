"""Everything compress needs to know about an image classifier's architecture, in one place and
read off the model itself rather than from name checks spread over the stages:

- which zoo builds it: a torchvision name (`resnet18`) or a timm one (`timm:convnext_nano`, with
  the `timm` extra), with random, ImageNet or local weights, and the preprocessing (mean, std)
  its pretrained weights expect;
- its classifier head: the last `nn.Linear`, or a 1×1 convolution (SqueezeNet), replaced for N
  classes;
- the feature maps other code reads, by module path, found by running the model once with
  forward hooks (torchdistill's hook manager keys features the same way): the stride-16 map a
  FitNets hint compares by default, the embedding the head receives, and the last spatial map
  before global pooling that Grad-CAM explains;
- a fixed input size (torchvision's and timm's ViTs), what pruning must leave alone, and the
  re-parameterisation some models (RepVGG, MobileOne, FastViT) do before inference.
"""
from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from compress.core.errors import CompressError
from compress.core.heads import classifier_head

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
TIMM = "timm:"
TIMM_EXTRA = "pip install 'compress-distill[timm]'"
PROBE_SIZE = 224  # feature maps are located at this input size, so their strides do not depend on data.crop


def is_timm(arch: str) -> bool:
    return arch.startswith(TIMM)


def _timm():
    if importlib.util.find_spec("timm") is None:
        raise CompressError(f"timm models need the timm extra: {TIMM_EXTRA}")
    import timm
    return timm


def torchvision_archs() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_arch(arch: str, key: str) -> None:
    """`arch` names a classifier one of the zoos can build; else one line with what would be valid."""
    if is_timm(arch):
        timm, name = _timm(), arch[len(TIMM):]
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=5)
            raise CompressError(f"{key}: timm has no model {name!r}" + (f"; close: {', '.join(close)}" if close else "")
                                + "; `python -c 'import timm; print(timm.list_models())'` lists them")
        return
    if arch not in torchvision_archs():
        close = difflib.get_close_matches(arch, torchvision_archs(), n=5)
        raise CompressError(f"{key}: unknown architecture {arch!r}" + (f" (close: {', '.join(close)})" if close else "")
                            + f"; valid torchvision names: {', '.join(torchvision_archs())}; or timm:<name> for timm")


def create(arch: str, num_classes: int) -> nn.Module:
    """The architecture with random weights and a `num_classes` head."""
    if is_timm(arch):
        return _timm().create_model(arch[len(TIMM):], pretrained=False, num_classes=num_classes)
    return without_auxiliary_heads(torchvision.models.get_model(arch, weights=None, num_classes=num_classes))


def without_auxiliary_heads(model: nn.Module) -> nn.Module:
    """GoogLeNet and Inception v3 return (logits, aux...) in training mode for their auxiliary
    classifiers; distillation and export read one logits tensor, so the auxiliary heads are removed."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False  # type: ignore[assignment]  # a bool attribute of those two classes
        for name in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, name):
                setattr(model, name, None)
    return model


def preprocessing(arch: str) -> tuple[list[float], list[float]]:
    """(mean, std) the architecture's pretrained weights were trained with."""
    if is_timm(arch):
        cfg = _timm().models.get_pretrained_cfg(arch[len(TIMM):].split(".")[0]) or None
        if cfg is not None and cfg.mean and cfg.std:
            return [float(v) for v in cfg.mean], [float(v) for v in cfg.std]
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


def fixed_input_size(model: nn.Module) -> int | None:
    """The only input side the model accepts, when it has one (ViTs: position embeddings per patch)."""
    size = getattr(model, "image_size", None)  # torchvision's VisionTransformer
    if isinstance(size, int):
        return size
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("fixed_input_size") and cfg.get("input_size"):
        return int(cfg["input_size"][-1])
    return None


# ---------------------------------------------------------------- feature maps, by module path

@dataclass(frozen=True)
class FeatureMap:
    path: str  # the outermost module returning this tensor
    shape: tuple[int, ...]  # at the probe size, batch 1
    before_head: bool  # computed before the classifier head ran
    source: str | None = None  # for the first module consuming it at a stride change: that module's path

    @property
    def side(self) -> int | None:
        """The side of a square NCHW map; None for anything else (tokens, attention scores, NHWC maps)."""
        if len(self.shape) != 4:
            return None
        _, c, h, w = self.shape
        return h if h == w and c != h else None


@dataclass
class _Call:
    order: int
    path: str
    inputs: tuple[int, ...]  # ids of the tensors it took
    output: int
    shape: tuple[int, ...]


def _trace(model: nn.Module, size: int) -> tuple[list[_Call], int | None]:
    """Every module call on one `size`×`size` image (order of completion, input and output tensor
    ids), and the position at which the classifier head started."""
    _, head = classifier_head(model)
    calls: list[_Call] = []
    kept: list[torch.Tensor] = []  # every tensor stays alive, so no id is reused within the probe
    head_at: list[int | None] = [None]

    def record(path):
        def hook(_module, inputs, output):
            if isinstance(output, torch.Tensor):
                kept.append(output)
                ids = tuple(id(t) for t in inputs if isinstance(t, torch.Tensor))
                calls.append(_Call(len(calls), path, ids, id(output), tuple(output.shape)))
        return hook

    def at_head(_module, _inputs):
        head_at[0] = len(calls)

    handles = [m.register_forward_hook(record(p)) for p, m in model.named_modules() if p]
    handles.append(head.register_forward_pre_hook(at_head))
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls, head_at[0]


def feature_maps(model: nn.Module, size: int = PROBE_SIZE) -> list[FeatureMap]:
    """Every tensor a module returns on one image, in the order they were computed, each named by
    the outermost module that returns it (a stage, not its last block's ReLU)."""
    calls, head_at = _trace(model, fixed_input_size(model) or size)
    producer: dict[int, _Call] = {}
    for call in calls:  # a container returns its last child's tensor: the container (later) wins
        first = producer.get(call.output)
        producer[call.output] = _Call(first.order if first else call.order, call.path, call.inputs, call.output,
                                      call.shape)
    return [FeatureMap(c.path, c.shape, head_at is None or c.order < head_at)
            for c in sorted(producer.values(), key=lambda c: c.order)]


def _producers(model: nn.Module, size: int) -> tuple[list[_Call], dict[int, _Call], int | None]:
    calls, head_at = _trace(model, size)
    producer: dict[int, _Call] = {}
    for call in calls:
        first = producer.get(call.output)
        producer[call.output] = _Call(first.order if first else call.order, call.path, call.inputs, call.output,
                                      call.shape)
    return calls, producer, head_at


def _side(shape: tuple[int, ...]) -> int | None:
    return FeatureMap("", shape, True).side


def stride16_map(model: nn.Module) -> str | None:
    """The module path of the stride-16 stage output (ResNet: layer3), the map a FitNets hint
    compares by default: the input of the outermost module that takes a stride-16 map and returns
    a stride-32 one, named by the outermost module that produced it."""
    size = fixed_input_size(model) or PROBE_SIZE
    calls, producer, head_at = _producers(model, size)
    found = []
    for call in calls:
        if head_at is not None and call.order >= head_at or _side(call.shape) != size // 32:
            continue
        for tensor in call.inputs:
            source = producer.get(tensor)
            if source is not None and _side(source.shape) == size // 16:
                found.append(source.path)
    return min(found, key=lambda p: (p.count("."), p)) if found else None


def gradcam_map(model: nn.Module) -> str | None:
    """The module path of the last spatial feature map before global pooling (ResNet: layer4), what
    Grad-CAM explains; None when the model has none, e.g. a ViT, whose spatial patch map becomes
    tokens (any later token or channels-last tensor disqualifies an earlier map)."""
    maps = [m for m in feature_maps(model) if m.before_head]
    for i in range(len(maps) - 1, -1, -1):
        side = maps[i].side
        if side is not None and side > 1:
            later = maps[i + 1:]
            if all(m.side is not None or len(m.shape) <= 2 for m in later):
                return maps[i].path
            return None
    return None


# ---------------------------------------------------------------- inference form

def reparameterize(model: nn.Module) -> nn.Module:
    """The inference form of a model that re-parameterises (RepVGG, MobileOne, FastViT: parallel
    training branches fused into one convolution); other models are returned as they are."""
    if not hasattr(model, "pretrained_cfg"):  # torchvision models have no training-only branches
        return model
    if not any(hasattr(m, "reparameterize") or hasattr(m, "fuse") for m in model.modules()):
        return model
    from timm.utils.model import reparameterize_model
    return reparameterize_model(model)
