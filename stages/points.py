"""Stage `points` (a search): every model the search can ship, from the students' run directories.

A point is a student, each of its prune rounds, the pruned student that ships, and each static
int8 layout of those (the layouts deploy.target can ship). The fp32 files were exported and
checked against PyTorch by each student's export stage; here each is quantized with the quantize
stage's own recipe (calibrated on the same training images), every file is run once in ONNX
Runtime (a layout it cannot run is left out, with a warning), and every point's val accuracy, what
the choice reads, is measured. points/points.json lists them with their digests.
"""
from __future__ import annotations

from pathlib import Path

from compress.core.budget import degenerate_warning, selection_accuracy, single_class
from compress.core.config import Config
from compress.core.data import calibration_batch
from compress.core.errors import summary
from compress.core.roster import (
    BASELINE,
    POINTS,
    PRUNED,
    ROUND_EXPORTS,
    STUDENT,
    TEACHER,
    onnx_path,
    prune_rounds,
    student_folder,
)
from compress.core.stage import Context, Stage
from compress.exports.operators import vendor_domains
from compress.exports.quantize import build_candidate, preprocessed
from compress.exports.session import cpu_session, run_logits
from compress.methods.int8_search import shippable_layouts

SEARCH_KEYS = ("distill.archs", "distill.baseline", "prune.enabled", "prune.target", "teacher.onnx")


def fp32_points(cfg: Config, run: Path) -> dict[str, dict]:
    """name -> {student, steps, onnx (relative to the search folder), source (the point it was made
    from)} of every fp32 point."""
    points = {}
    for arch in cfg.distill.archs:
        folder = student_folder(arch)
        name = folder.split("/")[-1]
        points[name] = {"student": arch, "steps": 0, "onnx": f"{folder}/{onnx_path(STUDENT)}"}
        if not cfg.prune.enabled:
            continue
        shipped = 1
        if prune_rounds(cfg):
            index = _read(run / folder / ROUND_EXPORTS)
            for r in index["rounds"]:
                points[f"{name}_pruned_r{r['round']}"] = {"student": arch, "steps": r["round"],
                                                          "onnx": f"{folder}/{r['onnx']}", "source": name}
            shipped = index["shipped_round"]
        points[f"{name}_pruned"] = {"student": arch, "steps": shipped, "onnx": f"{folder}/{onnx_path(PRUNED)}",
                                    "source": name}
    return points


def _read(path: Path) -> dict:
    import json
    return json.loads(path.read_text())


class PointsStage(Stage):
    name = "points"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "quantize", "bench.threads", "bench.metric", "deploy.target", *SEARCH_KEYS)

    def inputs(self, cfg: Config) -> list[str]:
        files = [f"{student_folder(cfg.distill.archs[0])}/{onnx_path(TEACHER)}"]
        for arch in cfg.distill.archs:
            folder = student_folder(arch)
            files.append(f"{folder}/{onnx_path(STUDENT)}")
            files += [f"{folder}/{onnx_path(BASELINE)}"] if cfg.distill.baseline else []
            files += [f"{folder}/{onnx_path(PRUNED)}"] if cfg.prune.enabled else []
            files += [f"{folder}/{ROUND_EXPORTS}"] if prune_rounds(cfg) else []  # lists each round's digest
        return files

    def outputs(self, cfg: Config) -> list[str]:
        return [POINTS]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, run = ctx.cfg, ctx.run
        val, labels = ctx.data.val_inputs(cfg.data).numpy(), ctx.data.val.labels.numpy()
        calibration = calibration_batch(ctx.data, cfg.data, cfg.quantize.calibration_samples, cfg.seed).numpy()
        points = fp32_points(cfg, run.root)
        for info in points.values():
            info["fp32"] = True
        layouts = shippable_layouts(list(cfg.quantize.candidates), cfg.deploy.target) if cfg.quantize.enabled else []
        for name, info in list(points.items()):
            with preprocessed(run.path(info["onnx"])) as prepped:
                for layout in layouts:
                    rel = f"points/{name}_{layout}.onnx"
                    try:
                        with run.atomic(rel) as tmp:
                            build_candidate(run.path(info["onnx"]), tmp, calibration, cfg.quantize, layout, prepped)
                            run_logits(cpu_session(tmp), calibration[:1])
                    except Exception as exc:  # a layout ONNX Runtime cannot build or run for this model: not a point
                        ctx.warn(f"{name}_{layout} left out: ONNX Runtime could not build or run it "
                                 f"({summary(exc, 100)})")
                        continue
                    points[f"{name}_{layout}"] = {"student": info["student"], "steps": info["steps"] + 1,
                                                  "onnx": rel, "fp32": False, "source": name}
        for info in points.values():
            predicted = run_logits(cpu_session(run.path(info["onnx"]), cfg.bench.threads), val).argmax(1)
            one = single_class(predicted, len(ctx.data.classes))
            info.update(val_accuracy=selection_accuracy(predicted, labels, cfg.bench.metric),
                        sha256=run.sha256(info["onnx"]), vendor_ops=vendor_domains(run.path(info["onnx"])),
                        predicts_one_class=None if one is None else ctx.data.classes[one])
        for name, info in points.items():
            if info["predicts_one_class"] is not None:
                ctx.warn(degenerate_warning(name, info["predicts_one_class"], "val", info["val_accuracy"])
                         + "; it is never chosen")
        teacher = f"{student_folder(cfg.distill.archs[0])}/{onnx_path(TEACHER)}"
        baselines = {f"{student_folder(a).split('/')[-1]}_{BASELINE}": f"{student_folder(a)}/{onnx_path(BASELINE)}"
                     for a in cfg.distill.archs} if cfg.distill.baseline else {}
        run.write_json(POINTS, {"teacher": teacher, "points": points, "baselines": baselines,
                                "left_out": list(ctx.warnings)})
        ctx.log(f"points: {len(points)} ({sum(p['fp32'] for p in points.values())} fp32, "
                f"{sum(not p['fp32'] for p in points.values())} int8)")
        return {"points": len(points), "left_out": len(ctx.warnings)}
