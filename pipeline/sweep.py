"""`compress sweep`: a grid of distillation settings × seeds against one teacher, with the
CE-only baseline at every seed, so each cell's gain is a paired difference, not a guess.

Fairness by construction:
- one teacher per sweep, trained once (or given), in `<out>/teacher`; every cell links to it;
- `distill.seed` is the only thing a seed changes: the student's initialisation and data order
  are identical across cells at the same seed, and identical to the baseline at that seed;
- the baseline at each seed is trained once per distinct baseline setting (cells that vary
  only loss/alpha/T share it) in `<out>/baseline/<hash>`;
- cells whose loss reads no temperature (mse, hint, rkd, ...) are not repeated across T.

Every cell is an ordinary run directory (`<out>/cells/<cell>/seed-<s>`) with its manifest, so
an interrupted sweep resumes where it stopped: finished cells are skipped by their cache keys.
`--jobs N` runs cells in N processes, each with cores/N torch threads and, on a machine with
GPUs, its own GPU (job i sees only GPU i mod the GPU count, through CUDA_VISIBLE_DEVICES).
"""
from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.core.config import Config, get_key, valid_keys
from compress.core.errors import CompressError
from compress.core.lock import RunLock
from compress.core.roster import TEACHER, checkpoint_path
from compress.core.rundir import atomic_path, sha256_json

log = logging.getLogger("compress")

FIXED_PREFIXES = ("data.", "teacher.", "seed", "distill.seed", "device", "track", "prune.", "export.", "quantize.", "bench.")


@dataclass
class Task:
    """One pipeline invocation of the sweep (the teacher, a baseline, or a cell at one seed)."""

    kind: str  # teacher | baseline | cell
    config: dict
    out: str
    cache: str
    threads: int


