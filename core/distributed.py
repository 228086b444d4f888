"""Training on several processes (GPUs, or CPU processes with gloo) with torch.distributed.

A run is distributed when torchrun started it (`torchrun --nproc-per-node N -m
compress.pipeline.cli run ...`, or `compress run --nproc N`, which launches torchrun's standalone
mode): WORLD_SIZE > 1 in the environment. Then every rank loads the data and runs the training
stages together (DistributedDataParallel averages the gradients; each rank takes a disjoint
shard of the seeded batch order, compress.core.loader); rank 0 alone writes files and runs the
stages that do not train (export, quantization, benchmarks, report), the others wait at a
barrier. Backend: NCCL on CUDA, gloo on the CPU.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

TIMEOUT = datetime.timedelta(minutes=60)  # rank 0 alone may export, quantize and benchmark meanwhile


def requested() -> bool:
    """torchrun (or a similar launcher) asked for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank: from the process group, or before it is joined from torchrun's RANK."""
    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if requested() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def start(device: torch.device) -> torch.device:
    """Join the process group torchrun describes; returns this rank's device (cuda:LOCAL_RANK)."""
    if not requested():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return device


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def from_main(obj):
    """Rank 0's value of `obj` on every rank (a decision only rank 0 can make, e.g. from files)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(total: torch.Tensor, count: int) -> float:
    """sum(total) / sum(count) over all ranks (e.g. an epoch's mean loss)."""
    if not active():
        return float(total) / max(count, 1)
    both = torch.stack([total.detach().float(), torch.tensor(float(count), device=total.device)])
    dist.all_reduce(both)
    return float(both[0]) / max(float(both[1]), 1.0)


def average_gradients(modules) -> None:
    """All-reduce the gradients of modules DistributedDataParallel does not wrap (FitNets
    regressors and the like, trained beside the model by the same optimizer)."""
    if not active():
        return
    for module in modules:
        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= world_size()


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's `rows` (same trailing shape, any count) concatenated in rank order, on every rank."""
    if not active():
        return rows
    counts = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(world_size())]
    dist.all_gather(counts, torch.tensor([len(rows)], device=rows.device))
    most = int(max(c.item() for c in counts))
    padded = torch.zeros((most, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[:len(rows)] = rows
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:int(c.item())] for part, c in zip(parts, counts, strict=True)])


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Rank 0's parameters in `module` on every rank (a head fit the same way everywhere, made exact)."""
    if active():
        for p in module.parameters():
            dist.broadcast(p.data, src=0)
