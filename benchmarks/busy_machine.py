"""Does the benchmark notice a busy machine? Times a run directory's ONNX models twice, quiet and
with a CPU hog beside them (one bounded busy loop per core, in other processes), and prints the
same-run speed ratios and the contention verdict of each. Prints figures; asserts nothing.

    python benchmarks/busy_machine.py runs/ci [--runs 300] [--processes 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from compress.core.config import Config
from compress.core.data import load_dataset
from compress.core.roster import TEACHER, all_models, onnx_path
from compress.measure.suite import benchmark_onnx

HOG = "import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass\n"


def measure(run: Path, runs: int, processes: int, hog_seconds: float = 0.0) -> dict:
    cfg = Config.from_dict(json.loads((run / "manifest.json").read_text())["config"])
    cfg.bench.runs, cfg.bench.processes = runs, processes
    data = load_dataset(cfg.data, cfg.seed)
    split = data.report_split
    paths = {n: run / onnx_path(n) for n in all_models(cfg)}
    hogs = [subprocess.Popen([sys.executable, "-c", HOG.format(seconds=hog_seconds)])
            for _ in range(os.cpu_count() or 1)] if hog_seconds else []
    try:
        return benchmark_onnx(paths, data.inputs(split, cfg.data).numpy(), data.split(split).labels.numpy(),
                              data.classes, cfg.bench, reference=TEACHER)
    finally:
        for h in hogs:
            h.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--processes", type=int, default=3)
    args = parser.parse_args()
    quiet = measure(args.run, args.runs, args.processes)
    seconds = quiet["benchmark"]["contention"]["seconds"] * 1.5 + 10  # the hog outlasts the timing
    loaded = measure(args.run, args.runs, args.processes, hog_seconds=seconds)
    print(f"{'model':16s} {'speed x quiet':>14s} {'speed x hogged':>15s} {'change':>8s}")
    for name, m in quiet["models"].items():
        a, b = m["vs_reference"]["speed_x"], loaded["models"][name]["vs_reference"]["speed_x"]
        print(f"{name:16s} {a:14.2f} {b:15.2f} {b / a - 1:+8.1%}")
    for label, r in (("quiet", quiet), ("hogged", loaded)):
        c = r["benchmark"]["contention"]
        print(f"{label}: busy={c['busy']} other processes {c['other_cpu_share']:.0%} of {c['cores']} cores, "
              f"steal {c['steal_share']:.1%}, spread between processes {c['process_spread']:.1%}"
              + (f" — {'; '.join(c['reasons'])}" if c["reasons"] else ""))


if __name__ == "__main__":
    main()
