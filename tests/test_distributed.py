"""Multi-process training on the CPU with the gloo backend, started by torchrun as users start
it: a 2-process run writes the run directory a 1-process run writes; 2 processes x batch b
train like 1 process x batch 2b; two torchrun "nodes" on 127.0.0.1 complete a run."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from helpers import tiny_overrides

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


@pytest.fixture(scope="module")
def one_and_two(digits_folder, tmp_path_factory):
    """The same training, 1 process at batch 12 and 2 processes at batch 6 (BatchNorm synchronised)."""
    root = tmp_path_factory.mktemp("ddp")
    one, two = root / "one", root / "two"
    run([sys.executable, *CLI, *run_args(digits_folder, one, data__batch_size="12", train__sync_bn="true")])
    run([sys.executable, *CLI[:3], "--nproc", "2", "--quiet",
         *run_args(digits_folder, two, data__batch_size="6", train__sync_bn="true")])
    return one, two


def test_two_processes_write_what_one_process_writes(one_and_two):
    one, two = one_and_two
    assert files(two) == files(one)
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["executed"] == json.loads((one / "manifest.json").read_text())["executed"]


def test_two_processes_at_batch_b_train_like_one_at_batch_2b(one_and_two):
    one, two = one_and_two
    for stage in ("teacher", "distill"):
        a, b = history(one, stage), history(two, stage)
        assert len(a) == len(b) == 2
        # same images per step, gradients averaged over the same 12 images; only the order of
        # floating-point sums differs (all-reduce vs one batch)
        assert b == pytest.approx(a, rel=2e-3), (stage, a, b)


def test_two_nodes_on_one_machine_complete_a_run(digits_folder, tmp_path):
    port, out = free_port(), tmp_path / "nodes"
    common = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
              "--rdzv-id=compress-test"]
    procs = [subprocess.Popen([*TORCHRUN, *common, *CLI, *run_args(digits_folder, out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert (out / "report.json").is_file() and (out / "deploy" / "model.onnx").is_file()
