"""Structured channel pruning with torch-pruning, to a MACs ratio, a params ratio or a measured
latency (the prune stage then fine-tunes the result with the student's distillation loss).

torch-pruning's dependency graph prunes coupled channels together (a residual add forces the
same channels out of every conv feeding it), so the result is a smaller dense network that
runs faster everywhere, not a masked one. Importance: weight magnitude (l1/l2), BatchNorm scale
(|γ|, Liu et al. 2017 "network slimming") or first-order Taylor (|w·∂L/∂w|, Molchanov et al.
2019, gradients from CE on training images). `global_pruning` ranks channels across layers
(layers differ in how much they can lose); uniform takes the same share from every layer.
Channel counts are rounded to `round_to` so SIMD kernels stay efficient.

A latency target cannot be computed from the graph (a MACs cut is not a latency cut), so it
is met by iterating: prune 15% more MACs, fine-tune briefly, export, measure ONNX Runtime p50
at batch 1 on this CPU (`onnx_p50_ms`); stop when met or after `prune.max_rounds`.
"""
from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch_pruning as tp

from compress.core.config import BenchConfig, DataConfig, PruneConfig
from compress.core.heads import classifier_head
from compress.core.models import count_macs, count_params
from compress.exports.onnx import client_metadata, export_onnx
from compress.measure.latency import percentiles
from compress.measure.suite import time_latency

PRUNE_STEPS = 40  # granularity of the search: the target is met within ~1/40 of the range
ROUND_MACS_CUT = 0.15  # latency search: each round removes this share of the remaining MACs
Measure = Literal["macs", "params"]


def make_importance(name: str):
    if name == "bn":
        return tp.importance.BNScaleImportance()
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if name == "l1" else 2)


class Pruner:
    """Steps a torch-pruning MetaPruner and reports the network's size after each step."""

    def __init__(self, model: torch.nn.Module, cfg: PruneConfig, crop: int,
                 gradients: Callable[[torch.nn.Module], None] | None):
        self.model, self.crop, self.steps = model.cpu().eval(), crop, 0
        self.base_macs, self.base_params = count_macs(model, crop), count_params(model)
        self.gradients = gradients if cfg.importance == "taylor" else None  # only Taylor reads .grad
        _, head = classifier_head(model)
        with warnings.catch_warnings():  # torch-pruning notes each bare parameter it prunes by shape
            warnings.simplefilter("ignore")
            self.pruner = tp.pruner.MetaPruner(
                model, torch.zeros(1, 3, crop, crop), importance=make_importance(cfg.importance),
                global_pruning=cfg.global_pruning, pruning_ratio=0.95,
                max_pruning_ratio=0.9 if cfg.global_pruning else 1.0, iterative_steps=PRUNE_STEPS,
                ignored_layers=[head], round_to=cfg.round_to if cfg.round_to > 1 else None)

    def ratios(self) -> tuple[float, float]:
        return self.ratio("macs"), self.ratio("params")

    def ratio(self, measure: Measure) -> float:
        """The network's MACs or parameters now, as a share of the unpruned network's."""
        if measure == "macs":
            return count_macs(self.model, self.crop) / self.base_macs
        return count_params(self.model) / self.base_params

    def prune_until(self, measure: Measure, share: float) -> None:
        """Step until `measure` (MACs or params) is at or below `share` of the unpruned network's, or
        the schedule is exhausted. Only that measure is counted after each step: counting MACs runs
        the network, counting parameters does not."""
        self.model.cpu().eval()
        while self.ratio(measure) > share and self.steps < PRUNE_STEPS:
            if self.gradients is not None:
                self.gradients(self.model)
            self.pruner.step()
            self.steps += 1
        if self.gradients is not None:
            self.model.zero_grad(set_to_none=True)

    def summary(self, cfg: PruneConfig) -> dict:
        macs, params = count_macs(self.model, self.crop), count_params(self.model)
        return {"macs_before": self.base_macs, "macs_after": macs, "macs_ratio": macs / self.base_macs,
                "params_before": self.base_params, "params_after": params, "params_ratio": params / self.base_params,
                "steps": self.steps, "target": cfg.target, "importance": cfg.importance,
                "global_pruning": cfg.global_pruning}


def taylor_gradients(images: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.nn.Module], None]:
    """Fills .grad with CE gradients on a fixed set of training images (what Taylor importance reads)."""
    def fill(model: torch.nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
    return fill


def onnx_p50_ms(model: torch.nn.Module, data_cfg: DataConfig, opset: int, bench: BenchConfig, images) -> float:
    """Batch-1 p50 latency of `model` through ONNX Runtime on this CPU at bench.threads."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        export_onnx(model, path, data_cfg.crop, opset, client_metadata([], data_cfg.mean, data_cfg.std,
                                                                       data_cfg.resize, data_cfg.crop))
        return percentiles(time_latency({"m": path}, images, [1], bench).samples[1]["m"])["p50"]
