"""Will an architecture go through every stage a config runs? Checked before any work, on a freshly
built copy with random weights, by doing what the stages will do with it: run it at the training
crop, export it to ONNX and run the file, prune it one step and rebuild it from a checkpoint,
trace it for quantization-aware training, export it for ExecuTorch.

A run then either completes every stage or is refused up front, in one line naming the
architecture, what does not apply and what to set; nothing fails on a property of the model
after an hour of training. A check costs a forward pass, an export or a pruning (a few seconds
for a ResNet18 pruned to 0.35 of its parameters); one that passed is remembered in the user's
cache folder, keyed by its arguments, the library versions and the source of the code it runs,
so reruns and sweeps do not pay again.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.core import architectures
from compress.core.config import PruneConfig
from compress.core.errors import CompressError, summary
from compress.core.models import build_model, load_model, save_checkpoint
from compress.core.rundir import sha256_json
from compress.core.source_digest import code_files
from compress.exports.metadata import client_metadata
from compress.exports.onnx import export_onnx
from compress.exports.session import cpu_session, run_logits
from compress.methods.pruning import ROUND_MACS_CUT, Measure, Pruner

ATTENTION_NAMES = ("Attention", "MultiheadAttention")  # module class names that hold attention heads
_PASSED: set[str] = set()  # checks that passed in this process


def _code_digest() -> str:
    """The code everything a check runs: a changed exporter or pruner is checked again."""
    return sha256_json(code_files(__name__))


def _remembered(name: str, *args) -> tuple[bool, Callable[[], None]]:
    """(passed before, a function that records a pass) for the check `name` with `args`."""
    from compress.core.image_store import default_cache_dir
    from compress.core.provenance import library_versions
    key = sha256_json({"check": name, "args": args, "versions": library_versions(), "code": _code_digest()})
    stamp = default_cache_dir() / "fitness" / key[:32]
    if key in _PASSED or stamp.is_file():
        return True, lambda: None

    def record() -> None:
        _PASSED.add(key)
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps({"check": name, "args": args}, default=str))
        except OSError:  # a read-only cache folder only costs the check next time
            pass
    return False, record


PROBE_META = client_metadata(["a", "b"], [0.5] * 3, [0.25] * 3, 32, 32)  # a probe's file needs some metadata


def _exports_and_runs(model: nn.Module, path: Path, crop: int, opset: int) -> None:
    """Export `model` in its inference form as the export stage does, and run the file once in ONNX Runtime."""
    export_onnx(architectures.reparameterize(model), path, crop, opset, PROBE_META)
    run_logits(cpu_session(path), np.zeros((1, 3, crop, crop), np.float32))


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


def check_runs(arch: str, key: str, crop: int, opset: int, head_hidden=(), dropout: float = 0.0) -> None:
    """`arch` builds, runs on `crop`-px images (in eval and training mode), exports to ONNX and runs there."""
    architectures.check_arch(arch, key)
    passed, record = _remembered("runs", arch, crop, opset, list(head_hidden), dropout)
    if passed:
        return
    model = build_model(arch, 2, "none", dropout, head_hidden).eval()
    fixed = architectures.fixed_input_size(model)
    if fixed and fixed != crop:
        raise CompressError(f"{key}: {_size_hint(model, arch, crop)}")
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, crop, crop))
    except Exception as exc:
        raise CompressError(f"{key}: {_size_hint(model, arch, crop)} ({summary(exc)})") from None
    model.train()  # what training sees: one logits tensor per batch
    with torch.no_grad():
        out = model(torch.zeros(2, 3, crop, crop))
    model.eval()
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 2):
        raise CompressError(f"{key}: {arch} returns {type(out).__name__} in training mode, not one logits tensor "
                            "[batch, classes]; choose another architecture")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        try:
            _exports_and_runs(model, path, crop, opset)
        except Exception as exc:
            raise CompressError(f"{key}: {arch} cannot be exported to ONNX opset {opset} ({summary(exc)}); "
                                "choose another architecture or export.opset") from None
    record()


def check_prunable(arch: str, cfg: PruneConfig, crop: int, head_hidden=(), opset: int = 17) -> None:
    """`arch` can be pruned structurally as far as `cfg` asks, rebuilt from the checkpoint
    afterwards, and exported in its inference form; else one line saying why and
    `prune.enabled = false`."""
    passed, record = _remembered("prunable", arch, vars(cfg) if not hasattr(cfg, "as_dict") else cfg.as_dict(),
                                 crop, list(head_hidden), opset)
    if passed:
        return
    model = build_model(arch, 2, "none", head_hidden=head_hidden).eval()
    attention = sorted({type(m).__name__ for m in model.modules() if any(n in type(m).__name__ for n in ATTENTION_NAMES)})
    if attention:
        raise CompressError(f"prune: {arch} is not structurally prunable here: its attention layers "
                            f"({', '.join(attention)}) tie channels to heads; set prune.enabled=false")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch-pruning's notes on parameters it prunes by shape
            pruner = Pruner(model, cfg, crop, None)
            pruner.prune_until(*_target(cfg))
            with torch.no_grad():
                model(torch.zeros(1, 3, crop, crop))
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(model, Path(tmp) / "pruned.pt", {"arch": arch, "classes": ["a", "b"]})
            rebuilt, _ = load_model(Path(tmp) / "pruned.pt")
            _exports_and_runs(rebuilt, Path(tmp) / "pruned.onnx", crop, opset)
    except CompressError:
        raise
    except Exception as exc:
        raise CompressError(f"prune: {arch} is not structurally prunable by torch-pruning ({summary(exc)}); "
                            "set prune.enabled=false") from None
    record()


def _target(cfg: PruneConfig) -> tuple[Measure, float]:
    """The measure and share of the deepest pruning `cfg` can reach (rounds: all of them)."""
    if cfg.target == "params":
        return "params", cfg.params_ratio
    if cfg.target == "macs":
        return "macs", cfg.macs_ratio
    return "macs", (1 - ROUND_MACS_CUT) ** cfg.max_rounds


def qat_blocker(arch: str, crop: int, per_channel: bool, opset: int = 17) -> str | None:
    """Why quantization-aware training cannot run on `arch`, or None: it needs an FX-traceable graph,
    and its QDQ export has to run in ONNX Runtime (DenseNet's folded average pools do not)."""
    from compress.exports.fake_quant import calibrate_activations, export_fake_quant, fake_quant_model
    passed, record = _remembered("qat", arch, crop, per_channel, opset)
    if passed:
        return None
    model = architectures.reparameterize(build_model(arch, 2).eval())
    example = torch.randn(2, 3, crop, crop)
    try:
        qat_model = fake_quant_model(model, example, per_channel)
    except Exception as exc:
        return f"{arch} cannot be traced for quantization-aware training ({summary(exc)})"
    try:
        calibrate_activations(qat_model, [(example,)], torch.device("cpu"))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "qat.onnx"
            export_fake_quant(qat_model, path, crop, opset, PROBE_META)
            run_logits(cpu_session(path), np.zeros((2, 3, crop, crop), np.float32))
    except Exception as exc:
        return f"{arch}'s quantization-aware model does not run in ONNX Runtime ({summary(exc)})"
    record()
    return None


def check_litert(arch: str, crop: int) -> None:
    """`arch` converts with litert-torch and runs in LiteRT's interpreter (an untrained 2-class copy)."""
    from compress.exports.litert import LiteRTModel, write_tflite  # the optional extra, imported when asked
    passed, record = _remembered("litert", arch, crop)
    if passed:
        return
    model = architectures.reparameterize(build_model(arch, 2).eval())
    with tempfile.TemporaryDirectory() as tmp:
        try:
            write_tflite(model, Path(tmp) / "probe.tflite", crop, [0.5] * 3, [0.25] * 3)
            LiteRTModel(Path(tmp) / "probe.tflite", 1).logits(np.zeros((1, crop, crop, 3), np.uint8))
        except Exception as exc:
            raise CompressError(f"deploy.target = litert: {arch} cannot be converted by litert-torch or run in "
                                f"LiteRT ({summary(exc)}); use deploy.target = portable or executorch") from None
    record()


def check_executorch(arch: str, crop: int) -> None:
    """`arch` exports with torch.export, the first step of every ExecuTorch program."""
    passed, record = _remembered("executorch", arch, crop)
    if passed:
        return
    model = architectures.reparameterize(build_model(arch, 2).eval())
    try:
        torch.export.export(model, (torch.zeros(1, 3, crop, crop),))
    except Exception as exc:
        raise CompressError(f"deploy.target = executorch: {arch} cannot be exported with torch.export "
                            f"({summary(exc)}); use deploy.target = portable") from None
    record()
