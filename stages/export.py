"""Stage `export`: every fp32 model to ONNX with client metadata, onnx.checker and a parity
check against PyTorch on real val images; records params and MACs for the report."""
from __future__ import annotations

from compress.core.config import Config
from compress.core.roster import EXPORT_INFO, TEACHER, checkpoint_path, onnx_path, teacher_file, torch_models
from compress.core.stage import Context, Stage
from compress.exports.onnx import export_checkpoint, parity, read_metadata

ROSTER_KEYS = ("distill.baseline", "prune.enabled", "teacher.onnx")  # which models exist (compress.core.roster)


class ExportStage(Stage):
    name = "export"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "export", *ROSTER_KEYS)

    def inputs(self, cfg: Config) -> list[str]:
        given = [teacher_file(cfg)] if cfg.teacher.onnx else []  # already ONNX: recorded, not exported
        return [checkpoint_path(n) for n in torch_models(cfg)] + given

    def outputs(self, cfg: Config) -> list[str]:
        return [onnx_path(n) for n in torch_models(cfg)] + [EXPORT_INFO]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, data = ctx.cfg, ctx.data
        images = data.val_inputs(cfg.data)[:cfg.export.parity_samples]
        info: dict[str, dict] = {}
        if cfg.teacher.onnx:
            info[TEACHER] = {"arch": read_metadata(ctx.run.path(onnx_path(TEACHER)))["arch"], "params": None,
                             "macs": None, "parity_max_abs_diff": None, "pytorch_val_accuracy": None, "history": [],
                             "pruning": None, "source": cfg.teacher.onnx}
        for name in torch_models(cfg):
            with ctx.run.atomic(onnx_path(name)) as tmp:
                done = export_checkpoint(ctx.run.path(checkpoint_path(name)), tmp, name, data.classes, cfg.data,
                                         cfg.export.opset)
                diff = parity(done.model, tmp, images, cfg.export.parity_tolerance)
            meta = done.meta
            info[name] = {"arch": done.arch, "params": done.params, "macs": done.macs,
                          "parity_max_abs_diff": diff, "pytorch_val_accuracy": meta.get("val_accuracy"),
                          "history": meta.get("history", []), "pruning": meta.get("pruning")}
            ctx.log(f"export {name}: parity max |diff| {diff:.2e}")
        ctx.run.write_json(EXPORT_INFO, info)
        return {n: {"parity_max_abs_diff": v["parity_max_abs_diff"]} for n, v in info.items() if n != TEACHER
                or not cfg.teacher.onnx}
