"""Stage `export`: every fp32 model to ONNX with client metadata, onnx.checker and a parity
check against PyTorch on real val images; records params and MACs for the report. With
prune.target = accuracy every prune round is exported and checked the same way (each is a point
a search can choose), listed in onnx/prune_rounds.json."""
from __future__ import annotations

from compress.core.config import Config
from compress.core.roster import (
    EXPORT_INFO,
    PRUNE_ROUNDS,
    ROUND_EXPORTS,
    TEACHER,
    checkpoint_path,
    onnx_path,
    prune_rounds,
    round_name,
    teacher_file,
    torch_models,
)
from compress.core.stage import Context, Stage
from compress.exports.onnx import export_checkpoint, parity, read_metadata

ROSTER_KEYS = ("distill.baseline", "prune.enabled", "prune.target", "teacher.onnx")  # which models exist (core.roster)


class ExportStage(Stage):
    name = "export"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "export", *ROSTER_KEYS)

    def inputs(self, cfg: Config) -> list[str]:
        given = [teacher_file(cfg)] if cfg.teacher.onnx else []  # already ONNX: recorded, not exported
        return [checkpoint_path(n) for n in torch_models(cfg)] + given + ([PRUNE_ROUNDS] if prune_rounds(cfg) else [])

    def outputs(self, cfg: Config) -> list[str]:
        return [onnx_path(n) for n in torch_models(cfg)] + [EXPORT_INFO] + ([ROUND_EXPORTS] if prune_rounds(cfg) else [])

    def run(self, ctx: Context, key: str) -> dict:
        cfg, data = ctx.cfg, ctx.data
        images = data.val_inputs(cfg.data)[:cfg.export.parity_samples]
        info: dict[str, dict] = {}
        if cfg.teacher.onnx:
            info[TEACHER] = {"arch": read_metadata(ctx.run.path(onnx_path(TEACHER)))["arch"], "params": None,
                             "macs": None, "parity_max_abs_diff": None, "pytorch_val_accuracy": None, "history": [],
                             "pruning": None, "source": cfg.teacher.onnx}
        for name in torch_models(cfg):
            info[name] = self._export(ctx, checkpoint_path(name), name, images)
        ctx.run.write_json(EXPORT_INFO, info)
        if prune_rounds(cfg):
            index = ctx.run.read_json(PRUNE_ROUNDS)
            rounds = []
            for r in index["rounds"]:
                done = self._export(ctx, r["checkpoint"], round_name(r["round"]), images)
                rel = onnx_path(round_name(r["round"]))
                rounds.append({"round": r["round"], "onnx": rel, "sha256": ctx.run.sha256(rel),
                               "val_accuracy": r["val_accuracy"], **{k: done[k] for k in ("params", "macs",
                                                                                           "parity_max_abs_diff")}})
            ctx.run.write_json(ROUND_EXPORTS, {"rounds": rounds, "shipped_round": index["shipped_round"]})
        return {n: {"parity_max_abs_diff": v["parity_max_abs_diff"]} for n, v in info.items() if n != TEACHER
                or not cfg.teacher.onnx}

    @staticmethod
    def _export(ctx: Context, checkpoint: str, name: str, images) -> dict:
        """One checkpoint to onnx/<name>.onnx, checked against PyTorch; what models.json records of it."""
        cfg = ctx.cfg
        with ctx.run.atomic(onnx_path(name)) as tmp:
            done = export_checkpoint(ctx.run.path(checkpoint), tmp, name, ctx.data.classes, cfg.data, cfg.export.opset)
            diff = parity(done.model, tmp, images, cfg.export.parity_tolerance)
        ctx.log(f"export {name}: parity max |diff| {diff:.2e}")
        meta = done.meta
        return {"arch": done.arch, "params": done.params, "macs": done.macs, "parity_max_abs_diff": diff,
                "pytorch_val_accuracy": meta.get("val_accuracy"), "history": meta.get("history", []),
                "pruning": meta.get("pruning"), "recipe": meta.get("recipe")}
