"""Time ONNX models in fresh child processes that never import torch.

Why not time them in the pipeline's own process: measured on this 2-core VM, the same five CI
models gave latency ratios to the teacher 5-11% lower after training in the same process than
in a benchmark-only process (torch's thread pool and heap are already there), so a gate whose
baseline came from one and whose check came from the other moved for no reason. A fresh
process per block of rounds makes `compress run`, `compress bench` and the honesty benchmark
measure under the same conditions, and splitting the rounds over several processes averages
out what one process's memory placement does to one model.

Parent side: `time_in_fresh_processes`. Child side: `python -P -m compress.measure.latency_worker SPEC OUT`;
`-P` keeps the working directory off sys.path, so a user's `benchmarks/` or `compress.py` there is
neither imported nor run: the child imports only the installed package.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.exports.session import cpu_session
from compress.measure.contention import Probe
from compress.measure.latency import interleaved_latency


@dataclass
class Timings:
    """samples[batch][model]: interleaved timings (ms); contention: was the machine busy meanwhile
    (compress.measure.contention); blocks: how many of the rounds each fresh process took, in
    order (sample i of every model comes from the same round, so per-process figures can be cut back out)."""

    samples: dict[int, dict[str, list[float]]]
    contention: dict
    blocks: list[int]


def time_in_fresh_processes(paths: dict[str, Path], images: np.ndarray, batches: list[int], threads: int,
                            warmup: int, runs: int, calls: int = 1, processes: int = 1,
                            load_order: Callable[[int], list[str]] | None = None) -> Timings:
    """Per batch size, per model: `runs` interleaved timings (ms), split over `processes` children.

    Rounds from different children are concatenated in order, so sample i of every model still
    comes from the same round and paired ratios stay paired. Child i loads the models in the order
    `load_order(i)` (default: rotated by i), so no model is always the first to take memory. Each child's median ratio of every
    model to the first one feeds the contention figures (how far fresh processes disagree).
    """
    processes = max(1, min(processes, runs // 2))
    shares = [runs // processes + (1 if i < runs % processes else 0) for i in range(processes)]
    out: dict[int, dict[str, list[float]]] = {b: {n: [] for n in paths} for b in batches}
    first = next(iter(paths))
    per_process: dict[str, list[float]] = {f"{n}@{b}": [] for b in batches for n in paths if n != first}
    remove_stale_folders()
    probe = Probe.start()
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-") as tmp:
        image_file = Path(tmp) / "images.npy"
        np.save(image_file, np.ascontiguousarray(images[:max(batches)], dtype=np.float32))
        for i, share in enumerate(shares):
            names = list(paths)
            order = load_order(i) if load_order else names[i % len(names):] + names[:i % len(names)]
            spec = {"models": {n: str(paths[n]) for n in order}, "images": str(image_file), "batches": batches,
                    "threads": threads, "warmup": warmup, "runs": share, "calls": calls}
            spec_file, result_file = Path(tmp) / f"spec-{i}.json", Path(tmp) / f"result-{i}.json"
            spec_file.write_text(json.dumps(spec))
            try:
                done = subprocess.run([sys.executable, "-P", "-m", "compress.measure.latency_worker", str(spec_file),
                                       str(result_file)], capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"latency worker did not finish in {WORKER_TIMEOUT_S} s (stuck, or a machine "
                                   "far busier than timing can use); it was killed") from None
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"latency worker failed (exit {done.returncode}): {last}")
            result = json.loads(result_file.read_text())
            for b in batches:
                for n in paths:
                    out[b][n].extend(result[str(b)][n])
                    if n != first:
                        per_process[f"{n}@{b}"].append(
                            float(np.median(np.asarray(result[str(b)][n]) / np.asarray(result[str(b)][first]))))
    return Timings(out, probe.finish(per_process), shares)


TEMP_PREFIX = "compress-latency-"
WORKER_TIMEOUT_S = 1800  # one worker's share of the rounds; far above any run measured here


def remove_stale_folders() -> None:
    """Remove temp folders of timing runs whose process is gone (killed before it cleaned up)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
        pid = folder.name[len(TEMP_PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[0]).read_text())
    images = np.load(spec["images"])
    sessions = {n: cpu_session(p, spec["threads"]) for n, p in spec["models"].items()}
    result = {str(b): interleaved_latency(sessions, images, b, spec["warmup"], spec["runs"], spec["calls"])
              for b in spec["batches"]}
    Path(argv[1]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
