"""Stage `prune`: structured channel pruning of the distilled student with
torch-pruning, to a target MACs ratio, params ratio or measured latency, then a distillation
fine-tune to recover accuracy; writes the checkpoint `student_pruned`.

torch-pruning's dependency graph prunes coupled channels together (a residual add forces the
same channels out of every conv feeding it), so the result is a smaller dense network that
runs faster everywhere, not a masked one. Importance: weight magnitude (l1/l2), BatchNorm scale
(|γ|, Liu et al. 2017 "network slimming") or first-order Taylor (|w·∂L/∂w|, Molchanov et al.
2019, gradients from CE on training images). `global_pruning` ranks channels across layers
(layers differ in how much they can lose); uniform takes the same share from every layer.
Channel counts are rounded to `round_to` so SIMD kernels stay efficient.

A latency target cannot be computed from the graph (a MACs cut is not a latency cut), so it
is met by iterating: prune 15% more MACs, fine-tune briefly, export, measure ONNX Runtime p50
at batch 1 on this CPU; stop when met or after `prune.max_rounds`.

The checkpoint carries every layer's channel counts, so it reloads with `weights_only=True`.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch_pruning as tp

from compress.benchmarks.measure import percentiles
from compress.benchmarks.suite import time_latency
from compress.core.config import Config, PruneConfig
from compress.core.data import calibration_batch, calibration_indices
from compress.core.models import count_macs, count_params, last_linear, load_model, save_checkpoint
from compress.core.roster import PRUNED, STUDENT, TEACHER, checkpoint_path, training_state_path
from compress.core.stage import Context, Stage
from compress.exports.onnx import client_metadata, export_onnx
from compress.stages.kd.logit import cross_entropy
from compress.stages.kd.registry import TERMS
from compress.stages.kd.spec import parse_spec
from compress.stages.student_recipe import make_objective, student_seed
from compress.stages.training import TrainSpec, train

PRUNE_STEPS = 40  # granularity of the search: the target is met within ~1/40 of the range
ROUND_MACS_CUT = 0.15  # latency search: each round removes this share of the remaining MACs


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
        _, head = last_linear(model)
        self.pruner = tp.pruner.MetaPruner(
            model, torch.zeros(1, 3, crop, crop), importance=make_importance(cfg.importance),
            global_pruning=cfg.global_pruning, pruning_ratio=0.95, max_pruning_ratio=0.9 if cfg.global_pruning else 1.0,
            iterative_steps=PRUNE_STEPS, ignored_layers=[head], round_to=cfg.round_to if cfg.round_to > 1 else None)

    def ratios(self) -> tuple[float, float]:
        return count_macs(self.model, self.crop) / self.base_macs, count_params(self.model) / self.base_params

    def prune_until(self, done: Callable[[float, float], bool]) -> None:
        """Step until done(macs_ratio, params_ratio) or the schedule is exhausted."""
        self.model.cpu().eval()
        while not done(*self.ratios()) and self.steps < PRUNE_STEPS:
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


def onnx_p50_ms(model: torch.nn.Module, cfg: Config, images) -> float:
    """Batch-1 p50 latency of `model` through ONNX Runtime on this CPU at bench.threads."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        export_onnx(model, path, cfg.data.crop, cfg.export.opset, client_metadata([], cfg.data.mean, cfg.data.std,
                                                                                  cfg.data.resize, cfg.data.crop))
        return percentiles(time_latency({"m": path}, images, [1], cfg.bench).samples[1]["m"])["p50"]


def fine_tune_spec(spec: str) -> str:
    """The student's loss with teacher-free terms (dml, self) replaced by kl from the teacher:
    a fresh peer or a snapshot would start from nothing in a 2-epoch fine-tune."""
    terms: dict[str, float] = {}
    for w, name in parse_spec(spec):
        name = name if TERMS[name].needs_teacher else "kl"
        terms[name] = terms.get(name, 0.0) + w
    return " + ".join(f"{w:g}*{n}" for n, w in terms.items())


