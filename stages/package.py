"""Stage `package`: the deployable model as an edge team receives it, in `deploy/`:
model.onnx, model.ort + model.required_operators.config (ORT format for mobile/minimal builds),
labels.txt and model_card.md. Which model is deployable was decided by measurement in the
quantize stage (int8 when it is faster within the accuracy budget, else the fp32 student)."""
from __future__ import annotations

import json
import shutil

from compress.core.config import Config, section_names
from compress.core.provenance import git_commit
from compress.core.roster import (
    DEPLOY_CARD,
    DEPLOY_LABELS,
    DEPLOY_ONNX,
    DEPLOY_OPS,
    DEPLOY_ORT,
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
from compress.exports.model_card import CardFacts, render
from compress.exports.onnx import fix_batch, read_metadata
from compress.exports.ort_format import convert_to_ort
from compress.stages.student_recipe import describe_loss


class PackageStage(Stage):
    name = "package"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("device", *section_names())  # the model card states the whole config

    def inputs(self, cfg: Config) -> list[str]:
        return ([REPORT_JSON, EXPORT_INFO] + [onnx_path(n) for n in all_models(cfg)]
                + ([QUANTIZE_INFO] if cfg.quantize.enabled else []))

    def outputs(self, cfg: Config) -> list[str]:
        return [DEPLOY_ONNX, DEPLOY_LABELS, DEPLOY_CARD] + ([DEPLOY_ORT, DEPLOY_OPS] if cfg.export.ort else [])

    def run(self, ctx: Context, key: str) -> dict:
        cfg, run = ctx.cfg, ctx.run
        name = deployable(cfg, run)
        source = run.path(onnx_path(name))
        with run.atomic(DEPLOY_ONNX) as tmp:
            shutil.copyfile(source, tmp)
            if not cfg.export.dynamic_batch:
                fix_batch(tmp, cfg.export.batch_size)
        deploy = run.path(DEPLOY_ONNX)
        metadata = read_metadata(source)
        labels = json.loads(metadata["labels"])
        run.write_text(DEPLOY_LABELS, "\n".join(labels) + "\n")
        if cfg.export.ort:
            with run.atomic(DEPLOY_ORT) as tmp_ort, run.atomic(DEPLOY_OPS) as tmp_ops:
                convert_to_ort(deploy, tmp_ort, tmp_ops)
        report, info = run.read_json(REPORT_JSON), run.read_json(EXPORT_INFO)
        teacher = {"arch": info[TEACHER]["arch"], "val_accuracy": report["models"][TEACHER]["accuracy"],
                   "source": "through ONNX Runtime"}
        card = render(CardFacts(name=name, onnx_file=deploy, ort_file=DEPLOY_ORT if cfg.export.ort else None,
                                metadata=metadata, report=report, config=cfg.to_dict(),
                                config_hash=sha256_json(cfg.to_dict())[:16], teacher=teacher,
                                student_loss=describe_loss(cfg), git_commit=git_commit(),
                                pruning=(info.get(PRUNED) or {}).get("pruning")))
        run.write_text(DEPLOY_CARD, card)
        ctx.log(f"package: {name} -> deploy/ ({', '.join(p.split('/')[-1] for p in self.outputs(cfg))})")
        return {"deployable": name, "files": self.outputs(cfg)}
