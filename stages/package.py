"""Stage `package`: the deployable model as an edge team receives it, in `deploy/`:
model.onnx, model.ort + model.required_operators.config (ORT format for mobile/minimal builds),
labels.txt and model_card.md. Which model is deployable was decided by measurement in the
quantize stage (int8 when it is faster within the accuracy budget, else the fp32 student)."""
from __future__ import annotations

import json
import shutil

from exports.model_card import render
from exports.onnx import fix_batch, read_metadata
from exports.ort_format import convert_to_ort
from pipeline.config import Config
from pipeline.rundir import EXPORT_INFO, QUANTIZE_INFO, REPORT_JSON, onnx_path, sha256_json
from pipeline.stage import Context, Stage
from stages.benchmark import benchmarked_models
from stages.report import deployable

DEPLOY_ONNX, DEPLOY_ORT, DEPLOY_OPS = "deploy/model.onnx", "deploy/model.ort", "deploy/model.required_operators.config"
LABELS, MODEL_CARD = "deploy/labels.txt", "deploy/model_card.md"


class PackageStage(Stage):
    name = "package"
    sections = ("data", "export")

    def inputs(self, cfg: Config) -> list[str]:
        return ([REPORT_JSON, EXPORT_INFO] + [onnx_path(n) for n in benchmarked_models(cfg)]
                + ([QUANTIZE_INFO] if cfg.quantize.enabled else []))

    def outputs(self, cfg: Config) -> list[str]:
        return [DEPLOY_ONNX, LABELS, MODEL_CARD] + ([DEPLOY_ORT, DEPLOY_OPS] if cfg.export.ort else [])

    def run(self, ctx: Context, key: str) -> dict:
        from pipeline.runner import git_commit
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
        run.write_text(LABELS, "\n".join(labels) + "\n")
        if cfg.export.ort:
            with run.atomic(DEPLOY_ORT) as tmp_ort, run.atomic(DEPLOY_OPS) as tmp_ops:
                convert_to_ort(deploy, tmp_ort, tmp_ops)
        report, info = run.read_json(REPORT_JSON), run.read_json(EXPORT_INFO)
        student = run.load_manifest().get("stages", {}).get("student", {}).get("summary", {})
        teacher = {"arch": info["teacher"]["arch"], "val_accuracy": report["models"]["teacher"]["accuracy"],
                   "source": "through ONNX Runtime"}
        card = render(name=name, onnx_file=deploy, ort_file=DEPLOY_ORT if cfg.export.ort else None,
                      metadata=metadata, report=report, config=cfg.to_dict(),
                      config_hash=sha256_json(cfg.to_dict())[:16], teacher=teacher,
                      student_loss=student.get("loss", cfg.distill.loss), git_commit=git_commit(),
                      pruning=(info.get("student_pruned") or {}).get("pruning"))
        run.write_text(MODEL_CARD, card)
        ctx.log(f"package: {name} -> deploy/ ({', '.join(p.split('/')[-1] for p in self.outputs(cfg))})")
        return {"deployable": name, "files": self.outputs(cfg)}
