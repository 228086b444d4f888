"""Memory and speed of the training data path at scale, for each `data.cache` mode.

Writes a synthetic ImageFolder of JPEGs of a realistic size (500x375, ~quality 90, smooth
shapes plus noise so they compress like photos) at two sizes, then, for each size and mode, in a
fresh process: loads the dataset as `compress run` does (resize 256), runs one epoch of the real
training loader (DataLoader, light augmentation, 224-px crops, `--workers` processes) and reports
peak RSS of the main process and of the largest worker, the time to load (decode or build the
cache) and the loader's images/s. Then it measures what the student's training step consumes
(ResNet18, batch 32, 224 px, fp32 on this CPU, random tensors) so the loader can be compared with
its consumer in the same run.

    python benchmarks/data_scale.py --root /tmp/compress-scale --sizes 2000 20000

Goal (issue "Real scale"): with `disk`, peak RSS does not grow with the number of images, and
the loader alone delivers at least 3x the images/s the student's step consumes.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

WIDTH, HEIGHT, CLASSES = 500, 375, 10


def write_images(root: Path, count: int, seed: int = 0) -> None:
    """`count` JPEGs split over CLASSES class folders under root (kept if already complete)."""
    from PIL import Image, ImageDraw
    done = root / f".complete-{count}"
    if done.is_file():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", (WIDTH, HEIGHT), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = rng.integers(0, WIDTH), rng.integers(0, HEIGHT)
            draw.ellipse([float(x0), float(y0), float(x0 + rng.integers(20, 200)), float(y0 + rng.integers(20, 200))],
                         fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        pixels = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (HEIGHT, WIDTH, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    done.touch()


def measure_loader(root: str, mode: str, workers: int, cache_dir: str) -> dict:
    """In this (fresh) process: load, then one epoch of training batches; peak RSS in MiB."""
    from dataclasses import replace

    from compress.core.config import Config
    from compress.core.data import load_dataset
    from compress.core.loader import TrainLoader
    cfg = replace(Config().data, path=root, resize=256, crop=224, batch_size=32, augment="crop_flip", cache=cast(Any, mode),
                  cache_dir=cache_dir, val_fraction=0.02, test_fraction=0.0)
    t0 = time.perf_counter()
    data = load_dataset(cfg, 0)
    load_s = time.perf_counter() - t0
    images = 0
    with TrainLoader(data.train, cfg, 0, augment="light", workers=workers) as loader:
        t0 = time.perf_counter()
        for batch in loader.epoch(0):
            images += len(batch.y)
        epoch_s = time.perf_counter() - t0
    return {"mode": mode, "images": images, "load_s": round(load_s, 1), "loader_images_per_s": round(images / epoch_s, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_worker_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def student_step_images_per_s(steps: int = 6, batch: int = 32) -> float:
    """Images/s of the student's training step (ResNet18, 224 px, fp32) on random tensors here."""
    import torch
    import torchvision
    model = torchvision.models.resnet18(num_classes=CLASSES).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, CLASSES, (batch,))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return batch / float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/compress-data-scale")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--modes", nargs="+", default=["memory", "disk", "none"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # root mode workers cache_dir
    args = parser.parse_args()
    if args.child:
        root, mode, workers, cache_dir = args.child
        print(json.dumps(measure_loader(root, mode, int(workers), cache_dir)))
        return
    rows = []
    for size in args.sizes:
        folder = Path(args.root) / f"jpegs-{size}"
        t0 = time.perf_counter()
        write_images(folder, size)
        print(f"{size} JPEGs ready in {folder} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        for mode in args.modes:
            cache_dir = str(Path(args.root) / f"cache-{size}")
            shutil.rmtree(cache_dir, ignore_errors=True)  # a cold cache: the first epoch builds it
            out = subprocess.run([sys.executable, __file__, "--child", str(folder), mode, str(args.workers), cache_dir],
                                 check=True, capture_output=True, text=True).stdout
            rows.append({"jpegs": size, **json.loads(out.strip().splitlines()[-1])})
            print(json.dumps(rows[-1]), file=sys.stderr)
    step = student_step_images_per_s()
    print(f"\nloader: one epoch of 224-px training crops, {args.workers} workers; student step (ResNet18, batch 32, "
          f"fp32, this CPU): {step:.1f} images/s\n")
    print("| JPEGs | data.cache | load s | peak RSS MiB (main) | peak RSS MiB (largest worker) | loader images/s "
          "| × student step |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['jpegs']:,} | {r['mode']} | {r['load_s']} | {r['peak_rss_mib']} | {r['peak_worker_rss_mib']} | "
              f"{r['loader_images_per_s']} | {r['loader_images_per_s'] / step:.1f} |")


if __name__ == "__main__":
    main()
