"""Training batches through a torch.utils.data.DataLoader: worker processes crop and augment
(torchvision.transforms.v2, compress.core.augment) while the model trains, uint8 crops travel
to the device (pinned memory on CUDA; a quarter of float32's bytes), and normalisation and
MixUp/CutMix run there on the whole batch.

Order and augmentation depend only on (seed, epoch): the batch sampler, which runs in the main
process, draws the epoch's permutation from them, and each sample is keyed by (epoch, index) so
a worker seeds its transforms from it. Worker count, persistent workers and resume change
nothing in the batches (tested). Under torch.distributed each rank takes every world-th batch of
the same permutation, so ranks see disjoint shards of one seeded order.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from compress.core.augment import batch_mixer, image_transform, seeded
from compress.core.config import DataConfig
from compress.core.data import ImageSet, center_crop, normalize
from compress.core.memory import release_free_memory

TRIM_EVERY = 4  # batches between malloc_trim calls (core/memory.py)

class TrainBatch(NamedTuple):
    x: torch.Tensor  # normalised float [N, 3, crop, crop], on the training device
    y: torch.Tensor  # class indices [N], or soft targets [N, C] after mixup/cutmix
    index: torch.Tensor  # type: ignore[assignment]  # positions in the train ImageSet (shadows tuple.index)


def epoch_order(count: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(count, generator=gen) if shuffle else torch.arange(count)


class EpochBatches(Sampler):
    """Batches of (epoch, index) keys in the seeded order of `epoch` (set before each pass); with
    `world` > 1, rank `rank` takes batches rank, rank + world, ... (equal counts: the tail that
    does not divide evenly is dropped, as DistributedSampler pads or drops)."""

    def __init__(self, count: int, batch_size: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1):
        self.count, self.batch_size, self.seed, self.shuffle = count, batch_size, seed, shuffle
        self.rank, self.world, self.epoch = rank, world, 0

    def _batches(self) -> list[list[int]]:
        order = epoch_order(self.count, self.seed, self.epoch, self.shuffle).tolist()
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.world > 1:
            batches = batches[:len(batches) // self.world * self.world][self.rank::self.world]
        return batches

    def __iter__(self):
        return iter([[(self.epoch, i) for i in batch] for batch in self._batches()])

    def __len__(self) -> int:
        batches = -(-self.count // self.batch_size)
        return batches // self.world if self.world > 1 else batches


class AugmentedCrops(TorchDataset):
    """(uint8 crop, label, index) for a key (epoch, index), augmented on a stream fixed by
    (seed, epoch, index)."""

    def __init__(self, images: ImageSet, transform, seed: int):
        self.images, self.transform, self.seed = images, transform, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        with seeded(self.seed, epoch, i):
            crop = self.transform(self.images.images[i])
        return crop, self.images.labels[i], i


def default_workers(requested: int, device: torch.device, in_memory: bool) -> int:
    """data.workers = -1: on a GPU, the cores this process may use; on the CPU, where the model's
    own threads use every core, none from memory (in-process) and one from disk or JPEGs (measured
    here: one loader process delivers ~25-50x what a ResNet18 step consumes on the CPU)."""
    if requested >= 0:
        return requested
    if device.type == "cpu":
        return 0 if in_memory else 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# native runtimes whose thread pools do not survive fork(): after one is loaded in this process
# (OpenVINO: a benchmark before the next run of a sweep, or the test suite), a forked loader worker
# crashed the process (SIGSEGV in the DataLoader's poll, 3 of 4 tries of the OpenVINO test then the
# worker test; 0 of 4 with forkserver, malloc_trim on). JAX, which the LiteRT converter (litert_torch)
# loads, runs thread pools too and warns that a fork after it "will likely lead to a deadlock"
FORK_UNSAFE = ("openvino", "jax")


def worker_start_method() -> str | None:
    """How loader workers start: the platform's default (fork on Linux: no copy of the images),
    or a clean forkserver once a FORK_UNSAFE runtime is in this process."""
    return "forkserver" if any(name in sys.modules for name in FORK_UNSAFE) else None


class TrainLoader:
    """One training run's batches: build once (workers start once and persist), then iterate
    `epoch(e)` for each epoch."""

    def __init__(self, data: ImageSet, cfg: DataConfig, seed: int, *, augment: str = "light", mixup: float = 0.0,
                 cutmix: float = 0.0, num_classes: int = 0, shuffle: bool = True, device: torch.device | None = None,
                 workers: int = 0, rank: int = 0, world: int = 1):
        self.cfg, self.seed, self.device = cfg, seed, device or torch.device("cpu")
        self.mixer = batch_mixer(mixup, cutmix, num_classes)
        self.sampler = EpochBatches(len(data), cfg.batch_size, seed, shuffle, rank, world)
        transform = image_transform(augment, cfg.augment, cfg.crop, center_crop)
        self.loader = DataLoader(AugmentedCrops(data, transform, seed), batch_sampler=self.sampler,
                                 num_workers=workers, pin_memory=self.device.type == "cuda",
                                 persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                                 multiprocessing_context=worker_start_method() if workers > 0 else None)
        self._sigchld = signal.getsignal(signal.SIGCHLD) if workers > 0 else None

    def __len__(self) -> int:
        return len(self.sampler)

    def close(self) -> None:
        """Stop persistent worker processes now rather than at garbage collection: a worker left
        running past its training run outlives the stage and receives signals meant for others."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None
        if self._sigchld is not None and threading.current_thread() is threading.main_thread():
            # the DataLoader's SIGCHLD handler checks on its workers whenever any child exits; once
            # they are gone it crashed the process (SIGSEGV) when a later subprocess (the latency
            # workers) exited, so the handler that was there before goes back
            signal.signal(signal.SIGCHLD, self._sigchld)
            from torch.utils.data._utils import signal_handling
            signal_handling._SIGCHLD_handler_set = False

    def __enter__(self) -> TrainLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def epoch(self, epoch: int) -> Iterator[TrainBatch]:
        self.sampler.epoch = epoch
        for step, (crops, labels, index) in enumerate(self.loader):
            if step % TRIM_EVERY == TRIM_EVERY - 1:
                release_free_memory()  # batch buffers freed into the heap go back to the OS
            x = normalize(crops.to(self.device, non_blocking=True), self.cfg.mean, self.cfg.std)
            y = labels.to(self.device, non_blocking=True)
            if self.mixer is not None:
                with seeded(self.seed, epoch, step, -1):
                    x, y = self.mixer(x, y)
            yield TrainBatch(x, y, index)


def train_batches(data: ImageSet, cfg: DataConfig, seed: int, epoch: int, shuffle: bool = True,
                  augment: str = "light", mixup: float = 0.0, cutmix: float = 0.0,
                  num_classes: int = 0) -> Iterator[TrainBatch]:
    """One epoch's batches on the CPU, in-process: for callers that need a single pass
    (calibration, gradients for pruning importance, tests)."""
    loader = TrainLoader(data, cfg, seed, augment=augment, mixup=mixup, cutmix=cutmix, num_classes=num_classes,
                         shuffle=shuffle)
    return loader.epoch(epoch)
