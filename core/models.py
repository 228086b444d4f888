"""Models built for a run (an architecture from compress.core.architectures, its starting
weights, a head for the data's classes, optional hidden head layers), counted, and kept in safe
checkpoints.

A checkpoint is a plain dict {"state_dict", "meta"} loaded with `weights_only=True`: no
pickled modules, so loading one never runs code. What a network needs beyond its weights to be
rebuilt is in the meta: the architecture and classes, the head's layout, and after pruning the
structure torch-pruning changed (every module's channel attributes and every tensor's shape), as
well as the state_dict's own version metadata (MNASNet's BatchNorm layout depends on it).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from compress.core import architectures
from compress.core.errors import CompressError
from compress.core.heads import (
    attach_head,
    classifier_head,
    head_description,
    head_module,
    head_width,
    init_small,
    replace_head,
    set_module,
)
from compress.core.weights import WeightsSource, imagenet_model, load_checkpoint, load_start


def build_model(arch: str, num_classes: int, weights: str = "none", head_dropout: float = 0.0,
                head_hidden=(), new_head_std: float | None = None) -> nn.Module:
    """`arch` (torchvision name or timm:<name>) with a `num_classes` head; weights: none |
    imagenet | checkpoint path (`auto` is made concrete before a run starts). `new_head_std`: a
    head that did not come with the weights starts at N(0, std) (core.heads.init_small)."""
    model, fresh = _build_model(arch, num_classes, weights)
    model = attach_head(model, list(head_hidden), head_dropout)
    if new_head_std is not None and (fresh or head_hidden):
        init_small(head_module(model), new_head_std)
    return model


def _build_model(arch: str, num_classes: int, weights: str) -> tuple[nn.Module, bool]:
    """The model and whether its head is new (not from the starting weights)."""
    architectures.check_arch(arch, "architecture")
    source = WeightsSource.parse(weights)
    if source.kind in ("imagenet", "auto"):
        pretrained = imagenet_model(arch)
        _, head = classifier_head(pretrained)
        return replace_head(pretrained, num_classes), head_width(head)[1] != num_classes
    model = architectures.create(arch, num_classes)
    if source.file:
        return model, load_start(model, source.file, arch)
    return model, True


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
        set_module(model, name, new)
    return model


# ---------------------------------------------------------------- structure of pruned networks

# the attributes torch-pruning changes when it removes channels, whatever the module type
STRUCTURE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
                   "normalized_shape", "num_channels", "num_groups")


def structure(model: nn.Module) -> dict:
    """What a rebuilt network needs beyond its weights: every module's channel attributes and every
    tensor's shape (a pruned ConvNeXt's LayerNorms and layer scales shrink too, not only convs)."""
    modules = {}
    for name, m in model.named_modules():
        own = vars(m)  # the module's own attributes, not properties derived from its children (timm's ConvNormAct)
        attrs = {a: list(v) if isinstance(v, tuple) else v for a in STRUCTURE_ATTRS
                 if isinstance(v := own.get(a), int | tuple) and not isinstance(v, bool)}
        if attrs:
            modules[name] = attrs
    return {"modules": modules, "tensors": {k: list(v.shape) for k, v in model.state_dict().items()}}


def apply_structure(model: nn.Module, recorded: dict) -> nn.Module:
    """Give a freshly built network the attributes and tensor shapes `structure` recorded."""
    for name, attrs in recorded.get("modules", {}).items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise CompressError(f"checkpoint describes module {name!r}, which the architecture does not have") from None
        for attr, value in attrs.items():
            setattr(module, attr, tuple(value) if isinstance(getattr(module, attr, None), tuple) else value)
    own = model.state_dict()
    for key, shape in recorded.get("tensors", {}).items():
        if key in own and list(own[key].shape) != list(shape):
            owner_name, _, attr = key.rpartition(".")
            owner = model.get_submodule(owner_name) if owner_name else model
            old = getattr(owner, attr)
            fresh = torch.empty(shape, dtype=old.dtype)
            if isinstance(old, nn.Parameter):
                setattr(owner, attr, nn.Parameter(fresh, requires_grad=old.requires_grad))
            else:
                owner.register_buffer(attr, fresh, persistent=attr not in owner._non_persistent_buffers_set)
    return model


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(model: nn.Module, path: Path, meta: dict) -> None:
    """Write {"state_dict", "meta"}; meta holds arch, classes, the head's layout, the network's
    structure and the state_dict's version metadata (plain JSON-able values, read off the model)."""
    state = model.state_dict()
    versions = {prefix: dict(v) for prefix, v in getattr(state, "_metadata", {}).items()}
    meta = dict(meta, shapes=module_shapes(model), structure=structure(model), state_metadata=versions,
                **head_description(model))
    torch.save({"state_dict": {k: v.detach().cpu().contiguous() for k, v in state.items()}, "meta": meta}, path)


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the network a checkpoint of ours describes (pruned or not) and load its weights."""
    state, meta = load_checkpoint(path)
    if "arch" not in meta or "classes" not in meta:
        raise CompressError(f"checkpoint {path} has no arch/classes metadata; it was not written by compress")
    model = architectures.create(meta["arch"], len(meta["classes"]))
    attach_head(model, [int(w) for w in meta.get("head_hidden", [])], float(meta.get("head_dropout", 0.0)))
    if "structure" in meta:
        apply_structure(model, meta["structure"])
    else:  # checkpoints written before the structure was recorded: conv/BN/linear channel counts
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
