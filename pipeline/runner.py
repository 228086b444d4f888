"""The ordered stages, their cache keys, skip / rerun decisions and the manifest.

A stage's key is the hash of its name, the config keys it declares (`Stage.reads`), the data
fingerprint, the sha256 of every input artifact and the code it runs (DVC's lock file, Olive's
pass cache). A stage that runs again says why ("code changed: exports/onnx.py"). A stage whose key and outputs match the manifest is skipped; anything upstream that
changes its outputs changes the keys downstream, so a rerun starts from the first changed stage.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from compress.core import faults
from compress.core.auto_settings import resolve
from compress.core.config import Config, flatten
from compress.core.data import Dataset, load_dataset
from compress.core.distributed import active, barrier, from_main, is_main, start, world_size
from compress.core.errors import CompressError
from compress.core.lock import RunLock, remove_debris
from compress.core.loop import resolve_device
from compress.core.provenance import git_commit, library_versions
from compress.core.roster import MANIFEST
from compress.core.rundir import RunDir, sha256_file, sha256_json
from compress.core.source_digest import changed, code_files
from compress.core.stage import Context, Stage
from compress.methods.student_size import arch_size, not_smaller_warning, teacher_size
from compress.stages.baseline import BaselineStage
from compress.stages.benchmark import BenchmarkStage
from compress.stages.distill import DistillStage
from compress.stages.export import ExportStage
from compress.stages.package import PackageStage
from compress.stages.prune import PruneStage
from compress.stages.quantize import QuantizeStage
from compress.stages.report import ReportStage
from compress.stages.teacher import TeacherStage

log = logging.getLogger("compress")

STAGES: tuple[Stage, ...] = (TeacherStage(), DistillStage(), BaselineStage(), PruneStage(), ExportStage(),
                             QuantizeStage(), BenchmarkStage(), PackageStage(), ReportStage())


def preflight(cfg: Config, data: Dataset | None = None, stages: Sequence[Stage] = STAGES) -> Dataset:
    """Everything that can reject the input, before a single file is written (`data`: already
    loaded). Settings first, then the data, then what needs the data (a given teacher's classes)."""
    enabled = [s for s in stages if s.enabled(cfg)]
    for stage in enabled:
        stage.check(cfg, None)
    if resolve_device(cfg.device).type != "cuda" and cfg.train.sync_bn:
        raise CompressError("train.sync_bn needs CUDA: PyTorch's SyncBatchNorm runs on GPUs only; "
                            "set train.sync_bn = false for CPU processes")
    data = data or load_dataset(cfg.data, cfg.seed)
    for stage in enabled:
        stage.check(cfg, data)
    if not cfg.distill.archs and is_main():  # a search's students are points like any other
        warning = student_size_warning(cfg, len(data.classes))
        if warning:
            log.warning(warning)
    return data


def student_size_warning(cfg: Config, classes: int) -> str | None:
    t, crop = cfg.teacher, cfg.data.crop
    teacher = t.onnx or t.checkpoint or t.arch
    return not_smaller_warning(cfg.distill.arch, arch_size(cfg.distill.arch, classes, crop), teacher,
                               teacher_size(t.onnx, t.checkpoint, t.arch, classes, crop), classes, crop)


# where decoded images are kept and how many processes feed training change no result (the loader
# and image-store tests check that batches are identical), so changing them reruns nothing
NOT_RESULTS = ("cache", "cache_dir", "workers")


def result_settings(view: dict) -> dict:
    if isinstance(view.get("data"), dict):
        view = {**view, "data": {k: v for k, v in view["data"].items() if k not in NOT_RESULTS}}
    return view


def key_basis(stage: Stage, cfg: Config, run: RunDir, data: Dataset, processes: int | None = None) -> dict:
    """Everything a stage's outputs depend on: its settings, the data, its input artifacts, the code
    it runs (compress.core.source_digest) and, for training stages, the process count
    (`processes`: the torch.distributed world size, default this run's)."""
    processes = world_size() if processes is None else processes
    missing = [rel for rel in stage.inputs(cfg) if not run.exists(rel)]
    if missing:
        raise CompressError(f"stage {stage.name} needs {missing}, which an earlier stage did not produce")
    basis: dict[str, Any] = {
        "stage": stage.name, "config": result_settings(stage.view(cfg).to_dict()), "data": data.fingerprint,
        "inputs": {rel: run.sha256(rel) for rel in stage.inputs(cfg)},
        "external": {p: sha256_file(Path(p)) for p in stage.external_inputs(cfg)},
        "code": code_files(type(stage).__module__),
    }
    if stage.distributed and processes > 1:  # N processes train on N x data.batch_size: another result
        basis["processes"] = processes
    return basis


def stage_key(stage: Stage, cfg: Config, run: RunDir, data: Dataset, processes: int | None = None) -> str:
    return sha256_json(key_basis(stage, cfg, run, data, processes))


def why_rerun(record: dict | None, basis: dict) -> str:
    """Why a stage runs, in words: "not run before", "code changed: exports/onnx.py", ..."""
    before = (record or {}).get("basis")
    if not before:
        return "not run before" if not record else "recorded by an older compress"
    reasons = []
    files = changed(before.get("code", {}), basis["code"])
    if files:
        reasons.append("code changed: " + ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else ""))
    if before.get("config") != basis["config"]:
        flat_before, flat_now = flatten(before.get("config", {})), flatten(basis["config"])
        keys = sorted(k for k in set(flat_before) | set(flat_now) if flat_before.get(k) != flat_now.get(k))
        reasons.append("settings changed: " + ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else ""))
    inputs = sorted(k for k in set(before.get("inputs", {})) | set(basis["inputs"])
                    if before.get("inputs", {}).get(k) != basis["inputs"].get(k))
    if inputs:
        reasons.append("inputs changed: " + ", ".join(inputs[:3]) + (" ..." if len(inputs) > 3 else ""))
    for part, words in (("data", "the data changed"), ("external", "a given file changed"),
                        ("processes", "another process count")):
        if before.get(part) != basis.get(part):
            reasons.append(words)
    return "; ".join(reasons) or "its outputs are missing or changed"


