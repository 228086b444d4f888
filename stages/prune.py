"""Stage `prune`: structured channel pruning of the distilled student (compress.methods.pruning),
by default in rounds while val accuracy holds the budget (the last such round ships, as measured),
or to a target MACs ratio, params ratio or measured latency followed by a distillation fine-tune; writes the checkpoint `student_pruned`, which carries every layer's channel
counts, so it reloads with `weights_only=True`."""
from __future__ import annotations

from compress.core.budget import within_budget
from compress.core.config import Config
from compress.core.data import Dataset, calibration_batch, calibration_indices
from compress.core.loop import evaluate
from compress.core.models import load_model, save_checkpoint
from compress.core.roster import PRUNE_ROUNDS, PRUNED, STUDENT, checkpoint_path, round_checkpoint, teacher_file
from compress.core.stage import Context
from compress.methods.fitness import check_prunable
from compress.methods.pruning import ROUND_MACS_CUT, Pruner, onnx_p50_ms, taylor_gradients
from compress.methods.student import phase_loss, train_student
from compress.stages.training_stage import StudentStage


class PruneStage(StudentStage):
    name = "prune"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        measured = {"latency": ("export", "bench"), "accuracy": ("deploy.max_accuracy_drop",)}.get(cfg.prune.target, ())
        return ("data", "train", "prune", "distill", "teacher.onnx", *measured, *self.fold_teacher_keys(cfg))

    def enabled(self, cfg: Config) -> bool:
        return cfg.prune.enabled

    def check(self, cfg: Config, data: Dataset | None) -> None:
        if data is None:
            check_prunable(cfg.distill.arch, cfg.prune, cfg.data.crop, cfg.distill.head_hidden, cfg.export.opset)

    def inputs(self, cfg: Config) -> list[str]:
        return [teacher_file(cfg), checkpoint_path(STUDENT)]

    def outputs(self, cfg: Config) -> list[str]:
        return [checkpoint_path(PRUNED)] + ([PRUNE_ROUNDS] if cfg.prune.target == "accuracy" else [])

    def run(self, ctx: Context, key: str) -> dict:
        cfg, p = ctx.cfg, ctx.cfg.prune
        model, meta = load_model(ctx.run.path(checkpoint_path(STUDENT)))
        gradients = None
        if p.importance == "taylor":
            labels = ctx.data.train.labels[calibration_indices(ctx.data, 64, cfg.seed)]
            gradients = taylor_gradients(calibration_batch(ctx.data, cfg.data, 64, cfg.seed), labels)
        pruner = Pruner(model, p, cfg.data.crop, gradients)
        trainer, seed, spec = self.trainer(ctx), self.seed(ctx) + 7, phase_loss(cfg.distill.loss, "prune")

        def fine_tune(name: str, run_key: str, epochs: int, run_seed: int) -> list[dict]:
            run = self.train_run(ctx, name, run_key, epochs, p.lr, run_seed, p.augment)
            history = train_student(trainer, model, run, self.distillation(ctx, trainer, spec, run.seed, run.augment))
            run.state_path.unlink(missing_ok=True)
            return history

        rounds, shipped, start = [], None, None
        if p.target == "latency":
            val = ctx.data.val_inputs(cfg.data).numpy()
            start_ms = onnx_p50_ms(model, cfg.data, cfg.export.opset, cfg.bench, val)
            for r in range(1, p.max_rounds + 1):
                pruner.prune_until("macs", (1 - ROUND_MACS_CUT) ** r)
                fine_tune(f"{PRUNED}-round{r}", f"{key}-round{r}", p.round_epochs, seed + r)
                ms = onnx_p50_ms(model, cfg.data, cfg.export.opset, cfg.bench, val)
                rounds.append({"round": r, "macs_ratio": pruner.ratio("macs"), "p50_ms": ms})
                ctx.log(f"prune round {r}: MACs {rounds[-1]['macs_ratio']:.3f}x, p50 {ms:.2f} ms (target {p.target_latency_ms} ms)")
                if ms <= p.target_latency_ms:
                    break
            else:
                ctx.warn(f"prune.target_latency_ms = {p.target_latency_ms} not met after {p.max_rounds} rounds: "
                         f"{rounds[-1]['p50_ms']:.2f} ms (unpruned {start_ms:.2f} ms); raise prune.max_rounds")
        elif p.target == "accuracy":
            rounds, model, start, round_meta = self._accuracy_rounds(ctx, pruner, meta, fine_tune, seed, key)
            pruner.model = model  # the round that ships, in place of the last one tried
            shipped = next((r for r in reversed(rounds) if r["within_budget"]), None)
            if shipped is None:
                pruner.steps = 0  # the unpruned student ships
        elif p.target == "params":
            pruner.prune_until("params", p.params_ratio)
        else:
            pruner.prune_until("macs", p.macs_ratio)
        summary = pruner.summary(p)
        summary.update(target_value={"macs": p.macs_ratio, "params": p.params_ratio, "latency": p.target_latency_ms,
                                     "accuracy": cfg.deploy.max_accuracy_drop if p.target == "accuracy" else None}[p.target],
                       latency_rounds=rounds if p.target == "latency" else [],
                       accuracy_rounds=rounds if p.target == "accuracy" else [])
        ctx.log(f"pruned: MACs {summary['macs_before']:,} -> {summary['macs_after']:,} ({summary['macs_ratio']:.3f}x), "
                f"params {summary['params_ratio']:.3f}x in {summary['steps']} steps")
        if p.target == "accuracy":  # the round that ships, exactly as it was measured against the budget
            history = round_meta.get("history", []) if shipped else []
            accuracy = shipped["val_accuracy"] if shipped else start
            how = self.train_run(ctx, PRUNED, key, p.round_epochs, p.lr, seed, p.augment).describe(cfg.train) + _views(p.augment)
            recipe = (f"pruned from the student in {shipped['round']} rounds of {ROUND_MACS_CUT:.0%} MACs, each "
                      f"followed by {how}" if shipped else "not pruned: even one round lost more than the budget")
        else:
            final = self.train_run(ctx, PRUNED, key, p.epochs, p.lr, seed, p.augment)
            history = train_student(trainer, model, final, self.distillation(ctx, trainer, spec, final.seed, final.augment))
            accuracy = history[-1]["val_accuracy"] if history else None
            recipe = f"pruned from the student, then {final.describe(cfg.train)}{_views(p.augment)}"
            final.state_path.unlink(missing_ok=True)
        meta = dict(meta, pruning=summary, history=history, val_accuracy=accuracy, recipe=recipe)
        with ctx.run.atomic(checkpoint_path(PRUNED)) as tmp:
            save_checkpoint(model, tmp, meta)
        return {**summary, "val_accuracy": accuracy, "history": history}

    def _accuracy_rounds(self, ctx: Context, pruner: Pruner, meta: dict, fine_tune, seed: int, key: str):
        """Prune ROUND_MACS_CUT more MACs per round, fine-tune briefly, measure val accuracy; stop after
        the first round below the budget (deploy.max_accuracy_drop points under the unpruned student)
        or prune.max_rounds. Every round is kept as a checkpoint (a point a search chooses from,
        listed in checkpoints/prune_rounds.json); the last round within the budget ships, or the
        unpruned student when not even round 1 held it (shipped_round 0)."""
        cfg, p = ctx.cfg, ctx.cfg.prune
        start = evaluate(pruner.model, ctx.data, cfg.data, ctx.device)
        floor = start - cfg.deploy.max_accuracy_drop / 100
        rounds: list[dict] = []
        for r in range(1, p.max_rounds + 1):
            pruner.prune_until("macs", (1 - ROUND_MACS_CUT) ** r)
            history = fine_tune(f"{PRUNED}-round{r}", f"{key}-round{r}", p.round_epochs, seed + r)
            accuracy = history[-1]["val_accuracy"] if history else evaluate(pruner.model, ctx.data, cfg.data, ctx.device)
            rel = round_checkpoint(r)
            with ctx.run.atomic(rel) as tmp:
                save_checkpoint(pruner.model, tmp, dict(meta, history=history, val_accuracy=accuracy, prune_round=r))
            macs, params = pruner.ratios()
            rounds.append({"round": r, "checkpoint": rel, "sha256": ctx.run.sha256(rel), "macs_ratio": macs,
                           "params_ratio": params, "val_accuracy": accuracy,
                           "within_budget": within_budget(start, accuracy, cfg.deploy.max_accuracy_drop)})
            ctx.log(f"prune round {r}: MACs {macs:.3f}x, val accuracy {accuracy:.4f} (unpruned {start:.4f}, "
                    f"budget {cfg.deploy.max_accuracy_drop:g} points)")
            if not rounds[-1]["within_budget"]:
                break
        kept = [r for r in rounds if r["within_budget"]]
        if not kept:
            ctx.warn(f"prune.target = accuracy: even round 1 lost more than {cfg.deploy.max_accuracy_drop:g} val points "
                     f"({rounds[0]['val_accuracy']:.4f} vs {start:.4f}); the unpruned student is kept as the pruned one")
        ctx.run.write_json(PRUNE_ROUNDS, {"unpruned_val_accuracy": start, "floor": floor, "rounds": rounds,
                                          "shipped_round": kept[-1]["round"] if kept else 0})
        model, round_meta = load_model(ctx.run.path(kept[-1]["checkpoint"] if kept else checkpoint_path(STUDENT)))
        return rounds, model, start, round_meta


def _views(augment: str) -> str:
    """What the fine-tunes after pruning train on, for the recipe in the manifest, report and card."""
    return " on centre crops (the teacher's logits computed once)" if augment == "none" else f" on {augment}-augmented crops"
