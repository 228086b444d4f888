"""Time a report's models again, for the gate to confirm a latency failure before calling it one.

Why: a gated latency ratio is one draw from a noisy machine. On the CI models, with the rounds
already split over six fresh processes, a fresh-clone CI run failed on student_int8's batch-1
ratio (+16.8% against a 15% limit) while the same tree's five baseline runs on that CPU stayed
within 4.7% of their median; batch-1 timings of sub-millisecond models move most. A real
regression (more compute, a slower operator) is still there when the same files are timed again;
a noisy draw mostly is not, so a latency failure must reproduce before it fails the build.

The timing repeats the report's own conditions: every model it timed, in the same order, with its
bench settings (threads, batch sizes, warmup, rounds, fresh processes). The inputs are seeded
standard-normal images of the benchmarked shape: dense convolution kernels take the same time
whatever the pixel values, and the report's images are not kept beside it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.benchmarks.measure import paired_ratio, percentiles
from compress.benchmarks.suite import time_latency
from compress.core.config import BenchConfig
from compress.core.errors import CompressError


def report_files(report: dict, root: Path) -> dict[str, Path]:
    """name -> ONNX file of every model the report timed, resolved beside it; a clear error when one is gone."""
    files = {}
    for name, model in report.get("models", {}).items():
        if not model.get("onnx"):
            raise CompressError(f"the report names no ONNX file for model {name!r}")
        given = Path(model["onnx"])
        # a run's report names its files relative to the run directory; `compress bench` as given
        path = next((p for p in (root / given, given) if p.is_file()), root / given)
        if not path.is_file():
            raise CompressError(f"{path} (model {name!r} of the report) is missing; check the report inside its "
                                "run directory to confirm them")
        files[name] = path
    return files


def retime(report: dict, root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Fresh timings of the report's models under its own bench settings, in `latency_figures`' shape."""
    bench = report.get("benchmark", {})
    lacking = [k for k in ("batch_sizes", "input", "threads", "warmup", "runs") if k not in bench]
    if lacking:
        raise CompressError(f"the report's benchmark section lacks {', '.join(lacking)}, so its timing cannot be repeated")
    files = report_files(report, root)
    reference = bench.get("reference", "teacher")
    settings = BenchConfig(threads=bench["threads"], batch_sizes=bench["batch_sizes"], warmup=bench["warmup"],
                           runs=bench["runs"], calls_per_sample=bench.get("calls_per_sample", 1),
                           processes=bench.get("processes", 1))
    batches = sorted(set(settings.batch_sizes))
    images = np.random.default_rng(0).standard_normal([max(batches), *bench["input"][1:]], dtype=np.float32)
    timed = time_latency(files, images, batches, settings).samples
    return {name: {"latency_ratio": {str(b): paired_ratio(timed[b][name], timed[b][reference]) for b in batches},
                   "latency_p50_ms": {str(b): percentiles(timed[b][name])["p50"] for b in batches}}
            for name in files}


def latency_figures(report: dict) -> dict[str, dict[str, dict[str, float]]]:
    """A whole report's latency figures in `retime`'s shape (a second benchmark as the confirmation)."""
    return {name: {"latency_ratio": dict(m["latency_ratio_to_reference"]),
                   "latency_p50_ms": {b: v["p50"] for b, v in m["latency_ms_by_batch"].items()}}
            for name, m in report["models"].items()}
