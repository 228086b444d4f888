"""A search: several students (`distill.arch` as a list), each through the pipeline's own stages,
then every point measured in one interleaved session and the deployable chosen by one stated rule
(deploy.objective). There is no second pipeline: every folder below is an ordinary run directory
whose stages are cached, keyed and resumed by the runner.

    <out>/teacher/              the teacher stage, once
    <out>/students/<student>/   distill, baseline, prune and export (parity on every model and
                                every prune round), as a single run runs them
    <out>/                      the search's own stages: points (the int8 layouts of every fp32
                                point, val accuracy), point_timing (every point on the target
                                runtime, one session), choice (the rule; report.json with
                                `pareto`), then the single run's package and report stages

The teacher, the decoded data and cached teacher logits are shared; the choice reads val, the
figures are on test.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from compress.core import faults
from compress.core.auto_settings import resolve
from compress.core.config import Config
from compress.core.documents import Report
from compress.core.lock import RunLock, remove_debris
from compress.core.roster import DEPLOY_CARD, MANIFEST, REPORT_JSON, student_folder, teacher_file
from compress.core.rundir import RunDir
from compress.pipeline.runner import check_writable, preflight, run_pipeline
from compress.pipeline.sweep import adopt_teacher
from compress.stages.baseline import BaselineStage
from compress.stages.choice import ChoiceStage
from compress.stages.distill import DistillStage
from compress.stages.export import ExportStage
from compress.stages.package import PackageStage
from compress.stages.point_timing import PointTimingStage
from compress.stages.points import PointsStage
from compress.stages.prune import PruneStage
from compress.stages.report import ReportStage
from compress.stages.teacher import TeacherStage

log = logging.getLogger("compress")

STUDENT_STAGES = (DistillStage(), BaselineStage(), PruneStage(), ExportStage())
SEARCH_STAGES = (PointsStage(), PointTimingStage(), ChoiceStage())


def student_config(cfg: Config, arch: str) -> Config:
    return cfg.replace({"distill.arch": arch, "distill.archs": []})


def run_search(cfg: Config, out: str | Path, quiet: bool = False) -> dict:
    """Train what is missing, measure every point, choose, report and package; returns the manifest."""
    t0, out = time.perf_counter(), Path(out)
    cfg, notes = resolve(cfg)
    students = list(dict.fromkeys(cfg.distill.archs))
    for note in notes:
        log.info(note)
    check_writable(out)
    data = preflight(student_config(cfg, students[0]))  # the data, the teacher, the first student
    for arch in students[1:]:
        preflight(student_config(cfg, arch), data, STUDENT_STAGES)  # every student is checked before any work
    seconds: dict[str, float] = {}
    executed: list[str] = []
    with RunLock(out):
        remove_debris(out)
        cache = out / "cache"
        start = time.perf_counter()
        ran = run_pipeline(student_config(cfg, students[0]).replace({"distill.baseline": False}), out / "teacher",
                           quiet, (TeacherStage(),), data, cache)
        executed += [f"teacher/{s}" for s in ran["executed"]]
        seconds["teacher"] = round(time.perf_counter() - start, 1)
        for arch in students:
            start, folder = time.perf_counter(), out / student_folder(arch)
            faults.reach("search.student", folder=folder)
            adopt_teacher(folder, out / "teacher", teacher_file(cfg))
            ran = run_pipeline(student_config(cfg, arch), folder, quiet, STUDENT_STAGES, data, cache)
            executed += [f"{student_folder(arch)}/{s}" for s in ran["executed"]]
            seconds[folder.name] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        ran = run_pipeline(cfg, out, quiet, SEARCH_STAGES, data, cache, lock=False)
        executed += ran["executed"]
        seconds["points (int8, timing, choice)"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        report = Report.read(out / REPORT_JSON)
        chosen = report.pareto.chosen if report.pareto else None
        if not chosen:  # a budget nothing met: no deploy/ folder that looks like it had been met
            shutil.rmtree(out / "deploy", ignore_errors=True)
        ran = run_pipeline(cfg, out, quiet, (PackageStage(), ReportStage()) if chosen else (ReportStage(),),
                           data, cache, lock=False)
        executed += ran["executed"]
        seconds["report and deploy"] = round(time.perf_counter() - start, 1)
        manifest = RunDir(out).load_manifest()
        manifest.update(students=students, seconds=seconds, executed=executed,
                        seconds_total_this_invocation=round(time.perf_counter() - t0, 1),
                        choice={"objective": cfg.deploy.objective, "chosen": chosen,
                                "rule": report.pareto.rule if report.pareto else None,
                                "refused": report.pareto.refused if report.pareto else None})
        RunDir(out).write_json(MANIFEST, manifest)
        if chosen:
            assert (out / DEPLOY_CARD).is_file()
    return manifest
