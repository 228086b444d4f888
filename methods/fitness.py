"""Will an architecture go through every stage a config runs? Checked before any work, on a freshly
built copy with random weights, by doing what the stages will do with it: run it at the training
crop, export it to ONNX and run the file, prune it one step and rebuild it from a checkpoint,
trace it for quantization-aware training, export it for ExecuTorch.

A run then either completes every stage or is refused up front, in one line naming the
architecture, what does not apply and what to set; nothing fails on a property of the model
after an hour of training. Each check costs one small forward pass or export (about a second for
a ResNet50 at 32 px), a fraction of one training epoch.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.core import architectures
from compress.core.config import PruneConfig
from compress.core.errors import CompressError
from compress.core.models import build_model, load_model, save_checkpoint
from compress.exports.metadata import client_metadata
from compress.exports.onnx import export_onnx
from compress.exports.session import cpu_session, run_logits
from compress.methods.pruning import Pruner

ATTENTION_NAMES = ("Attention", "MultiheadAttention")  # module class names that hold attention heads


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _size_hint(model: nn.Module, arch: str, crop: int) -> str:
    fixed = architectures.fixed_input_size(model)
    if fixed and fixed != crop:
        return f"{arch} takes {fixed}-px inputs: set data.crop={fixed} (and data.resize >= {fixed})"
    for size in (s for s in (24, 32, 48, 64, 96, 128, 160, 224) if s > crop):  # the smallest input it takes
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
        except Exception:
            continue
        return f"{arch} does not run on {crop}-px inputs: set data.crop >= {size} (and data.resize >= data.crop)"
    return f"{arch} does not run on {crop}-px inputs; try a larger data.crop"


def check_runs(arch: str, key: str, crop: int, opset: int, head_hidden=(), dropout: float = 0.0) -> nn.Module:
    """`arch` builds, runs on `crop`-px images, exports to ONNX and runs there; returns the model."""
    architectures.check_arch(arch, key)
    model = build_model(arch, 2, "none", dropout, head_hidden).eval()
    fixed = architectures.fixed_input_size(model)
    if fixed and fixed != crop:
        raise CompressError(f"{key}: {_size_hint(model, arch, crop)}")
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, crop, crop))
    except Exception as exc:
        raise CompressError(f"{key}: {_size_hint(model, arch, crop)} ({_short(exc)})") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        try:
            export_onnx(architectures.reparameterize(model), path, crop, opset,
                        client_metadata(["a", "b"], [0.5] * 3, [0.25] * 3, crop, crop))
            run_logits(cpu_session(path), np.zeros((1, 3, crop, crop), np.float32))
        except Exception as exc:
            raise CompressError(f"{key}: {arch} cannot be exported to ONNX opset {opset} ({_short(exc)}); "
                                "choose another architecture or export.opset") from None
    return model


def check_prunable(arch: str, cfg: PruneConfig, crop: int, head_hidden=()) -> None:
    """`arch` can be pruned structurally and rebuilt from the checkpoint afterwards; else one line
    saying why and `prune.enabled = false`."""
    model = build_model(arch, 2, "none", head_hidden=head_hidden).eval()
    attention = sorted({type(m).__name__ for m in model.modules() if any(n in type(m).__name__ for n in ATTENTION_NAMES)})
    if attention:
        raise CompressError(f"prune: {arch} is not structurally prunable here: its attention layers "
                            f"({', '.join(attention)}) tie channels to heads; set prune.enabled=false")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch-pruning's notes on parameters it prunes by shape
            pruner = Pruner(model, cfg, crop, None)
            pruner.prune_until(lambda _macs, _params: pruner.steps >= 1)
            with torch.no_grad():
                model(torch.zeros(1, 3, crop, crop))
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(model, Path(tmp) / "pruned.pt", {"arch": arch, "classes": ["a", "b"]})
            load_model(Path(tmp) / "pruned.pt")
    except CompressError:
        raise
    except Exception as exc:
        raise CompressError(f"prune: {arch} is not structurally prunable by torch-pruning ({_short(exc)}); "
                            "set prune.enabled=false") from None


def qat_blocker(arch: str, crop: int, per_channel: bool) -> str | None:
    """Why quantization-aware training cannot run on `arch` (it needs an FX-traceable graph), or None."""
    from compress.exports.fake_quant import fake_quant_model
    model = architectures.reparameterize(build_model(arch, 2).eval())
    try:
        fake_quant_model(model, torch.zeros(2, 3, crop, crop), per_channel)
    except Exception as exc:
        return f"{arch} cannot be traced for quantization-aware training ({_short(exc)})"
    return None


def check_executorch(arch: str, crop: int) -> None:
    """`arch` exports with torch.export, the first step of every ExecuTorch program."""
    model = architectures.reparameterize(build_model(arch, 2).eval())
    try:
        torch.export.export(model, (torch.zeros(1, 3, crop, crop),))
    except Exception as exc:
        raise CompressError(f"deploy.target = executorch: {arch} cannot be exported with torch.export "
                            f"({_short(exc)}); use deploy.target = portable") from None
