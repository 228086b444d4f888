"""Stage `student_pruned`: structured channel pruning of the distilled student with
torch-pruning to a target MACs ratio, then a distillation fine-tune to recover accuracy.

torch-pruning's dependency graph prunes coupled channels together (a residual add forces the
same channels out of every conv feeding it), so the result is a smaller dense network that
runs faster everywhere, not a masked one. The saved checkpoint carries every layer's channel
counts, so it reloads with `weights_only=True` and no pickled module.
"""
from __future__ import annotations

import torch
import torch_pruning as tp

from pipeline.config import Config, PruneConfig
from pipeline.models import count_macs, count_params, last_linear, load_model, save_checkpoint
from pipeline.rundir import checkpoint_path, training_state_path
from pipeline.stage import Context, Stage
from stages.distill import make_objective, student_seed, train_with
from stages.losses import TERMS, parse_spec

PRUNE_STEPS = 40  # granularity of the search: the MACs target is met within ~1/40 of the range


def prune_to_macs(model: torch.nn.Module, cfg: PruneConfig, crop: int) -> dict:
    """Prune `model` in place, step by step, until its MACs are <= macs_ratio x the original."""
    model = model.cpu().eval()
    example = torch.zeros(1, 3, crop, crop)
    base_macs, base_params = count_macs(model, crop), count_params(model)
    importance = tp.importance.MagnitudeImportance(p=1 if cfg.importance == "l1" else 2)
    _, head = last_linear(model)
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=0.95,
                                  iterative_steps=PRUNE_STEPS, ignored_layers=[head],
                                  round_to=cfg.round_to if cfg.round_to > 1 else None)
    macs, steps = base_macs, 0
    while macs > cfg.macs_ratio * base_macs and steps < PRUNE_STEPS:
        pruner.step()
        steps += 1
        macs = count_macs(model, crop)
    return {"macs_before": base_macs, "macs_after": macs, "macs_ratio": macs / base_macs,
            "params_before": base_params, "params_after": count_params(model), "steps": steps,
            "target_macs_ratio": cfg.macs_ratio}


def fine_tune_spec(spec: str) -> str:
    """The student's loss with teacher-free terms (dml, self) replaced by kl from the teacher:
    a fresh peer or a snapshot would start from nothing in a 2-epoch fine-tune."""
    terms: dict[str, float] = {}
    for w, name in parse_spec(spec):
        name = name if TERMS[name].needs_teacher else "kl"
        terms[name] = terms.get(name, 0.0) + w
    return " + ".join(f"{w:g}*{n}" for n, w in terms.items())


class PruneStage(Stage):
    name = "student_pruned"
    sections = ("data", "train", "prune", "distill")

    def enabled(self, cfg: Config) -> bool:
        return cfg.prune.enabled

    def inputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path("teacher"), checkpoint_path("student")]

    def outputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path(self.name)]

    def run(self, ctx: Context, key: str) -> dict:
        cfg = ctx.cfg
        model, meta = load_model(ctx.run.path(checkpoint_path("student")))
        summary = prune_to_macs(model, cfg.prune, cfg.data.crop)
        ctx.log(f"pruned: MACs {summary['macs_before']:,} -> {summary['macs_after']:,} "
                f"({summary['macs_ratio']:.3f}x) in {summary['steps']} steps")
        seed = student_seed(cfg) + 7
        objective, _ = make_objective(ctx, model, fine_tune_spec(cfg.distill.loss), cfg.distill.alpha,
                                      cfg.distill.augment, seed)
        history = train_with(ctx, model, objective, key=key, name=self.name, epochs=cfg.prune.epochs,
                             lr=cfg.prune.lr, seed=seed)
        accuracy = history[-1]["val_accuracy"] if history else None
        meta = dict(meta, pruning=summary, history=history, val_accuracy=accuracy)
        with ctx.run.atomic(checkpoint_path(self.name)) as tmp:
            save_checkpoint(model, tmp, meta)
        ctx.run.path(training_state_path(self.name)).unlink(missing_ok=True)
        return {**summary, "val_accuracy": accuracy, "history": history}