def _up_to_date(record: dict | None, key: str, run: RunDir, expected: list[str]) -> bool:
    """Same key, every output the stage now declares recorded (a newer compress may write more),
    and every recorded output still on disk with its recorded hash."""
    if not record or record.get("key") != key:
        return False
    outputs = record.get("outputs", {})
    return set(expected) <= set(outputs) and all(run.exists(rel) and run.sha256(rel) == digest
                                                 for rel, digest in outputs.items())


def check_writable(out: Path) -> None:
    """`out` can be created and written: checked before any data is decoded, by making and removing
    a probe folder in the nearest existing ancestor, so a rejected run leaves nothing behind."""
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CompressError(f"output directory {out}: {existing} is a file, not a folder; choose another --out")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".compress-probe-", dir=existing))
    except OSError as exc:
        raise CompressError(f"output directory {out}: cannot write in {existing} ({exc.strerror or exc}); "
                            "choose a writable --out") from None


def run_pipeline(cfg: Config, out: str | Path, quiet: bool = False, stages: Sequence[Stage] = STAGES,
                 data: Dataset | None = None, shared_cache: Path | None = None, lock: bool = True) -> dict:
    """Run (or skip) every enabled stage in order, holding the run directory's lock; returns the
    manifest. A sweep or a search passes its already-decoded `data`, a subset of `stages` and one
    `shared_cache`; `lock=False` when the caller already holds the folder's lock (a search's own stages).
    """
    t_start = time.perf_counter()
    cfg, notes = resolve(cfg)  # `auto` settings made concrete: what is keyed, recorded and reported
    if not is_main():  # torchrun rank > 0: no lock, no writes; trains beside rank 0
        data = preflight(cfg, data, stages)
        return _run_locked(cfg, RunDir(out, writer=False), True, stages, data, shared_cache, t_start, notes)
    for note in notes:
        log.info(note)
    check_writable(Path(out))
    with ExitStack() as held:
        # an existing run directory is locked at once, so a second run fails before decoding
        # anything; a new one is created only after every check passed (nothing left if one fails)
        early = Path(out).is_dir()
        if early and lock:
            held.enter_context(RunLock(out))
        data = preflight(cfg, data, stages)
        if not early and lock:
            held.enter_context(RunLock(out))
        removed = remove_debris(Path(out))
        if removed:
            log.info("removed what an interrupted run left: %s", ", ".join(removed))
        return _run_locked(cfg, RunDir(out), quiet, stages, data, shared_cache, t_start, notes)


