"""A search: several students (`distill.arch` as a list), each pruned in rounds with
`prune.target = accuracy`, every fp32 point with its int8 layouts, all measured on the target
runtime in one interleaved timing session, and the deployable chosen by one stated rule
(compress.methods.pareto).

    <out>/teacher/              the teacher, trained once (an ordinary run directory)
    <out>/students/<student>/   distill, CE baseline, prune: ordinary run directories (each resumes
                                on its own: a killed search reruns only what is missing)
    <out>/points/               every point as ONNX: <student>, <student>_pruned[_rK], and each of
                                them as <point>_<int8 layout>
    <out>/report.json|md|html   every point measured (models named after their student, the chosen
                                one also as `deployable`), the front and the rule (`pareto`)
    <out>/plots/pareto.png      val accuracy with its interval against p50, the front joined, the
                                chosen point starred
    <out>/deploy/               the chosen model, as a single run packages it

The teacher, the decoded data and cached teacher logits are shared; the choice reads val, the
figures are on test.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from compress.core.auto_settings import resolve
from compress.core.budget import selection_accuracy
from compress.core.config import Config
from compress.core.data import Dataset, calibration_batch, raw_rgb
from compress.core.documents import Report
from compress.core.errors import CompressError, summary
from compress.core.lock import RunLock, remove_debris
from compress.core.roster import (
    BASELINE,
    DEPLOY_CARD,
    DEPLOY_ORT,
    MANIFEST,
    PRUNE_ROUNDS,
    PRUNED,
    STUDENT,
    TEACHER,
    checkpoint_path,
    teacher_file,
)
from compress.core.rundir import RunDir, sha256_file, sha256_json
from compress.exports.deploy_folder import package_onnx
from compress.exports.model_card import CardFacts, render
from compress.exports.onnx import export_checkpoint, read_metadata
from compress.exports.operators import vendor_domains
from compress.exports.quantize import build_candidate, preprocessed
from compress.exports.session import cpu_session, run_logits
from compress.measure.suite import benchmark_onnx
from compress.methods.int8_search import REFERENCE_ONLY
from compress.methods.pareto import Point, choose, front
from compress.methods.student import describe_loss
from compress.pipeline.runner import check_writable, preflight, run_pipeline
from compress.pipeline.sweep import adopt_teacher
from compress.reporting.report import (
    Heading,
    Paragraph,
    Table,
    figure_html,
    html_page,
    report_blocks,
    to_html,
    to_markdown,
)
from compress.stages.baseline import BaselineStage
from compress.stages.benchmark import dataset_info, origins
from compress.stages.distill import DistillStage
from compress.stages.prune import PruneStage
from compress.stages.teacher import TeacherStage

log = logging.getLogger("compress")

STUDENT_STAGES = (DistillStage(), BaselineStage(), PruneStage())
AGREEMENT_IMAGES = 64


def folder_name(arch: str) -> str:
    """A student's name in a search: its architecture, file-system safe (timm:x -> timm_x)."""
    return arch.replace(":", "_").replace("/", "_")


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
    with RunLock(out):
        remove_debris(out)
        cache = out / "cache"
        start = time.perf_counter()
        run_pipeline(student_config(cfg, students[0]).replace({"distill.baseline": False}), out / "teacher", quiet,
                     (TeacherStage(),), data, cache)
        seconds["teacher"] = round(time.perf_counter() - start, 1)
        for arch in students:
            start, folder = time.perf_counter(), out / "students" / folder_name(arch)
            adopt_teacher(folder, out / "teacher", teacher_file(cfg))
            run_pipeline(student_config(cfg, arch), folder, quiet, STUDENT_STAGES, data, cache)
            seconds[folder_name(arch)] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        report, choice_info = measure_and_choose(cfg, out, students, data)
        seconds["points (export, int8, timing, choice)"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        write_report(report, out)
        chosen = report.pareto["chosen"] if report.pareto else None
        if chosen:
            package(cfg, out, report, data, chosen)
        else:  # a budget nothing met: no deploy/ folder that looks like it had been met
            shutil.rmtree(out / "deploy", ignore_errors=True)
        seconds["report and deploy"] = round(time.perf_counter() - start, 1)
        manifest = {"config": cfg.to_dict(), "resolved": notes, "students": students, "seconds": seconds,
                    "seconds_total_this_invocation": round(time.perf_counter() - t0, 1), "choice": choice_info,
                    "executed": ["search"]}
        RunDir(out).write_json(MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------- the points

def _fp32_points(cfg: Config, out: Path, students: list[str]) -> dict[str, tuple[str, int, Path]]:
    """name -> (student, steps from it, checkpoint) for every fp32 point."""
    points = {}
    for arch in students:
        folder, name = out / "students" / folder_name(arch), folder_name(arch)
        points[name] = (arch, 0, folder / checkpoint_path(STUDENT))
        if not cfg.prune.enabled:
            continue
        rounds, shipped = folder / PRUNE_ROUNDS, 1
        if rounds.is_file():
            index = json.loads(rounds.read_text())
            for r in index["rounds"]:
                points[f"{name}_pruned_r{r['round']}"] = (arch, r["round"], folder / r["checkpoint"])
            shipped = index["shipped_round"]
        points[f"{name}_pruned"] = (arch, shipped, folder / checkpoint_path(PRUNED))  # that round, fine-tuned
    return points


def _build(target: Path, key: dict, make) -> Path:
    """`make(target)` unless `target` was already made from the same inputs (its .key file says)."""
    stamp = target.with_suffix(".key")
    digest = sha256_json(key)
    if target.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    make(target)
    stamp.write_text(digest)
    return target


def _export(checkpoint: Path, target: Path, name: str, data: Dataset, cfg: Config) -> Path:
    def make(path: Path) -> None:
        export_checkpoint(checkpoint, path, name, data.classes, cfg.data, cfg.export.opset)
    return _build(target, {"checkpoint": sha256_file(checkpoint), "crop": cfg.data.crop, "opset": cfg.export.opset,
                           "mean": cfg.data.mean, "std": cfg.data.std, "resize": cfg.data.resize}, make)


def _layouts(cfg: Config) -> list[str]:
    """The static int8 layouts a point is quantized to: those the target runtime may ship."""
    static = [c for c in cfg.quantize.candidates if c not in REFERENCE_ONLY]
    return [c for c in static if cfg.deploy.target == "onnxruntime" or not c.startswith("qoperator")]


def measure_and_choose(cfg: Config, out: Path, students: list[str], data: Dataset) -> tuple[Report, dict]:
    """Every point as ONNX (exported, quantized), val accuracy for the choice, the test figures and
    interleaved latency on the target runtime for the report, then the rule."""
    points_dir = out / "points"
    files: dict[str, Path] = {}
    if cfg.teacher.onnx:
        files[TEACHER] = out / "teacher" / teacher_file(cfg)
    else:
        files[TEACHER] = _export(out / "teacher" / checkpoint_path(TEACHER), points_dir / "teacher.onnx", TEACHER,
                                 data, cfg)
    info: dict[str, dict] = {}
    failed: list[str] = []
    calibration = calibration_batch(data, cfg.data, cfg.quantize.calibration_samples, cfg.seed).numpy()
    for name, (arch, steps, checkpoint) in _fp32_points(cfg, out, students).items():
        files[name] = _export(checkpoint, points_dir / f"{name}.onnx", name, data, cfg)
        info[name] = {"student": arch, "steps": steps, "fp32": True}
        with preprocessed(files[name]) as prepped:
            for layout in _layouts(cfg):
                target = points_dir / f"{name}_{layout}.onnx"
                try:
                    _build(target, {"source": sha256_file(files[name]), "layout": layout,
                                    "quantize": cfg.section("quantize"), "calibration": calibration.shape,
                                    "seed": cfg.seed},
                           lambda path, n=name, lay=layout, pre=prepped: build_candidate(
                               files[n], path, calibration, cfg.quantize, lay, pre))
                    run_logits(cpu_session(target), calibration[:1])
                except Exception as exc:  # a layout ONNX Runtime cannot run for this model: not a point
                    failed.append(f"{name}_{layout} left out: ONNX Runtime could not build or run it "
                                  f"({summary(exc, 100)})")
                    continue
                files[f"{name}_{layout}"] = target
                info[f"{name}_{layout}"] = {"student": arch, "steps": steps + 1, "fp32": False}
    baselines = {}
    if cfg.distill.baseline:
        for arch in students:
            name = f"{folder_name(arch)}_{BASELINE}"
            baselines[name] = _export(out / "students" / folder_name(arch) / checkpoint_path(BASELINE),
                                      points_dir / f"{name}.onnx", name, data, cfg)
    val, val_labels = data.val_inputs(cfg.data).numpy(), data.val.labels.numpy()
    val_accuracy = {n: selection_accuracy(run_logits(cpu_session(files[n], cfg.bench.threads), val).argmax(1),
                                          val_labels, cfg.bench.metric) for n in info}
    split = data.report_split
    pairs = tuple((folder_name(a), f"{folder_name(a)}_{BASELINE}") for a in students) if baselines else ()
    measured = benchmark_onnx({**files, **baselines}, data.inputs(split, cfg.data).numpy(),
                              data.split(split).labels.numpy(), data.classes, cfg.bench, reference=TEACHER,
                              root=out, pairs=pairs)
    p50 = _target_p50(measured, cfg.deploy.target)
    points = [Point(n, info[n]["student"], info[n]["steps"], info[n]["fp32"], val_accuracy[n], p50[n],
                    files[n].stat().st_size / 1e6) for n in info]
    warnings = list(failed)
    choice_info: dict = {"objective": cfg.deploy.objective}
    on_front = front(points)
    pareto: dict = {"objective": cfg.deploy.objective, "runtime": _runtime_name(cfg.deploy.target),
                    "budget": {"max_accuracy_drop": cfg.deploy.max_accuracy_drop, "max_latency_ms": cfg.deploy.max_latency_ms,
                               "max_size_mb": cfg.deploy.max_size_mb},
                    "points": [dict(vars(p), vendor_ops=vendor_domains(files[p.name]),
                                    on_front=p in on_front) for p in points],
                    "front": [p.name for p in on_front], "chosen": None, "runner_up": None, "rule": None}
    try:
        choice = choose(points, cfg.deploy.objective, cfg.deploy.max_accuracy_drop, cfg.deploy.max_latency_ms,
                        cfg.deploy.max_size_mb)
        pareto.update(chosen=choice.chosen.name, runner_up=choice.runner_up.name if choice.runner_up else None,
                      rule=choice.rule, eligible=choice.eligible)
        choice_info.update(chosen=choice.chosen.name, rule=choice.rule)
        log.info("search: chose %s (%s)", choice.chosen.name, choice.rule)
    except CompressError as exc:  # a budget nothing meets: measured and reported, nothing deployed
        pareto["refused"] = str(exc)
        warnings.append(str(exc))
        choice_info["refused"] = str(exc)
    if pareto["chosen"]:
        measured["models"]["deployable"] = dict(measured["models"][pareto["chosen"]])
    dataset = dataset_info(data)
    report = Report.from_dict({**measured, "dataset": dataset, "origins": {
        TEACHER: origins(cfg)[TEACHER], **{folder_name(a): origins(student_config(cfg, a))["student"] for a in students}},
        "warnings": warnings + dataset.copy_warnings(), "pareto": pareto}, "the search")
    return report, choice_info


def _runtime_name(target: str) -> str:
    return "OpenVINO" if target == "openvino" else "ONNX Runtime"


def _target_p50(measured: dict, target: str) -> dict[str, float]:
    """Batch-1 p50 of every model on the target runtime: ONNX Runtime's interleaved timing, or
    OpenVINO's (a file it cannot load is infinitely slow there)."""
    if target == "openvino" and "openvino" in (measured.get("runtimes") or {}):
        models = measured["runtimes"]["openvino"]["models"]
        return {n: (m["latency_ms"]["p50"] if m.get("loads") else float("inf")) for n, m in models.items()}
    return {n: m["latency_ms"]["p50"] for n, m in measured["models"].items()}


# ---------------------------------------------------------------- what is written

def pareto_blocks(report: Report) -> list:
    p = report.pareto or {}
    if not p:
        return []
    rows = []
    for point in sorted(p["points"], key=lambda q: q["p50_ms"]):
        m = report.models[point["name"]]
        mark = " ★" if point["name"] == p.get("chosen") else (" (runner-up)" if point["name"] == p.get("runner_up") else "")
        rows.append([point["name"] + mark, point["student"], str(point["steps"]), "yes" if point["on_front"] else "",
                     f"{point['accuracy']:.4f}", f"{m.accuracy:.4f}", f"{point['p50_ms']:.2f}", f"{point['megabytes']:.2f}"])
    rule = (f"Chosen by `deploy.objective = {p['objective']}`: {p['rule']}; on {p['runtime']}, ties by size, then "
            f"by fewer steps from the student. Chosen: **{p['chosen']}**" + (f"; runner-up: {p['runner_up']}." if
                                                                              p.get("runner_up") else ".")
            if p.get("chosen") else f"**Nothing was deployed**: {p.get('refused')}")
    return [Heading("Pareto front: every point a search measured", 2), Paragraph([rule]),
            Table(["point", "student", "steps", "front", "val accuracy", f"{report.figures_from} accuracy",
                   f"p50 ms ({p['runtime']}, batch 1)", "MB"], rows)]


def write_report(report: Report, out: Path) -> None:
    from compress.reporting import plots
    run = RunDir(out)
    run.write_json("report.json", report.to_dict())
    blocks = report_blocks(report)
    blocks[1:1] = pareto_blocks(report)
    run.write_text("report.md", to_markdown(blocks))
    png = plots.pareto(report.pareto or {}, report.dataset.val_size if report.dataset else 0)
    with run.atomic("plots/pareto.png") as tmp:
        tmp.write_bytes(png)
    run.write_text("report.html", html_page("compress search", to_html(blocks) + "\n" + figure_html(
        png, "val accuracy against p50", "plots/pareto.png")))


def package(cfg: Config, out: Path, report: Report, data: Dataset, chosen: str) -> None:
    """deploy/ for the chosen point, with a card that names the rule and the runner-up."""
    source = out / report.models[chosen].onnx
    split = data.split(data.report_split)
    in_graph = package_onnx(source, out, [raw_rgb(s) for s in split.sources[:AGREEMENT_IMAGES]],
                            None if cfg.export.dynamic_batch else cfg.export.batch_size, cfg.export.ort,
                            cfg.deploy.target == "openvino", log.warning)
    p = report.pareto or {}
    runner_up = p.get("runner_up")
    chosen_point = next(q for q in p["points"] if q["name"] == chosen)
    choice = {"rule": f"deploy.objective = {p['objective']}: {p['rule']}", "chosen": chosen, "runner_up": runner_up}
    if runner_up:
        other = next(q for q in p["points"] if q["name"] == runner_up)
        choice["runner_up_cost"] = (f"{other['p50_ms'] - chosen_point['p50_ms']:+.2f} ms, "
                                    f"{100 * (other['accuracy'] - chosen_point['accuracy']):+.2f} val points, "
                                    f"{other['megabytes'] - chosen_point['megabytes']:+.2f} MB")
    metadata = read_metadata(source)
    card = render(CardFacts(name=chosen, onnx_file=out / "deploy/model.onnx",
                            ort_file=DEPLOY_ORT if cfg.export.ort else None, metadata=metadata,
                            report=report, config=student_config(cfg, chosen_point["student"]).to_dict(),
                            config_hash=sha256_json(cfg.to_dict())[:16],
                            teacher={"arch": cfg.teacher.arch, "val_accuracy": report.models[TEACHER].accuracy,
                                     "source": (report.origins or {}).get(TEACHER, "")},
                            student_loss=describe_loss(cfg.distill), git_commit=None, in_graph=in_graph,
                            choice=choice, student=metadata.get("arch", chosen)))
    RunDir(out).write_text(DEPLOY_CARD, card)

