"""The ordered stages, their cache keys, skip / rerun decisions and the manifest.

A stage's key is the hash of its name, version, the config it declares, the data fingerprint
and the sha256 of every input artifact (DVC's lock file, Olive's pass cache). A stage whose key
and outputs match the manifest is skipped; anything upstream that changes its outputs changes
the keys downstream, so a rerun starts from the first changed stage.
"""
from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import Sequence

from pipeline.config import Config
from pipeline.data import Dataset, load_dataset
from pipeline.errors import CompressError
from pipeline.models import build_model, classification_archs
from pipeline.rundir import MANIFEST, RunDir, sha256_file, sha256_json
from pipeline.stage import Context, Stage
from pipeline.train import resolve_device
from stages.benchmark import BenchmarkStage
from stages.distill import BaselineStage, DistillStage
from stages.export import ExportStage
from stages.package import PackageStage
from stages.losses import needs_teacher_features, parse_spec
from stages.objective import named_module
from stages.prune import PruneStage
from stages.quantize import QuantizeStage
from stages.report import ReportStage
from stages.teacher import TeacherStage, given_teacher

STAGES: tuple[Stage, ...] = (TeacherStage(), DistillStage(), BaselineStage(), PruneStage(), ExportStage(),
                             QuantizeStage(), BenchmarkStage(), PackageStage(), ReportStage())


def versions() -> dict[str, str]:
    import numpy, onnx, onnxruntime, torch, torch_pruning, torchvision
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "torch_pruning": torch_pruning.__version__, "numpy": numpy.__version__}


def git_commit() -> str | None:
    """The commit of the compress checkout in use, when it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def preflight(cfg: Config, data: Dataset | None = None) -> Dataset:
    """Everything that can reject the input, before a single file is written (`data`: already loaded)."""
    for key, arch in (("teacher.arch", cfg.teacher.arch), ("distill.arch", cfg.distill.arch)):
        if arch not in classification_archs():
            raise CompressError(f"{key}: unknown architecture {arch!r}; valid: {', '.join(classification_archs())}")
    check_loss_recipe(cfg)
    for key, path in (("teacher.checkpoint", cfg.teacher.checkpoint), ("teacher.weights", cfg.teacher.weights),
                      ("distill.weights", cfg.distill.weights)):
        if path and path not in ("none", "imagenet") and not Path(path).is_file():
            raise CompressError(f"{key}: checkpoint file {path} does not exist")
    resolve_device(cfg.device)
    data = data or load_dataset(cfg.data, cfg.seed)
    if cfg.teacher.checkpoint:
        given_teacher(cfg.teacher.checkpoint, data.classes, cfg.teacher.arch)
    for key, path, arch in (("teacher.weights", cfg.teacher.weights, cfg.teacher.arch),
                            ("distill.weights", cfg.distill.weights, cfg.distill.arch)):
        if path not in ("none", ""):
            build_model(arch, len(data.classes), path)  # fails now, not after an hour of training
    return data


def check_loss_recipe(cfg: Config) -> None:
    """The loss spec parses, and the teacher signal it needs can be had with these settings."""
    spec = cfg.distill.loss
    parse_spec(spec)
    features = needs_teacher_features(spec)
    if cfg.distill.teacher_folds >= 2 and features:
        raise CompressError(f"distill.teacher_folds = {cfg.distill.teacher_folds} gives logits only, but distill.loss "
                            f"{spec!r} compares {', '.join(sorted(features))}; use kl/mse/adversarial or teacher_folds = 0")
    if cfg.distill.teacher_folds >= 2 and (cfg.train.mixup > 0 or cfg.train.cutmix > 0):
        raise CompressError("distill.teacher_folds gives one soft label per image, which mixup/cutmix images do not "
                            "have; set train.mixup = train.cutmix = 0 or distill.teacher_folds = 0")
    if "hint" in features:
        student_layer, teacher_layer = cfg.distill.hint_layers.split(":")
        for arch, layer in ((cfg.distill.arch, student_layer), (cfg.teacher.arch, teacher_layer)):
            named_module(build_model(arch, 2), layer)


def stage_key(stage: Stage, cfg: Config, run: RunDir, data: Dataset) -> str:
    missing = [rel for rel in stage.inputs(cfg) if not run.exists(rel)]
    if missing:
        raise CompressError(f"stage {stage.name} needs {missing}, which an earlier stage did not produce")
    return sha256_json({
        "stage": stage.name, "version": stage.version, "config": stage.key_config(cfg), "data": data.fingerprint,
        "inputs": {rel: run.sha256(rel) for rel in stage.inputs(cfg)},
        "external": {p: sha256_file(Path(p)) for p in stage.external_inputs(cfg)},
    })


def _up_to_date(record: dict | None, key: str, run: RunDir) -> bool:
    if not record or record.get("key") != key:
        return False
    outputs = record.get("outputs", {})
    return all(run.exists(rel) and run.sha256(rel) == digest for rel, digest in outputs.items())


def run_pipeline(cfg: Config, out: str | Path, quiet: bool = False, stages: Sequence[Stage] = STAGES,
                 data: Dataset | None = None, shared_cache: Path | None = None) -> dict:
    """Run (or skip) every enabled stage in order; returns the manifest.

    A sweep passes its already-decoded `data`, a subset of `stages` and one `shared_cache`.
    """
    t_start = time.perf_counter()
    data = preflight(cfg, data)
    device = resolve_device(cfg.device)
    run = RunDir(out)
    run.root.mkdir(parents=True, exist_ok=True)
    previous = run.load_manifest()
    records = dict(previous.get("stages", {}))
    manifest = {
        "config": cfg.to_dict(), "versions": versions(), "git_commit": git_commit(), "device": str(device),
        "dataset": {"name": data.name, "path": cfg.data.path, "classes": data.classes,
                    "train_size": len(data.train), "val_size": len(data.val), "fingerprint": data.fingerprint,
                    "bad_images_skipped": len(data.bad_images), "bad_images": data.bad_images},
        "stages": records, "executed": [], "skipped": [], "artifacts": {},
    }
    ctx = Context(cfg, run, data, device, quiet, shared_cache=shared_cache)
    for stage in stages:
        if not stage.enabled(cfg):
            records.pop(stage.name, None)
            for rel in stage.outputs(cfg):
                run.path(rel).unlink(missing_ok=True)  # a stage turned off leaves nothing stale behind
            continue
        key = stage_key(stage, cfg, run, data)
        if _up_to_date(records.get(stage.name), key, run):
            manifest["skipped"].append(stage.name)
            ctx.log(f"[{stage.name}] up to date, skipped")
            continue
        ctx.log(f"[{stage.name}] running")
        ctx.warnings = []
        t0 = time.perf_counter()
        summary = stage.run(ctx, key)
        records[stage.name] = {"key": key, "seconds": round(time.perf_counter() - t0, 2),
                               "outputs": {rel: run.sha256(rel) for rel in stage.outputs(cfg)},
                               "summary": summary, "warnings": ctx.warnings}
        manifest["executed"].append(stage.name)
        run.write_json(MANIFEST, manifest)  # progress survives a crash in a later stage
    manifest["artifacts"] = {rel: digest for rec in records.values() for rel, digest in rec["outputs"].items()}
    manifest["seconds_total_this_invocation"] = round(time.perf_counter() - t_start, 2)
    run.write_json(MANIFEST, manifest)
    return manifest