class PruneStage(Stage):
    name = "prune"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        measured = ("export", "bench") if cfg.prune.target == "latency" else ()  # the measurement depends on them
        return ("data", "train", "prune", "distill", *measured)

    def enabled(self, cfg: Config) -> bool:
        return cfg.prune.enabled

    def inputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path(TEACHER), checkpoint_path(STUDENT)]

    def outputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path(PRUNED)]

    def _fine_tune(self, ctx: Context, model, key: str, state_name: str, epochs: int, seed: int) -> list[dict]:
        """A distillation fine-tune from the teacher (CE alone when distill.alpha = 1)."""
        cfg = ctx.cfg
        spec = TrainSpec(state_name, key, epochs, cfg.prune.lr, seed, cfg.distill.augment)
        if cfg.distill.alpha >= 1.0:
            smoothing = cfg.train.label_smoothing
            return train(ctx, model, lambda m, x, y, _index: cross_entropy(m(x), y, smoothing), spec)
        objective, _ = make_objective(ctx, model, fine_tune_spec(cfg.distill.loss), seed)
        try:
            return train(ctx, model, objective, spec, objective=objective)
        finally:
            objective.close()

    def run(self, ctx: Context, key: str) -> dict:
        cfg, p = ctx.cfg, ctx.cfg.prune
        model, meta = load_model(ctx.run.path(checkpoint_path(STUDENT)))
        gradients = None
        if p.importance == "taylor":
            labels = ctx.data.train.labels[calibration_indices(ctx.data, 64, cfg.seed)]
            gradients = taylor_gradients(calibration_batch(ctx.data, cfg.data, 64, cfg.seed), labels)
        pruner = Pruner(model, p, cfg.data.crop, gradients)
        seed, rounds = student_seed(cfg) + 7, []
        if p.target == "latency":
            val = ctx.data.val_inputs(cfg.data).numpy()
            start_ms = onnx_p50_ms(model, cfg, val)
            for r in range(1, p.max_rounds + 1):
                pruner.prune_until(lambda macs, _params, r=r: macs <= (1 - ROUND_MACS_CUT) ** r)
                self._fine_tune(ctx, model, f"{key}-round{r}", f"{PRUNED}-round{r}", p.round_epochs, seed + r)
                ms = onnx_p50_ms(model, cfg, val)
                rounds.append({"round": r, "macs_ratio": pruner.ratios()[0], "p50_ms": ms})
                ctx.log(f"prune round {r}: MACs {pruner.ratios()[0]:.3f}x, p50 {ms:.2f} ms (target {p.target_latency_ms} ms)")
                ctx.run.path(training_state_path(f"{PRUNED}-round{r}")).unlink(missing_ok=True)
                if ms <= p.target_latency_ms:
                    break
            else:
                ctx.warn(f"prune.target_latency_ms = {p.target_latency_ms} not met after {p.max_rounds} rounds: "
                         f"{rounds[-1]['p50_ms']:.2f} ms (unpruned {start_ms:.2f} ms); raise prune.max_rounds")
        elif p.target == "params":
            pruner.prune_until(lambda _macs, params: params <= p.params_ratio)
        else:
            pruner.prune_until(lambda macs, _params: macs <= p.macs_ratio)
        summary = pruner.summary(p)
        summary.update(target_value={"macs": p.macs_ratio, "params": p.params_ratio,
                                     "latency": p.target_latency_ms}[p.target], latency_rounds=rounds)
        ctx.log(f"pruned: MACs {summary['macs_before']:,} -> {summary['macs_after']:,} ({summary['macs_ratio']:.3f}x), "
                f"params {summary['params_ratio']:.3f}x in {summary['steps']} steps")
        history = self._fine_tune(ctx, model, key, PRUNED, p.epochs, seed)
        accuracy = history[-1]["val_accuracy"] if history else None
        meta = dict(meta, pruning=summary, history=history, val_accuracy=accuracy)
        with ctx.run.atomic(checkpoint_path(PRUNED)) as tmp:
            save_checkpoint(model, tmp, meta)
        ctx.run.path(training_state_path(PRUNED)).unlink(missing_ok=True)
        return {**summary, "val_accuracy": accuracy, "history": history}
