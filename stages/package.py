"""Stage `package`: the deployable model as an edge team receives it, in `deploy/`:
model.onnx, model_with_preprocessing.onnx (uint8 pixels in, the documented preprocessing inside
the graph; its agreement with the recipe is measured here), model.ort +
model.required_operators.config (ORT format for mobile/minimal builds), labels.txt and
model_card.md. Which model is deployable was decided by measurement in the
quantize stage (int8 when it is faster within the accuracy budget, else the fp32 student)."""
from __future__ import annotations

import shutil

from compress.core.config import Config, section_names
from compress.core.data import raw_rgb
from compress.core.documents import QuantizeDecision, Report
from compress.core.provenance import git_commit
from compress.core.roster import (
    DEPLOY_CARD,
    DEPLOY_LABELS,
    DEPLOY_ONNX,
    DEPLOY_OPENVINO,
    DEPLOY_OPS,
    DEPLOY_ORT,
    DEPLOY_PTE,
    DEPLOY_WITH_PREPROCESSING,
    EXPORT_INFO,
    PRUNED,
    QUANTIZE_INFO,
    REPORT_JSON,
    TEACHER,
    all_models,
    deployable,
    onnx_path,
)
from compress.core.rundir import sha256_json
from compress.core.stage import Context, Stage
from compress.exports.deploy_folder import package_onnx
from compress.exports.model_card import CardFacts, render
from compress.exports.onnx import read_metadata
from compress.methods.student import describe_loss

AGREEMENT_IMAGES = 64  # report-split images on which the in-graph preprocessing is checked


class PackageStage(Stage):
    name = "package"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("device", *section_names())  # the model card states the whole config

    def inputs(self, cfg: Config) -> list[str]:
        return ([REPORT_JSON, EXPORT_INFO] + [onnx_path(n) for n in all_models(cfg)]
                + ([QUANTIZE_INFO] if cfg.quantize.enabled else []))

    def outputs(self, cfg: Config) -> list[str]:
        return ([DEPLOY_ONNX, DEPLOY_WITH_PREPROCESSING, DEPLOY_LABELS, DEPLOY_CARD]
                + ([DEPLOY_ORT, DEPLOY_OPS] if cfg.export.ort else [])
                + (list(DEPLOY_OPENVINO) if cfg.deploy.target == "openvino" else [])
                + ([DEPLOY_PTE] if cfg.deploy.target == "executorch" else []))

    def run(self, ctx: Context, key: str) -> dict:
        cfg, run = ctx.cfg, ctx.run
        decision = QuantizeDecision.read(run.path(QUANTIZE_INFO)) if cfg.quantize.enabled else None
        name = deployable(cfg, decision)
        source = run.path(onnx_path(name))
        split = ctx.data.split(ctx.data.report_split)
        in_graph = package_onnx(source, run.root, [raw_rgb(src) for src in split.sources[:AGREEMENT_IMAGES]],
                                None if cfg.export.dynamic_batch else cfg.export.batch_size, cfg.export.ort,
                                cfg.deploy.target == "openvino", ctx.warn)
        deploy = run.path(DEPLOY_ONNX)
        metadata = read_metadata(source)
        if cfg.deploy.target == "executorch" and decision and decision.executorch:  # fastest within the budget
            with run.atomic(DEPLOY_PTE) as tmp:
                shutil.copyfile(run.path(decision.executorch.file), tmp)
        report, info = Report.read(run.path(REPORT_JSON)), run.read_json(EXPORT_INFO)
        teacher = {"arch": info[TEACHER]["arch"], "val_accuracy": report.models[TEACHER].accuracy,
                   "source": (report.origins or {}).get(TEACHER, "")}
        card = render(CardFacts(name=name, onnx_file=deploy, ort_file=DEPLOY_ORT if cfg.export.ort else None,
                                metadata=metadata, report=report, config=cfg.to_dict(),
                                config_hash=sha256_json(cfg.to_dict())[:16], teacher=teacher,
                                student_loss=describe_loss(cfg.distill), git_commit=git_commit(),
                                pruning=(info.get(PRUNED) or {}).get("pruning"), in_graph=in_graph))
        run.write_text(DEPLOY_CARD, card)
        ctx.log(f"package: {name} -> deploy/ ({', '.join(p.split('/')[-1] for p in self.outputs(cfg))})")
        return {"deployable": name, "files": self.outputs(cfg), "preprocessing_in_graph": in_graph}

