"""Issue 4's deployment targets, measured on a finished run directory. Prints figures and a
verdict per target; it does not assert, it measures (exit status 0 either way).

Targets (same CPU, same thread count, batch 1):
  - the deployable ONNX file is >= 20x smaller than the teacher's;
  - its p50 latency is >= 6x lower than the teacher's (paired per-round ratios, interleaved);
  - its val accuracy (through ONNX Runtime) is within 1 point of the fp32 distilled student.

    python benchmarks/deploy_targets.py runs/hym [--runs 200] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from compress.core.budget import accuracy_drop
from compress.core.config import Config
from compress.core.data import load_dataset
from compress.core.documents import QuantizeDecision
from compress.measure.suite import benchmark_onnx

SIZE_X, SPEED_X, MAX_DROP_POINTS = 20.0, 6.0, 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--runs", type=int, default=200, help="interleaved rounds per batch size")
    parser.add_argument("--threads", type=int, default=None, help="ORT threads (default: the run's bench.threads)")
    args = parser.parse_args()
    manifest = json.loads((args.run / "manifest.json").read_text())
    deployable = QuantizeDecision.read(args.run / "onnx/quantize.json").deployable
    cfg = Config.from_dict(manifest["config"])
    cfg.bench.runs, cfg.bench.batch_sizes = args.runs, [1]
    if args.threads:
        cfg.bench.threads = args.threads
    data = load_dataset(cfg.data, cfg.seed)
    names = ["teacher", "student"] + ([deployable] if deployable != "student" else [])
    paths = {n: args.run / f"onnx/{n}.onnx" for n in names}
    result = benchmark_onnx(paths, data.val_inputs(cfg.data).numpy(), data.val.labels.numpy(), data.classes,
                            cfg.bench, reference="teacher", root=args.run)
    env, models = result["environment"], result["models"]
    d, t, s = models[deployable], models["teacher"], models["student"]
    size_x, speed_x = d["vs_reference"]["size_x"], d["vs_reference"]["speed_x"]
    drop = accuracy_drop(s["accuracy"], d["accuracy"])
    print(f"CPU {env['cpu']} ({', '.join(env['isa'])}), {cfg.bench.threads} threads, {args.runs} interleaved rounds")
    print(f"teacher {t['onnx_bytes'] / 1e6:.2f} MB, p50 {t['latency_ms']['p50']:.2f} ms, acc {t['accuracy']:.4f}")
    print(f"student (fp32 distilled) {s['onnx_bytes'] / 1e6:.2f} MB, p50 {s['latency_ms']['p50']:.2f} ms, acc {s['accuracy']:.4f}")
    print(f"deployable = {deployable}: {d['onnx_bytes'] / 1e6:.2f} MB, p50 {d['latency_ms']['p50']:.2f} ms, acc {d['accuracy']:.4f}")
    for label, ok, figure in ((f">= {SIZE_X:g}x smaller", size_x >= SIZE_X, f"{size_x:.1f}x"),
                              (f">= {SPEED_X:g}x faster at p50 batch 1", speed_x >= SPEED_X, f"{speed_x:.2f}x"),
                              (f"within {MAX_DROP_POINTS:g} pt of the fp32 student", drop <= MAX_DROP_POINTS,
                               f"{-drop:+.2f} pts")):
        print(f"  {'MET ' if ok else 'MISS'} {label}: {figure}")


if __name__ == "__main__":
    main()