def parse_grid(items: tuple[str, ...]) -> dict[str, list[str]]:
    """("distill.alpha=0.1,0.5", ...) -> {"distill.alpha": ["0.1", "0.5"]}, keys checked."""
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise CompressError(f"--grid {item!r}: expected section.key=v1,v2,..., e.g. distill.alpha=0.1,0.5,0.9")
        key, values = (s.strip() for s in item.split("=", 1))
        if key not in valid_keys():
            raise CompressError(f"--grid: unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
        if key.startswith(FIXED_PREFIXES):
            raise CompressError(f"--grid {key}: a sweep keeps data, teacher, seed and the deployment stages fixed; "
                                "vary distill.* or train.* keys (seeds come from --seeds)")
        grid[key] = [v.strip() for v in values.split(",") if v.strip()]
        if not grid[key]:
            raise CompressError(f"--grid {key}: no values given")
    return grid


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CompressError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise CompressError(f"--seeds {text!r}: expected distinct non-negative integers, e.g. 0,1,2")
    return seeds


def cells(cfg: Config, grid: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Every combination of the grid, as typed values; T is dropped where the loss ignores it."""
    from compress.methods.kd.spec import uses_temperature
    from compress.methods.student import check_loss_recipe

    combos, seen = [], set()
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        cell_cfg = cfg.replace(dict(zip(keys, values)))
        check_loss_recipe(cell_cfg.distill, cell_cfg.train, cell_cfg.teacher.arch)
        combo = {k: get_key(cell_cfg, k) for k in keys}
        if "distill.temperature" in combo and not uses_temperature(cell_cfg.distill.loss):
            combo.pop("distill.temperature")
        ident = tuple(sorted((k, str(v)) for k, v in combo.items()))
        if ident not in seen:
            seen.add(ident)
            combos.append(combo)
    return combos


def cell_name(combo: dict[str, Any]) -> str:
    """A readable, file-system-safe directory name, e.g. loss-kl_alpha-0.5_temperature-4."""
    short = {k: k.split(".")[-1] for k in combo}
    if len(set(short.values())) < len(short):
        short = {k: k for k in combo}
    text = "_".join(f"{short[k]}-{v:g}" if isinstance(v, float) else f"{short[k]}-{v}" for k, v in combo.items())
    return re.sub(r"[^A-Za-z0-9._=-]+", "", text.replace("+", "plus").replace("*", "x").replace(" ", "")) or "base"


def baseline_dir(cfg: Config) -> str:
    from compress.stages.baseline import BaselineStage
    key = BaselineStage().view(cfg).to_dict()
    key.pop("seed", None)  # the teacher's seed
    key["distill"].pop("seed", None)  # the student's seed is in the directory name
    return sha256_json(key)[:12]


def plan(cfg: Config, grid: dict[str, list[str]], seeds: list[int], out: Path, jobs: int) -> tuple[Task, list[Task], list[dict]]:
    """The teacher task, the baseline and cell tasks, and one record per (cell, seed) to aggregate."""
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    cache = str(out / "cache")
    teacher_cfg = cfg.replace({"distill.baseline": False})
    teacher = Task("teacher", teacher_cfg.to_dict(), str(out / "teacher"), cache, os.cpu_count() or 1)
    tasks, records, baselines = [], [], {}
    for combo in cells(cfg, grid):
        name = cell_name(combo)
        for seed in seeds:
            cell_cfg = cfg.replace({**combo, "distill.seed": seed})
            b_dir = out / "baseline" / f"{baseline_dir(cell_cfg)}-seed-{seed}"
            if str(b_dir) not in baselines:
                twin = cell_cfg.replace({"distill.baseline": True})  # whatever the run's own default
                baselines[str(b_dir)] = Task("baseline", twin.to_dict(), str(b_dir), cache, threads)
            cell_cfg = cell_cfg.replace({"distill.baseline": False})
            c_dir = out / "cells" / name / f"seed-{seed}"
            tasks.append(Task("cell", cell_cfg.to_dict(), str(c_dir), cache, threads))
            records.append({"cell": name, "settings": combo, "seed": seed, "run": str(c_dir), "baseline": str(b_dir)})
    return teacher, list(baselines.values()) + tasks, records


_DATA_CACHE: dict[str, Any] = {}


def adopt_teacher(cell_out: Path, teacher_out: Path, rel: str = checkpoint_path(TEACHER)) -> None:
    """Put the shared teacher (`rel`: its checkpoint, or a given ONNX file) into a cell's run
    directory (a hard link where the file system allows, so 45 cells do not hold 45 copies of a
    94 MB ResNet50)."""
    source, target = teacher_out / rel, cell_out / rel
    if target.is_file() and target.samefile(source):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        try:
            tmp.unlink()
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def run_task(task: Task, quiet: bool = True, data=None) -> str:
    """Run one task (in this process or a worker). Returns its run directory."""
    import torch

    from compress.core.data import load_dataset
    from compress.pipeline.runner import run_pipeline
    from compress.stages.baseline import BaselineStage
    from compress.stages.distill import DistillStage
    from compress.stages.teacher import TeacherStage

    torch.set_num_threads(task.threads)
    cfg = Config.from_dict(task.config)
    if data is None:
        token = sha256_json({"data": task.config["data"], "seed": cfg.seed})
        if token not in _DATA_CACHE:
            _DATA_CACHE[token] = load_dataset(cfg.data, cfg.seed)
        data = _DATA_CACHE[token]
    stages = {"teacher": (TeacherStage(),), "baseline": (BaselineStage(),), "cell": (DistillStage(),)}[task.kind]
    if task.kind == "cell":
        adopt_teacher(Path(task.out), Path(task.cache).parent / "teacher")
    run_pipeline(cfg, task.out, quiet=quiet, stages=stages, data=data, shared_cache=Path(task.cache))
    if task.kind == "teacher" and cfg.distill.teacher_folds >= 2:
        from compress.core.loop import resolve_device
        from compress.core.rundir import RunDir
        from compress.core.stage import Context
        # once, before the cells need it, with the distill stage's view (the same cache digest)
        stage = DistillStage()
        ctx = Context(stage.view(cfg), RunDir(task.out), data, resolve_device(cfg.device), quiet,
                      shared_cache=Path(task.cache))
        stage.distillation(ctx, stage.trainer(ctx), cfg.distill.loss, stage.seed(ctx), cfg.distill.augment)
    return task.out


def gpu_slots(jobs: int, gpus: int) -> list[int | None]:
    """The GPU each of `jobs` worker processes takes: its own while there are enough (job i on
    GPU i), round robin beyond; None for every job on a machine without GPUs."""
    return [i % gpus if gpus else None for i in range(jobs)]


def claim_gpu(slots) -> None:
    """Worker-process initializer: see only the GPU this worker drew (before CUDA starts in it)."""
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def run_sweep(cfg: Config, grid: dict[str, list[str]], seeds: list[int], out: Path, jobs: int = 1,
              quiet: bool = False) -> dict:
    """Check and plan (nothing written if that fails), then run what is not finished, holding the
    sweep directory's lock, and aggregate; writes sweep.json / .md / .png."""
    import time

    from compress.pipeline.runner import preflight
    from compress.pipeline.sweep_report import aggregate, write_outputs
    t0 = time.perf_counter()
    if jobs < 1:
        raise CompressError("--jobs must be >= 1")
    from compress.core.auto_settings import resolve
    cfg, notes = resolve(cfg)  # once, so every cell starts from the same weights
    for note in notes:
        log.info(note)
    data = preflight(cfg)
    teacher, tasks, records = plan(cfg, grid, seeds, out, jobs)
    with RunLock(out):
        log.info("sweep: %d cells x %d seeds, %d baseline runs, jobs=%d; teacher in %s", len(records) // len(seeds),
                 len(seeds), sum(t.kind == "baseline" for t in tasks), jobs, teacher.out)
        run_task(teacher, quiet, data)
        if jobs == 1:
            for i, task in enumerate(tasks, 1):
                run_task(task, True, data)
                log.info("[%d/%d] %s %s", i, len(tasks), task.kind, task.out)
        else:
            import multiprocessing

            import torch
            context = multiprocessing.get_context("spawn")
            gpus = torch.cuda.device_count() if cfg.device != "cpu" else 0
            slots = context.Queue()
            for gpu in gpu_slots(jobs, gpus):
                slots.put(gpu)
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=claim_gpu,
                                     initargs=(slots,)) as pool:
                for i, done in enumerate(pool.map(run_task, tasks), 1):
                    log.info("[%d/%d] %s", i, len(tasks), done)
        summary = aggregate(records, seeds, teacher)
        summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
        summary["grid"], summary["jobs"] = grid, jobs
        write_outputs(summary, out)
        if cfg.track == "mlflow":
            from compress.pipeline.tracking import log_sweep
            log_sweep(summary, records, out, cfg.tracking_uri)
    return summary
