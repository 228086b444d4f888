"""Stage `choice` (a search): the deployable chosen among every measured point by one stated rule
(deploy.objective, compress.methods.pareto), on val accuracy and the batch-1 p50 of the target
runtime; the figures people read are the test split's. Writes report.json (every point, the
front, the rule, the chosen point also under the stable name `deployable`) and report.md.
A budget nothing meets is reported, and nothing is chosen as if it had been met."""
from __future__ import annotations

import json
from pathlib import Path

from compress.core.config import Config, get_key
from compress.core.documents import Report
from compress.core.errors import CompressError
from compress.core.roster import EXPORT_INFO, MEASURED, POINTS, REPORT_JSON, REPORT_MD, STUDENT, TEACHER, student_folder
from compress.core.stage import Context, Stage
from compress.measure.runtimes import warnings as runtime_warnings
from compress.measure.suite import GATED_SETTINGS
from compress.methods.pareto import Point, choose, front
from compress.reporting.report import markdown_report
from compress.stages.benchmark import ORIGIN_KEYS, dataset_info, origins

DEPLOYABLE = "deployable"  # the chosen point's figures again, under a name that does not change between runs


def runtime_name(target: str) -> str:
    return "OpenVINO" if target == "openvino" else "ONNX Runtime"


def target_p50(measured: dict, target: str) -> dict[str, float]:
    """Batch-1 p50 of every model on the target runtime: ONNX Runtime's interleaved timing, or
    OpenVINO's (a file it cannot load is infinitely slow there)."""
    if target == "openvino" and "openvino" in (measured.get("runtimes") or {}):
        models = measured["runtimes"]["openvino"]["models"]
        return {n: (m["latency_ms"]["p50"] if m.get("loads") else float("inf")) for n, m in models.items()}
    return {n: m["latency_ms"]["p50"] for n, m in measured["models"].items()}


def search_recipes(root: Path, archs: list[str]) -> dict[str, str]:
    """How the teacher and each student were trained, from the students' own export records (the
    same words a single run's report carries), keyed as the report's origins are."""
    recipes: dict[str, str] = {}
    for arch in archs:
        info = json.loads((root / student_folder(arch) / EXPORT_INFO).read_text())
        if info.get(TEACHER, {}).get("recipe"):
            recipes.setdefault(TEACHER, info[TEACHER]["recipe"])
        if info.get(STUDENT, {}).get("recipe"):
            recipes[student_folder(arch).split("/")[-1]] = info[STUDENT]["recipe"]
    return recipes


class ChoiceStage(Stage):
    name = "choice"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "deploy", "distill.archs", *ORIGIN_KEYS, *GATED_SETTINGS)

    def inputs(self, cfg: Config) -> list[str]:
        return [POINTS, MEASURED, *(f"{student_folder(a)}/{EXPORT_INFO}" for a in cfg.distill.archs)]

    def outputs(self, cfg: Config) -> list[str]:
        return [REPORT_JSON, REPORT_MD]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, run, d = ctx.cfg, ctx.run, ctx.cfg.deploy
        index, measured = run.read_json(POINTS), run.read_json(MEASURED)
        p50 = target_p50(measured, d.target)
        points = [Point(n, p["student"], p["steps"], p["fp32"], p["val_accuracy"], p50[n],
                        run.path(p["onnx"]).stat().st_size / 1e6, p.get("predicts_one_class"))
                  for n, p in index["points"].items()]
        on_front = front(points)
        pareto: dict = {"objective": d.objective, "runtime": runtime_name(d.target),
                        "budget": {"max_accuracy_drop": d.max_accuracy_drop, "max_latency_ms": d.max_latency_ms,
                                   "max_size_mb": d.max_size_mb},
                        "points": [dict(vars(p), vendor_ops=index["points"][p.name]["vendor_ops"], on_front=p in on_front)
                                   for p in points],
                        "front": [p.name for p in on_front]}
        warnings = list(index["left_out"])
        try:
            choice = choose(points, d.objective, d.max_accuracy_drop, d.max_latency_ms, d.max_size_mb)
            pareto.update(chosen=choice.chosen.name, runner_up=choice.runner_up.name if choice.runner_up else None,
                          rule=choice.rule, eligible=choice.eligible)
            measured["models"][DEPLOYABLE] = dict(measured["models"][choice.chosen.name])
            ctx.log(f"search: chose {choice.chosen.name} ({choice.rule})")
        except CompressError as exc:  # a budget nothing meets: measured and reported, nothing deployed
            pareto["refused"] = str(exc)
            warnings.append(str(exc))
        dataset = dataset_info(ctx.data)
        students = {student_folder(a).split("/")[-1]: origins(cfg, a)["student"] for a in cfg.distill.archs}
        recipes = search_recipes(run.root, cfg.distill.archs)
        report = Report.from_dict({
            **measured, "dataset": dataset, "settings": {k: get_key(cfg, k) for k in GATED_SETTINGS},
            "origins": {TEACHER: origins(cfg)[TEACHER], **students}, "recipes": recipes or None, "pareto": pareto,
            "warnings": warnings + dataset.copy_warnings() + runtime_warnings(measured.get("runtimes", {}))},
            "the search")
        run.write_json(REPORT_JSON, report.to_dict())
        run.write_text(REPORT_MD, markdown_report(report))
        return {"chosen": pareto.get("chosen"), "rule": pareto.get("rule"), "refused": pareto.get("refused")}