def _run_locked(cfg: Config, run: RunDir, quiet: bool, stages: Sequence[Stage], data: Dataset,
                shared_cache: Path | None, t_start: float, notes: list[str]) -> dict:
    device = start(resolve_device(cfg.device))  # joins torchrun's process group, if any
    sizes = f"{len(data.train)} train / {len(data.val)} val" + (f" / {len(data.test)} test" if data.test is not None
                                                               else " (no test split: too few images per class)")
    log.info("dataset %s: %d classes, %s images; output folder %s; device %s", data.name, len(data.classes), sizes,
             run.root, device)
    previous = run.load_manifest()
    records = dict(previous.get("stages", {}))
    manifest: dict[str, Any] = {
        "config": cfg.to_dict(), "versions": library_versions(), "git_commit": git_commit(), "device": str(device),
        "processes": world_size(),
        "dataset": {"name": data.name, "path": cfg.data.path, "classes": data.classes,
                    "train_size": len(data.train), "val_size": len(data.val), "fingerprint": data.fingerprint,
                    "bad_images_skipped": len(data.bad_images), "bad_images": data.bad_images},
        "resolved": notes, "stages": records, "executed": [], "skipped": [], "artifacts": {},
    }
    for number, stage in enumerate(stages, 1):
        if not stage.enabled(cfg):
            records.pop(stage.name, None)
            for rel in stage.outputs(cfg) if run.writer else ():
                run.path(rel).unlink(missing_ok=True)  # a stage turned off leaves nothing stale behind
            continue
        basis = key_basis(stage, cfg, run, data) if is_main() else None
        key = sha256_json(basis) if basis else None
        if from_main(_up_to_date(records.get(stage.name), key or "", run, stage.outputs(cfg)) if is_main() else None):
            manifest["skipped"].append(stage.name)
            log.info("stage %d/%d: %s up to date, skipped", number, len(stages), stage.name)
            continue
        key = str(from_main(key))
        together = stage.distributed and active()
        if not is_main() and not together:
            barrier()  # rank 0 runs this stage alone
            continue
        reason = why_rerun(records.get(stage.name), basis) if basis else ""
        log.info("stage %d/%d: %s%s%s", number, len(stages), stage.name,
                 f" on {world_size()} processes" if together else "", f" ({reason})" if reason else "")
        earlier = [w for before in stages[:number - 1] for w in records.get(before.name, {}).get("warnings", [])]
        ctx = Context(stage.view(cfg), run, data, device, quiet, shared_cache=shared_cache, distributed=together,
                      earlier_warnings=earlier)
        t0 = time.perf_counter()
        faults.reach("stage.run", stage=stage.name)
        summary = stage.run(ctx, key)
        if active():
            barrier()  # the next stage on any rank reads what rank 0 wrote
        if not run.writer:
            continue
        records[stage.name] = {"key": key, "basis": basis, "reason": reason, "seconds": round(time.perf_counter() - t0, 2),
                               "outputs": {rel: run.sha256(rel) for rel in stage.outputs(cfg)},
                               "summary": summary, "warnings": ctx.warnings}
        manifest["executed"].append(stage.name)
        run.write_json(MANIFEST, manifest)  # progress survives a crash in a later stage
    manifest["artifacts"] = {rel: digest for rec in records.values() for rel, digest in rec["outputs"].items()}
    manifest["seconds_total_this_invocation"] = round(time.perf_counter() - t_start, 2)
    run.write_json(MANIFEST, manifest)
    return manifest
