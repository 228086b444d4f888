"""Stage `quantize`: int8 static quantization of the final fp32 student (the pruned one when
pruning is on), calibrated on real training images (compress.methods.int8_search).

With quantize.format = "auto" every candidate layout is built, timed interleaved with its fp32
source at batch 1 on this CPU, and scored on val through ONNX Runtime; the fastest within
quantize.max_accuracy_drop becomes onnx/student_int8.onnx. With deploy.target = portable (the
default) only layouts made of standard ONNX operators can win (QDQ); QOperator layouts need ONNX
Runtime's com.microsoft operators and so load nowhere else: they are measured and listed, and
win only with deploy.target = onnxruntime (or when named in quantize.format). onnx/quantize.json lists every
candidate and why the winner won; when no int8 candidate beats fp32 it says so and names the
fp32 model as the deployable one (student_int8.onnx is then the best int8 candidate, for reference).
`dynamic` and `fp16` are measured and listed for the record but chosen only when named in
quantize.format: dynamic leaves a CNN's convolutions in fp32 and ORT's CPU has few fp16
kernels, so a win by them on the CPU is timing noise, not a smaller int8 model.
When no post-training candidate meets the budget, a mixed-precision candidate and (quantize.qat)
a quantization-aware fine-tune join the choice; deploy.target = executorch adds the .pte choice.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from compress.core import architectures
from compress.core.config import Config
from compress.core.data import calibration_batch
from compress.core.documents import QuantizeDecision
from compress.core.errors import CompressError
from compress.core.models import build_model, load_model
from compress.core.roster import (
    INT8,
    PTE_INT8,
    QUANTIZE_INFO,
    SENSITIVITY,
    STUDENT,
    TFLITE_FILES,
    checkpoint_path,
    final_fp32_student,
    onnx_path,
    pte_path,
    teacher_file,
)
from compress.core.stage import Context
from compress.exports import litert
from compress.exports.fake_quant import export_fake_quant
from compress.exports.onnx import layer_names, read_metadata
from compress.exports.quantize import choose, preprocessed
from compress.exports.runtimes import EXTRAS, require
from compress.methods import int8_search as search
from compress.methods.fitness import check_executorch, check_litert, qat_blocker
from compress.methods.int8_search import REFERENCE_ONLY, Trial
from compress.methods.pte import choose_pte
from compress.methods.qat import QAT_CANDIDATE, QAT_NAME, train_qat
from compress.methods.student import phase_loss
from compress.methods.tflite import MIN_AGREEMENT as MIN_TFLITE_AGREEMENT
from compress.methods.tflite import choose_tflite
from compress.stages.training_stage import StudentStage


class QuantizeStage(StudentStage):
    name = "quantize"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        qat = ("train", "distill", "export.opset", "seed", "teacher.onnx", *self.fold_teacher_keys(cfg)) \
            if cfg.quantize.qat != "off" else ()  # QAT trains
        return ("data", "quantize", "bench", "prune.enabled", "prune.target", "deploy.target",
                "deploy.max_accuracy_drop", *qat)

    def enabled(self, cfg: Config) -> bool:
        return cfg.quantize.enabled

    def inputs(self, cfg: Config) -> list[str]:
        qat = [teacher_file(cfg)] if cfg.quantize.qat != "off" else []
        weights = ([checkpoint_path(final_fp32_student(cfg))]
                   if qat or cfg.deploy.target in ("executorch", "litert") else [])
        unpruned = [onnx_path(STUDENT)] if self.shares_the_prune_budget(cfg) else []
        return [onnx_path(final_fp32_student(cfg)), *weights, *qat, *unpruned]

    @staticmethod
    def shares_the_prune_budget(cfg: Config) -> bool:
        """prune.target = accuracy: int8 may lose only what pruning left of deploy.max_accuracy_drop."""
        return cfg.prune.enabled and cfg.prune.target == "accuracy"

    def int8_budget(self, ctx: Context, trial: Trial, source_accuracy: float) -> tuple[float, str]:
        """(points int8 may lose against its source, why): quantize.max_accuracy_drop, or less when
        pruning already spent part of the deployable's budget against the unpruned student."""
        q, cfg = ctx.cfg.quantize, ctx.cfg
        if not self.shares_the_prune_budget(cfg):
            return q.max_accuracy_drop, ""
        unpruned = trial.accuracy(trial.predict(ctx.run.path(onnx_path(STUDENT))))
        spent = 100 * (unpruned - source_accuracy)
        left = max(0.0, cfg.deploy.max_accuracy_drop - spent)
        if left >= q.max_accuracy_drop:
            return q.max_accuracy_drop, ""
        return left, (f"int8 budget {left:.2f} pts: deploy.max_accuracy_drop {cfg.deploy.max_accuracy_drop:g} less "
                      f"the {spent:.2f} pts pruning cost against the unpruned student on val")

    def outputs(self, cfg: Config) -> list[str]:
        pte = [pte_path(final_fp32_student(cfg)), PTE_INT8] if cfg.deploy.target == "executorch" else []
        tflite = list(TFLITE_FILES.values()) if cfg.deploy.target == "litert" else []
        return [onnx_path(INT8), QUANTIZE_INFO, SENSITIVITY, *pte, *tflite]

    def check(self, cfg: Config, data) -> None:
        if cfg.deploy.target in EXTRAS:
            require(cfg.deploy.target)
        if cfg.deploy.target == "litert":
            litert.require()
        if data is None and cfg.deploy.target == "executorch":
            check_executorch(cfg.distill.arch, cfg.data.crop)
        if data is None and cfg.deploy.target == "litert":
            check_litert(cfg.distill.arch, cfg.data.crop)
        if data is None and cfg.quantize.qat == "on":
            blocked = qat_blocker(cfg.distill.arch, cfg.data.crop, cfg.quantize.per_channel, cfg.export.opset)
            if blocked:
                raise CompressError(f"quantize.qat = on: {blocked}; set quantize.qat = auto or off")
        if cfg.quantize.keep_float and data is None:  # names depend only on the architecture: checked up front
            student = build_model(cfg.distill.arch, 2, head_hidden=cfg.distill.head_hidden)
            valid = layer_names(student, cfg.data.crop, cfg.export.opset)
            unknown = [n for n in cfg.quantize.keep_float if n not in valid]
            if unknown:
                raise CompressError(f"quantize.keep_float: no layer named {unknown[0]!r} in {cfg.distill.arch}; valid "
                                    f"names ({len(valid)}, as onnx/sensitivity.json lists them): {', '.join(valid[:4])}, "
                                    f"..., {valid[-1]}")

    def run(self, ctx: Context, key: str) -> dict:
        cfg, q = ctx.cfg, ctx.cfg.quantize
        source_name = final_fp32_student(cfg)
        source = ctx.run.path(onnx_path(source_name))
        names: list[str] = list(q.candidates) if q.format == "auto" else [q.format]
        with tempfile.TemporaryDirectory(dir=ctx.run.path("onnx")) as tmp, preprocessed(source) as prepped:
            calibration = calibration_batch(ctx.data, cfg.data, q.calibration_samples, cfg.seed).numpy()
            trial = Trial(source, prepped, Path(tmp), calibration, ctx.data.val_inputs(cfg.data).numpy(),
                          ctx.data.val.labels.numpy(), cfg.bench.threads, cfg.bench.metric)
            files, preds = search.build_all(trial, names, q, ctx.warn)
            static = [n for n in names if n in files and n not in REFERENCE_ONLY]
            analysed = search.most_likely_layout(trial, preds, static)
            ranking = search.sensitivity(trial, analysed, q)
            ptq_met = any(search.meets_budget(trial, preds, n, q.max_accuracy_drop) for n in static)
            mixed = None
            if ranking and analysed and not ptq_met:  # plain PTQ misses the budget
                mixed = search.mixed_candidate(trial, analysed, ranking, trial.accuracy(preds["fp32"]), q, ctx.warn)
                if mixed:
                    files[mixed["name"]], preds[mixed["name"]] = mixed.pop("path"), mixed.pop("predictions")
            qat = None
            wanted = q.qat == "on" or (q.qat == "auto" and q.format == "auto" and not (ptq_met or mixed))
            blocked = (qat_blocker(cfg.distill.arch, cfg.data.crop, q.per_channel, cfg.export.opset)
                       if wanted and q.qat == "auto" else None)
            if blocked:
                ctx.warn(f"quantization-aware training skipped: {blocked}")
            if wanted and not blocked:
                files[QAT_CANDIDATE] = trial.tmp / "qat.onnx"
                qat = self._qat(ctx, key, source_name, source, files[QAT_CANDIDATE])
                preds[QAT_CANDIDATE] = trial.predict(files[QAT_CANDIDATE])
                qat["accuracy"] = trial.accuracy(preds[QAT_CANDIDATE])
                ctx.log(f"QAT: val accuracy {qat['accuracy']:.4f} (fp32 {trial.accuracy(preds['fp32']):.4f})")
            fp32, candidates = search.measure(trial, {"fp32": source, **files}, preds, cfg.bench, cfg.deploy.target)
            eligible = [c for c in candidates if q.format == c.name or (
                c.name not in REFERENCE_ONLY and c.p50_ms != float("inf")
                and (not c.vendor_ops or cfg.deploy.target == "onnxruntime"))] or candidates
            budget, why = self.int8_budget(ctx, trial, fp32.accuracy)
            if why:
                ctx.log(why)
            winner, reason = choose(eligible, fp32, budget if q.format == "auto" else 100.0)
            if eligible:
                keep = winner if winner != "fp32" else max(eligible, key=lambda c: (c.accuracy, -c.p50_ms)).name
            else:  # every layout failed in ONNX Runtime (warned above): the fp32 model stays the deployable
                keep, reason = "fp32", "no int8 layout ran in ONNX Runtime for this model"
                ctx.warn(f"{reason}; {onnx_path(INT8)} is a copy of the fp32 {source_name}")
            with ctx.run.atomic(onnx_path(INT8)) as out:
                shutil.copyfile(files.get(keep, source), out)
            executorch = self._pte(ctx, source_name, trial, budget) if cfg.deploy.target == "executorch" else None
            tflite = self._tflite(ctx, source_name, source, trial, budget) if cfg.deploy.target == "litert" else None
        chosen_ops = next((c.vendor_ops for c in candidates if c.name == keep), [])
        decision = QuantizeDecision.from_dict(dict(
            source=source_name, format=q.format, chosen=winner, int8_file_holds=keep, deploy_target=cfg.deploy.target,
            vendor_ops=chosen_ops, mixed=mixed, qat=qat, executorch=executorch, litert=tflite,
            deployable=INT8 if winner != "fp32" else source_name, reason=reason, fp32=vars(fp32),
            candidates=[dict(vars(c), agreement_with_source=float(np.mean(preds[c.name] == preds["fp32"])))
                        for c in candidates]), "the quantize stage")
        ctx.run.write_json(QUANTIZE_INFO, decision.to_dict())
        ctx.run.write_json(SENSITIVITY, {"layout": analysed, "measure": "SQNR (dB) lost in each layer, "
                                         "onnxruntime.quantization.qdq_loss_debug on calibration images",
                                         "layers": ranking})
        agreement = float(np.mean(preds[keep] == preds["fp32"]))
        self._report(ctx, winner, keep, reason, source_name, chosen_ops, agreement)
        return {"chosen": winner, "deployable": decision.deployable, "agreement_with_source": agreement,
                "reason": reason}

    def _qat(self, ctx: Context, key: str, source_name: str, source_onnx: Path, target: Path) -> dict:
        """Fine-tune `source_name`'s checkpoint with fake quantization and write it as QDQ ONNX to
        `target` with the source file's metadata; returns what was done."""
        cfg, q = ctx.cfg, ctx.cfg.quantize
        model = architectures.reparameterize(load_model(ctx.run.path(checkpoint_path(source_name)))[0])
        trainer, seed, loss = self.trainer(ctx), self.seed(ctx), phase_loss(cfg.distill.loss, "qat")
        if loss != cfg.distill.loss:
            ctx.log(f"QAT: distill.loss {cfg.distill.loss!r} compares features a folded graph does not expose; "
                    f"fine-tuning with {loss!r} on logits")
        plan = self.distillation(ctx, trainer, loss, seed, cfg.distill.augment)
        run = self.train_run(ctx, QAT_NAME, key, q.qat_epochs, q.qat_lr, seed, cfg.distill.augment)
        qat_model, outcome = train_qat(trainer, model, run, plan, q.per_channel)
        metadata = {**read_metadata(source_onnx),
                    "quantization": f"int8 QDQ u8s8 by quantization-aware training ({q.qat_epochs} epochs"
                                    f"{', per-channel' if q.per_channel else ''})"}
        export_fake_quant(qat_model, target, cfg.data.crop, cfg.export.opset, metadata)
        run.state_path.unlink(missing_ok=True)
        return {"name": QAT_CANDIDATE, "loss": loss, "teacher_signal": plan.source if plan else "none (CE only)",
                "epochs": q.qat_epochs, "lr": q.qat_lr, **outcome}

    @staticmethod
    def _pte(ctx: Context, source_name: str, trial: Trial, budget: float) -> dict:
        """The fp32 and int8 .pte of the final student, measured in ExecuTorch; the faster within budget ships."""
        files = {"fp32": pte_path(source_name), "int8": PTE_INT8}
        model = architectures.reparameterize(load_model(ctx.run.path(checkpoint_path(source_name)))[0])
        decision = choose_pte(model, {n: ctx.run.path(rel) for n, rel in files.items()}, ctx.cfg.data.crop,
                              trial.calibration, trial.val, trial.labels, ctx.cfg.bench, budget)
        chosen = decision["chosen"]
        return {"runtime_version": decision.pop("runtime_version"), "chosen": decision.pop("chosen"),
                "file": files[chosen], **decision}

    @staticmethod
    def _tflite(ctx: Context, source_name: str, source: Path, trial: Trial, budget: float) -> dict:
        """The fp32 and int8 .tflite of the final student, measured in LiteRT beside its ONNX file."""
        cfg = ctx.cfg
        model = architectures.reparameterize(load_model(ctx.run.path(checkpoint_path(source_name)))[0])
        split = ctx.data.report_split
        report = (ctx.data.inputs(split, cfg.data).numpy(), ctx.data.split(split).labels.numpy())
        decision = choose_tflite(model, {n: ctx.run.path(rel) for n, rel in TFLITE_FILES.items()}, source,
                                 cfg.data.crop, cfg.data.mean, cfg.data.std, trial.calibration,
                                 (trial.val, trial.labels), report, cfg.bench, budget)
        shipped = decision["candidates"][decision["chosen"]]
        ctx.log(f"litert: chose {decision['chosen']} .tflite ({decision['reason']}); top-1 agreement with "
                f"{source.name} {shipped['agreement_with_onnx']:.1%} on {shipped['images']} {split} images")
        for name, c in decision["candidates"].items():
            if c["agreement_with_onnx"] < MIN_TFLITE_AGREEMENT:
                ctx.warn(f"the {name} .tflite agrees with {source.name} on only {c['agreement_with_onnx']:.1%} of "
                         f"{c['images']} {split} images (required {MIN_TFLITE_AGREEMENT:.0%})")
        return {**decision, "file": TFLITE_FILES[decision["chosen"]]}

    @staticmethod
    def _report(ctx: Context, winner: str, keep: str, reason: str, source_name: str, chosen_ops: list,
                agreement: float) -> None:
        q, target = ctx.cfg.quantize, ctx.cfg.deploy.target
        ctx.log(f"int8: chose {winner} ({reason})")
        if chosen_ops and target != "onnxruntime":
            ctx.warn(f"quantize.format = {keep} needs {', '.join(chosen_ops)} operators: the int8 file loads only in "
                     "ONNX Runtime (deploy.target = portable asks for standard ONNX operators)")
        if winner == "fp32":
            ctx.warn(f"no int8 layout was faster than fp32 on this CPU within the accuracy budget; "
                     f"the deployable model is {source_name} ({reason})")
        if agreement < q.min_agreement:
            ctx.warn(f"int8 student ({keep}) agrees with its fp32 source on only {agreement:.1%} of val images "
                     f"(required {q.min_agreement:.0%})")
