"""Stage `package`: the deployable model as an edge team receives it, in `deploy/`:
model.onnx, model_with_preprocessing.onnx (uint8 pixels in, the documented preprocessing inside
the graph; its agreement with the recipe is measured here), model.ort +
model.required_operators.config (ORT format for mobile/minimal builds), the phone files
(model_mobile.onnx for NNAPI, model_ios.onnx for Core ML when deploy.target = coreml) with
accelerators.json (each file's coverage by ONNX Runtime's mobile checker), labels.txt and
model_card.md. Which model is deployable was decided by measurement in the
quantize stage (int8 when it is faster within the accuracy budget, else the fp32 student)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from compress.core.budget import selection_accuracy
from compress.core.config import Config, section_names
from compress.core.data import calibration_batch, raw_rgb
from compress.core.documents import QuantizeDecision, Report
from compress.core.errors import CompressError
from compress.core.provenance import git_commit
from compress.core.roster import (
    DEPLOY_ACCELERATORS,
    DEPLOY_CARD,
    DEPLOY_IOS,
    DEPLOY_LABELS,
    DEPLOY_MOBILE,
    DEPLOY_ONNX,
    DEPLOY_OPENVINO,
    DEPLOY_OPS,
    DEPLOY_ORT,
    DEPLOY_PTE,
    DEPLOY_TFLITE,
    DEPLOY_WITH_PREPROCESSING,
    EXPORT_INFO,
    POINTS,
    PRUNED,
    QUANTIZE_INFO,
    REPORT_JSON,
    STUDENT,
    TEACHER,
    all_models,
    deployable,
    onnx_path,
    student_folder,
)
from compress.core.rundir import sha256_json
from compress.core.stage import Context, Stage
from compress.exports.deploy_folder import package_onnx
from compress.exports.mobile import android_file, fixed_shape_copy, is_quantized
from compress.exports.model_card import CardFacts, VsStudent, render
from compress.exports.onnx import read_metadata
from compress.exports.ort_format import convert_to_ort
from compress.exports.session import cpu_session, run_logits
from compress.measure.accelerators import advice, coverage
from compress.methods.student import describe_loss

AGREEMENT_IMAGES = 64  # report-split images on which the in-graph preprocessing is checked


class PackageStage(Stage):
    name = "package"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("device", *section_names())  # the model card states the whole config

    def inputs(self, cfg: Config) -> list[str]:
        if cfg.distill.archs:  # a search: the report names the chosen point, the index its file
            return [REPORT_JSON, POINTS]
        return ([REPORT_JSON, EXPORT_INFO] + [onnx_path(n) for n in all_models(cfg)]
                + ([QUANTIZE_INFO] if cfg.quantize.enabled else []))

    def outputs(self, cfg: Config) -> list[str]:
        return ([DEPLOY_ONNX, DEPLOY_WITH_PREPROCESSING, DEPLOY_LABELS, DEPLOY_CARD]
                + ([DEPLOY_ORT, DEPLOY_OPS] if cfg.export.ort else [])
                + ([DEPLOY_MOBILE, DEPLOY_ACCELERATORS] if cfg.export.mobile else [])
                + ([DEPLOY_IOS] if cfg.export.mobile and cfg.deploy.target == "coreml" else [])
                + (list(DEPLOY_OPENVINO) if cfg.deploy.target == "openvino" else [])
                + ([DEPLOY_PTE] if cfg.deploy.target == "executorch" else [])
                + ([DEPLOY_TFLITE] if cfg.deploy.target == "litert" else []))

    def run(self, ctx: Context, key: str) -> dict:
        cfg, run = ctx.cfg, ctx.run
        report = Report.read(run.path(REPORT_JSON))
        made = self._search_choice(ctx, report) if cfg.distill.archs else self._run_choice(ctx)
        one = report.models[made.name].predicts_one_class
        if one is not None and not cfg.deploy.allow_degenerate:
            raise CompressError(f"the deployable {made.name} predicts {one!r} for every {report.figures_from} image "
                                f"(degenerate); nothing was written to deploy/ (report.md has its figures): train "
                                f"longer or at a lower learning rate, or set deploy.allow_degenerate = true to ship it")
        split = ctx.data.split(ctx.data.report_split)
        in_graph = package_onnx(made.source, run.root, [raw_rgb(src) for src in split.sources[:AGREEMENT_IMAGES]],
                                None if cfg.export.dynamic_batch else cfg.export.batch_size,
                                cfg.deploy.target == "openvino", ctx.warn)
        phones = self._phone_files(ctx, made) if cfg.export.mobile else None
        if cfg.export.ort:  # ONNX Runtime Mobile's format, from the file its accelerators take whole
            with run.atomic(DEPLOY_ORT) as tmp_ort, run.atomic(DEPLOY_OPS) as tmp_ops:
                convert_to_ort(run.path(DEPLOY_MOBILE if phones else DEPLOY_ONNX), tmp_ort, tmp_ops)
        decision = made.decision
        if cfg.deploy.target == "executorch" and decision and decision.executorch:  # fastest within the budget
            with run.atomic(DEPLOY_PTE) as tmp:
                shutil.copyfile(run.path(decision.executorch.file), tmp)
        if cfg.deploy.target == "litert" and decision and decision.litert:  # fastest within the budget, in LiteRT
            with run.atomic(DEPLOY_TFLITE) as tmp:
                shutil.copyfile(run.path(decision.litert.file), tmp)
        vs_student = self._vs_student(ctx, report, made)
        teacher = {"arch": made.info[TEACHER]["arch"], "val_accuracy": report.models[TEACHER].accuracy,
                   "source": (report.origins or {}).get(TEACHER, "")}
        card = render(CardFacts(name=made.name, onnx_file=run.path(DEPLOY_ONNX),
                                ort_file=DEPLOY_ORT if cfg.export.ort else None, metadata=read_metadata(made.source),
                                report=report, config=made.config, config_hash=sha256_json(made.config)[:16],
                                teacher=teacher, student_loss=describe_loss(cfg.distill), git_commit=git_commit(),
                                pruning=(made.info.get(PRUNED) or {}).get("pruning") if made.pruned else None,
                                in_graph=in_graph, choice=made.choice, vs_student=vs_student, phones=phones,
                                student=read_metadata(made.source).get("arch", made.name)))
        run.write_text(DEPLOY_CARD, card)
        ctx.log(f"package: {made.name} -> deploy/ ({', '.join(p.split('/')[-1] for p in self.outputs(cfg))})")
        return {"deployable": made.name, "files": self.outputs(cfg), "preprocessing_in_graph": in_graph}

    @staticmethod
    def _phone_files(ctx: Context, made: Made) -> dict:
        """model_mobile.onnx (and model_ios.onnx for deploy.target = coreml), each checked against
        model.onnx on val, and every deploy/ file's NNAPI and Core ML coverage in accelerators.json."""
        cfg, run = ctx.cfg, ctx.run
        val = ctx.data.val_inputs(cfg.data).numpy()[:AGREEMENT_IMAGES]
        quantized = is_quantized(made.source)
        calibration = (calibration_batch(ctx.data, cfg.data, cfg.quantize.calibration_samples, cfg.seed).numpy()
                       if quantized else None)
        files: dict[str, dict] = {DEPLOY_ONNX: {"what": "the deployable as measured (dynamic batch)"
                                                if cfg.export.dynamic_batch else "the deployable as measured"}}
        with run.atomic(DEPLOY_MOBILE) as tmp:
            files[DEPLOY_MOBILE] = {"what": android_file(made.fp32_source if quantized else made.source, tmp,
                                                         calibration, cfg.quantize), "for": "Android (NNAPI)"}
        if cfg.deploy.target == "coreml":
            with run.atomic(DEPLOY_IOS) as tmp:
                fixed_shape_copy(made.fp32_source, tmp)
            files[DEPLOY_IOS] = {"what": "fp32, batch 1, fixed shapes", "for": "iOS (Core ML)"}
        reference = run_logits(cpu_session(run.path(DEPLOY_ONNX), cfg.bench.threads), val).argmax(1)
        found = {}
        for rel, entry in files.items():
            if rel != DEPLOY_ONNX:
                top1 = run_logits(cpu_session(run.path(rel), cfg.bench.threads), val, batch_size=1).argmax(1)
                entry["top1_agreement_with_model_onnx"] = float((top1 == reference).mean())
                entry["images"] = len(val)
                if entry["top1_agreement_with_model_onnx"] < 0.99:
                    ctx.warn(f"{rel} agrees with model.onnx on only {entry['top1_agreement_with_model_onnx']:.1%} "
                             f"of {len(val)} val images")
            found[rel] = coverage(run.path(rel))
            entry["coverage"] = [c.to_dict() for c in found[rel]]
        words = advice({rel.split("/")[-1]: cs for rel, cs in found.items()})
        run.write_json(DEPLOY_ACCELERATORS, {"files": files, "advice": words})
        for rel, cs in found.items():
            ctx.log(f"package: {rel.split('/')[-1]}: " + "; ".join(c.words() for c in cs))
        return {"files": files, "advice": words}

    @staticmethod
    def _vs_student(ctx: Context, report: Report, made: Made) -> VsStudent | None:
        """The deployable against the unpruned fp32 student on val, so the card states what pruning
        and int8 cost in the budget's terms: a search's points carry it; a single run's two files
        are run on val here."""
        cfg, run = ctx.cfg, ctx.run
        budget = cfg.deploy.max_accuracy_drop
        if report.pareto:  # every point's val accuracy was measured by the points stage: nothing to rerun
            students = [p for p in report.pareto.points if p.fp32 and p.steps == 0 and p.predicts_one_class is None]
            if not students:
                return None
            best, chosen = max(students, key=lambda p: p.accuracy), report.pareto.point(made.name)
            if best.name == made.name:
                return None
            return VsStudent(best.name, 100 * (chosen.accuracy - best.accuracy),
                             100 * (report.models[made.name].accuracy - report.models[best.name].accuracy), budget)
        name = STUDENT
        if name == made.name:
            return None
        val, labels = ctx.data.val_inputs(cfg.data).numpy(), ctx.data.val.labels.numpy()

        def val_accuracy(path: Path) -> float:
            return selection_accuracy(run_logits(cpu_session(path, cfg.bench.threads), val).argmax(1), labels,
                                      cfg.bench.metric)

        student_file = run.path(report.models[name].onnx)
        return VsStudent(name, 100 * (val_accuracy(made.source) - val_accuracy(student_file)),
                         100 * (report.models[made.name].accuracy - report.models[name].accuracy), budget)

    @staticmethod
    def _run_choice(ctx: Context) -> Made:
        """A single run: the quantize stage's decision names the deployable."""
        cfg, run = ctx.cfg, ctx.run
        decision = QuantizeDecision.read(run.path(QUANTIZE_INFO)) if cfg.quantize.enabled else None
        name = deployable(cfg, decision)
        source = decision.source if decision and decision.source else name
        return Made(name, run.path(onnx_path(name)), run.read_json(EXPORT_INFO), cfg.to_dict(),
                    pruned=cfg.prune.enabled, decision=decision, fp32_source=run.path(onnx_path(source)))

    @staticmethod
    def _search_choice(ctx: Context, report: Report) -> Made:
        """A search: the rule's choice (report.json `pareto`), from its student's run directory."""
        cfg, run = ctx.cfg, ctx.run
        pareto = report.pareto
        assert pareto and pareto.chosen, "the search packages only a chosen point"
        chosen = pareto.point(pareto.chosen)
        runner_up = pareto.point(pareto.runner_up) if pareto.runner_up else None
        choice = {"rule": f"deploy.objective = {pareto.objective}: {pareto.rule}", "chosen": chosen.name,
                  "runner_up": runner_up.name if runner_up else None}
        if runner_up:
            choice["runner_up_cost"] = (f"{runner_up.p50_ms - chosen.p50_ms:+.2f} ms, "
                                        f"{100 * (runner_up.accuracy - chosen.accuracy):+.2f} val points, "
                                        f"{runner_up.megabytes - chosen.megabytes:+.2f} MB")
        config = cfg.to_dict()  # the chosen student's own configuration: as its single run would state it
        config["distill"] = dict(config["distill"], arch=chosen.student, archs=[])
        info = run.read_json(f"{student_folder(chosen.student)}/{EXPORT_INFO}")
        indexed = run.read_json(POINTS)["points"]
        source = indexed[chosen.name].get("source") or chosen.name  # an int8 point's fp32 point
        return Made(chosen.name, run.path(report.models[chosen.name].onnx), info, config,
                    pruned=chosen.steps > (0 if chosen.fp32 else 1), choice=choice,
                    fp32_source=run.path(indexed[source]["onnx"]))


@dataclass
class Made:
    """What ships and how it was made: its name and file, the export record of its student's run,
    the configuration that made it, whether it was pruned, and how it was chosen."""

    name: str
    source: Path
    info: dict
    config: dict
    pruned: bool
    fp32_source: Path  # the fp32 file an int8 deployable was quantized from (itself when fp32)
    decision: QuantizeDecision | None = None
    choice: dict | None = None
