"""Benchmark a set of ONNX models on the same images in one process: accuracy figures, and
interleaved CPU latency at each batch size with ratios to a reference model (the teacher).

Used by the pipeline's benchmark stage and by `compress bench` on any exported files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compress.core.config import BenchConfig
from compress.core.roster import TEACHER
from compress.exports.operators import operator_set
from compress.exports.session import cpu_session, run_logits
from compress.measure.accuracy import accuracy_figures
from compress.measure.environment import environment
from compress.measure.latency import paired_ratio, percentiles
from compress.measure.latency_worker import Timings, time_in_fresh_processes
from compress.measure.runtimes import compare as compare_runtimes
from compress.measure.stats import mcnemar


def _int_or_none(meta: dict, key: str) -> int | None:
    try:
        return int(json.loads(meta[key]))
    except (KeyError, ValueError, TypeError):
        return None


# settings that change the figures, recorded in the report: a report and a baseline (or reference
# run) that differ in any of them measure different things, so the gate refuses to compare them
GATED_SETTINGS = ("seed", "data.resize", "data.crop", "teacher.arch", "teacher.epochs", "distill.arch",
                  "distill.epochs", "prune.enabled", "prune.target", "prune.params_ratio", "prune.macs_ratio",
                  "prune.epochs", "quantize.enabled", "quantize.format", "bench.threads", "bench.batch_sizes",
                  "bench.warmup", "bench.runs", "bench.calls_per_sample", "bench.processes")

OTHER_RUNTIME_RUNS = 200  # batch-1 timings per model in each other runtime (in this process)


def benchmark_onnx(paths: dict[str, Path], images: np.ndarray, labels: np.ndarray, classes: list[str],
                   cfg: BenchConfig, reference: str | None = TEACHER, root: Path | None = None,
                   pairs: tuple[tuple[str, str], ...] = ()) -> dict:
    """Measure every model in `paths` (name -> file). `root` makes the reported paths relative.
    `pairs` (a, b): compare a with b on the same images (McNemar's exact test)."""
    sessions = {n: cpu_session(p, threads=cfg.threads) for n, p in paths.items()}
    reference = reference if reference in paths else next(iter(paths))
    logits = {n: run_logits(s, images) for n, s in sessions.items()}
    ref_predicted = logits[reference].argmax(1)
    batches = sorted(set(cfg.batch_sizes))
    measured = time_latency(paths, images, batches, cfg)
    timings = measured.samples
    models = {}
    for name, path in paths.items():
        meta = sessions[name].get_modelmeta().custom_metadata_map
        by_batch = {str(b): percentiles(timings[b][name]) for b in batches}
        largest = str(batches[-1])
        models[name] = {
            "onnx": str(path.relative_to(root)) if root else str(path),
            "onnx_bytes": path.stat().st_size,
            "params": _int_or_none(meta, "params"), "macs": _int_or_none(meta, "macs"),
            "operators": operator_set(path),
            **accuracy_figures(logits[name], labels, classes, ref_predicted),
            "latency_ms": by_batch[str(batches[0])],
            "latency_ms_by_batch": by_batch,
            "throughput_ips": int(largest) * 1000.0 / by_batch[largest]["p50"],
            "latency_ratio_to_reference": {str(b): paired_ratio(timings[b][name], timings[b][reference])
                                           for b in batches},
        }
        if reference != TEACHER:
            models[name]["agreement_with_reference"] = models[name].pop("agreement_with_teacher")
    add_ratios(models, reference)
    correct = {n: logits[n].argmax(1) == labels for n in paths}
    comparisons = [{"model": a, "against": b, **mcnemar(correct[a], correct[b])}
                   for a, b in pairs if a in paths and b in paths]
    runtimes = compare_runtimes(paths, images, labels, logits, cfg.threads, cfg.warmup, min(cfg.runs, OTHER_RUNTIME_RUNS))
    return {"environment": environment(cfg.threads), "comparisons": comparisons, "runtimes": runtimes,
            "benchmark": {"device": "cpu", "threads": cfg.threads, "batch_sizes": batches, "warmup": cfg.warmup,
                          "runs": cfg.runs, "calls_per_sample": cfg.calls_per_sample, "processes": cfg.processes,
                          "reference": reference, "interleaved": True, "ort_spinning": False,
                          "contention": measured.contention,
                          "input": [None, *images.shape[1:]]},
            "models": models}


def time_latency(paths: dict[str, Path], images: np.ndarray, batches: list[int], cfg: BenchConfig) -> Timings:
    """Interleaved timings of every model at every batch size, as bench.* says, in fresh processes."""
    return time_in_fresh_processes(paths, images, batches, cfg.threads, cfg.warmup, cfg.runs,
                                   cfg.calls_per_sample, cfg.processes)


def add_ratios(models: dict[str, dict], reference: str) -> None:
    """vs_reference: how many times smaller, faster (same-run paired ratio at batch 1) and cheaper."""
    ref = models[reference]
    for m in models.values():
        first = next(iter(m["latency_ratio_to_reference"]))
        m["vs_reference"] = {
            "size_x": ref["onnx_bytes"] / m["onnx_bytes"],
            "speed_x": 1.0 / m["latency_ratio_to_reference"][first],
            "macs_x": ref["macs"] / m["macs"] if ref["macs"] and m["macs"] else None,
            "accuracy_delta": m["accuracy"] - ref["accuracy"],
        }
