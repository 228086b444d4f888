"""Multi-process training on the CPU with the gloo backend, started by torchrun as users start
it: two torchrun "nodes" on 127.0.0.1 killed mid-training resume under `--nproc 2` from their last
saved epoch and write the run directory a 1-process run writes; 2 processes x batch b train like
1 process x batch 2b."""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from click.testing import CliRunner
from helpers import tiny_overrides
from tqdm import tqdm

from compress.core.config import Config
from compress.core.data import ImageSet, load_dataset
from compress.core.loader import TrainLoader
from compress.core.loop import train_one_epoch
from compress.core.rundir import RunDir
from compress.pipeline.cli import main
from compress.pipeline.runner import STAGES, stage_key

pytestmark = pytest.mark.slow

FAST = dict(distill__baseline="false", prune__enabled="false", quantize__enabled="false", bench__runs="2",
            bench__processes="1", teacher__epochs="2", distill__epochs="2")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
CLI = ["-m", "compress.pipeline.cli", "run", "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_args(data, out, **extra) -> list[str]:
    args = ["--data", str(data), "--out", str(out)]
    for item in tiny_overrides(**{**FAST, **extra}):
        args += ["--set", item]
    return args


def files(out) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "cache" not in p.parts)


def history(out, stage: str) -> list[float]:
    return [h["loss"] for h in json.loads((out / "manifest.json").read_text())["stages"][stage]["summary"]["history"]]


def run(command: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def train_losses(rank: int, world: int, batch: int, port: int, out) -> None:
    """Two epochs of the real loader and epoch loop; under `world` > 1, DDP over gloo."""
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    images = ImageSet([torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8) for _ in range(24)],
                      torch.arange(24) % 3, [f"img{i}" for i in range(24)])
    cfg = replace(Config().data, resize=20, crop=16, batch_size=batch)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 3))  # no BatchNorm: ranks see b images each
    trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    with TrainLoader(images, cfg, 1, augment="light", rank=rank, world=world) as loader:
        for epoch in range(2):
            losses.append(train_one_epoch(trained, lambda m, x, y, _i: torch.nn.functional.cross_entropy(m(x), y),
                                          optimizer, loader.epoch(epoch), torch.device("cpu"),
                                          tqdm(disable=True), () if world > 1 else None))
    if rank == 0:
        out.write_text(json.dumps(losses))
    if world > 1:
        dist.destroy_process_group()


def test_two_processes_at_batch_b_train_like_one_at_batch_2b(tmp_path):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    train_losses(0, 1, 8, 0, one)
    port = free_port()
    # spawn, not fork: a process forked after OpenMP ran (the 1-process half above) can deadlock
    torch.multiprocessing.spawn(train_losses, args=(2, 4, port, two), nprocs=2)
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    # the same 8 images per step (rank 0 takes batch 2k, rank 1 batch 2k+1 of the order) and
    # gradients averaged over them; only the order of floating-point sums differs
    assert b == pytest.approx(a, rel=1e-5), (a, b)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun's workers start sessions of their own, so a process
    group kill would miss them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(procs: list[subprocess.Popen]) -> None:
    """Every process of a run, at once."""
    pids = [pid for p in procs for pid in (p.pid, *descendants(p.pid))]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for p in procs:
        p.wait()


def test_a_killed_two_node_run_resumes_under_nproc_and_writes_what_one_process_writes(digits_folder, tmp_path):
    """Two torchrun "nodes" of one process each on 127.0.0.1 (the multi-node path) are killed
    mid-training; `compress run --nproc 2` (the standalone path) resumes from the last saved epoch
    and writes the files a 1-process run writes. The training stages' keys carry the process count,
    so a 1-process run directory is never reused for 2 processes (2 x data.batch_size per step is
    another result). One launch of each kind: every torchrun start is three imports of the pipeline."""
    # 30 epochs: one tiny epoch takes a fraction of a second, so with 6 the run could finish between the
    # poll that saw epoch 1 saved and the kill
    epochs = 30
    one, two = tmp_path / "one", tmp_path / "two"
    result = CliRunner().invoke(main, ["run", "--quiet", *run_args(digits_folder, one, teacher__epochs=str(epochs))])
    assert result.exit_code == 0, result.output
    args = run_args(digits_folder, two, teacher__epochs=str(epochs))
    common = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
              "--rdzv-id=compress-test"]
    nodes = [subprocess.Popen([*TORCHRUN, *common, *CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]
    state = two / "checkpoints" / "teacher.training.pt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        saved = torch.load(state, weights_only=True)["epoch"] if state.is_file() else -1
        if saved >= 1:
            break
        time.sleep(0.05)
    else:
        kill_tree(nodes)
        pytest.fail("the two-node run saved no epoch in time")
    kill_tree(nodes)
    killed_at = torch.load(state, weights_only=True)["epoch"] + 1
    assert killed_at < epochs
    resumed = run([sys.executable, *CLI[:3], "--nproc", "2", *args])
    assert f"teacher: resuming after epoch {killed_at} of {epochs}" in resumed.stderr
    assert not state.exists() and files(two) == files(one) and (two / "deploy" / "model.onnx").is_file()
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (one, two))
    assert m2["executed"] == m1["executed"] and (m1["processes"], m2["processes"]) == (1, 2)
    assert len(history(two, "teacher")) == epochs and all(math.isfinite(v) for v in history(two, "distill"))
    for stage in ("teacher", "distill"):  # trained on every rank: keyed by the process count
        assert m1["stages"][stage]["key"] != m2["stages"][stage]["key"]
    # and by nothing else: the 1-process settings keyed as 2 processes give the 2-process teacher's key
    cfg = Config.from_dict(m1["config"])
    teacher = next(st for st in STAGES if st.name == "teacher")
    data = load_dataset(cfg.data, cfg.seed)
    assert stage_key(teacher, cfg, RunDir(one), data, processes=2) == m2["stages"]["teacher"]["key"]
    assert stage_key(teacher, cfg, RunDir(one), data) == m1["stages"]["teacher"]["key"]
