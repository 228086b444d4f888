"""Training images/s through compress's real loop and data path, against the bound: the same
model, batch and precision on random tensors already on the device, measured in the same run.
Prints both and their ratio per model (a ratio near 1 means the data path keeps up).

    python benchmarks/train_throughput.py --crop 64 --batch 16 --steps 4
    python benchmarks/train_throughput.py --crop 224 --batch 8 --steps 3 --device cuda
"""
from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from compress.core.config import DataConfig, TrainConfig
from compress.core.data import ImageSet
from compress.core.loader import TrainLoader, default_workers
from compress.core.loop import autocast, prepare, resolve_device, to_device, train_one_epoch
from compress.core.models import build_model
from compress.methods.recipe import make_optimizer


def synthetic_images(n: int, resize: int, classes: int, seed: int = 0) -> ImageSet:
    """`n` random uint8 images at the decoded size, as the in-memory cache holds them."""
    gen = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, resize, resize * 4 // 3), dtype=torch.uint8, generator=gen) for _ in range(n)]
    return ImageSet(images, torch.randint(0, classes, (n,), generator=gen), [f"synthetic[{i}]" for i in range(n)])


def loss_fn(model, x, y, _index):
    return torch.nn.functional.cross_entropy(model(x).float(), y)  # the teacher's CE, as methods/kd/logit.py has it


def through_pipeline(model, images: ImageSet, cfg: DataConfig, device, steps: int, workers: int) -> float:
    """images/s of train_one_epoch over the real batches: the pipeline's TrainLoader (DataLoader
    with `workers` processes, transforms.v2 crop + flip, uint8 to the device, normalised there)."""
    opt = make_optimizer(model.parameters(), TrainConfig(), 1e-3)
    with tqdm(disable=True) as bar, TrainLoader(images, cfg, 0, augment="light", device=device,
                                                workers=workers) as loader:
        warm = (b for _, b in zip(range(1), loader.epoch(0), strict=False))  # workers started, kernels chosen
        train_one_epoch(model, loss_fn, opt, warm, device, bar)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        batches = (b for _, b in zip(range(steps), loader.epoch(1), strict=False))
        train_one_epoch(model, loss_fn, opt, batches, device, bar)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def bound(model, cfg: DataConfig, classes: int, device, steps: int) -> float:
    """images/s of the same step on one random batch already on the device."""
    opt = make_optimizer(model.parameters(), TrainConfig(), 1e-3)
    x = to_device(torch.randn(cfg.batch_size, 3, cfg.crop, cfg.crop), device)
    y = torch.randint(0, classes, (cfg.batch_size,), device=device)
    for i in range(steps + 1):
        if i == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with autocast(device):
            loss = loss_fn(model, x, y, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=-1, help="DataLoader workers; -1 = the pipeline's default")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cfg = DataConfig(resize=args.crop * 8 // 7, crop=args.crop, batch_size=args.batch, augment="crop_flip")
    images = synthetic_images(args.batch * (args.steps + 1), cfg.resize, args.classes)
    workers = default_workers(args.workers, device, in_memory=True)
    print(f"device {device}, crop {args.crop}, batch {args.batch}, {args.steps} timed steps, "
          f"torch threads {torch.get_num_threads()}, loader workers {workers}")
    print(f"{'model':10s} {'pipeline img/s':>15s} {'bound img/s':>12s} {'ratio':>6s}")
    for arch in ("resnet50", "resnet18"):
        torch.manual_seed(0)
        model = prepare(build_model(arch, args.classes), device).train()
        fed = through_pipeline(model, images, cfg, device, args.steps, workers)
        top = bound(model, cfg, args.classes, device, args.steps)
        print(f"{arch:10s} {fed:15.1f} {top:12.1f} {fed / top:6.2f}")


if __name__ == "__main__":
    main()
