"""The run directory against two processes, kills, umasks and a hostile world: one lock, the
umask's file modes, no debris after a rerun, and one-line errors where tracebacks were."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import cli_args, tiny_overrides, write_digits

from compress.core.config import Config
from compress.core.lock import RunLock
from compress.core.rundir import atomic_path
from compress.pipeline.cli import main
from compress.pipeline.runner import run_pipeline
from compress.stages.teacher import TeacherStage

HOLD = """
import sys, time
from compress.core.lock import RunLock
lock = RunLock(sys.argv[1]).__enter__()
print("held", flush=True)
time.sleep(60)
"""


def one_error_line(result) -> str:
    # warnings said before the work began (e.g. the tiny config's student is as big as its teacher) aside
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip() and "WARNING:" not in ln]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def teacher_only(data: Path, **extra):
    return Config.from_toml(None, tuple(tiny_overrides(data__path=str(data), **extra)))


def test_second_process_fails_at_once_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path, digits_folder):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        result = CliRunner().invoke(main, cli_args(digits_folder, out))
        seconds = time.perf_counter() - t0
        line = one_error_line(result)
        assert f"pid {holder.pid}" in line and "in use" in line and seconds < 5
    finally:
        holder.kill()  # like kill -9: the kernel drops the lock with the process
        holder.wait()
    with RunLock(out):  # the stale lock is taken over
        info = json.loads((out / ".compress.lock.json").read_text())
        assert info["pid"] == os.getpid()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_get_the_umask_mode(tmp_path, umask, mode):
    import compress.core.rundir as rundir
    old = os.umask(umask)
    try:
        rundir.FILE_MODE = 0o666 & ~rundir._umask()
        with atomic_path(tmp_path / "deploy" / "model.onnx") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
        rundir.FILE_MODE = 0o666 & ~rundir._umask()
    assert (tmp_path / "deploy" / "model.onnx").stat().st_mode & 0o777 == mode


def test_a_rerun_removes_what_a_killed_run_left(tmp_path, digits_folder):
    cfg, out = teacher_only(digits_folder), tmp_path / "run"
    run_pipeline(cfg, out, quiet=True, stages=(TeacherStage(),))
    debris = [out / "onnx" / ".student.onnx.k2j3h4ab.onnx", out / "checkpoints" / ".teacher.pt.abc_1234.pt",
              out / "deploy" / ".model.onnx.x1y2z3w4.onnx", out / ".manifest.json.zzzzzzzz.json"]
    own = [out / ".gitignore", out / "checkpoints" / ".keep"]  # a user's own hidden files stay
    for path in own:
        path.write_text("mine")
    for path in debris:  # what `kill -9` during export, training or packaging leaves
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"" if "deploy" in str(path) else b"partial")
    (out / "onnx" / "tmpq8x_ab12").mkdir()
    (out / "onnx" / "tmpq8x_ab12" / "qdq_u8s8.onnx").write_bytes(b"partial")
    manifest = run_pipeline(cfg, out, quiet=True, stages=(TeacherStage(),))
    assert manifest["skipped"] == ["teacher"]
    assert not any(p.exists() for p in debris) and not (out / "onnx" / "tmpq8x_ab12").exists()
    assert all(p.read_text() == "mine" for p in own)
    assert sorted(p.name for p in (out / "deploy").iterdir()) == []


def test_stale_latency_folders_of_dead_processes_are_removed(tmp_path, monkeypatch):
    import tempfile

    from compress.measure import latency_worker
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, alive = tmp_path / f"compress-latency-{dead.pid}-abc", tmp_path / f"compress-latency-{os.getpid()}-def"
    stale.mkdir()
    alive.mkdir()
    latency_worker.remove_stale_folders()
    assert not stale.exists() and alive.exists()


@pytest.mark.parametrize("make_out, needle", [
    (lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "run", "is a file"),
    (lambda tmp: Path("/proc/compress-run"), "cannot write"),
])
def test_unwritable_output_is_one_line_before_any_decoding(tmp_path, digits_folder, monkeypatch, make_out, needle):
    import compress.core.data as data_mod
    monkeypatch.setattr(data_mod, "load_folder", lambda *a, **k: pytest.fail("decoded data before checking --out"))
    line = one_error_line(CliRunner().invoke(main, cli_args(digits_folder, make_out(tmp_path))))
    assert needle in line


def test_full_disk_is_one_line_naming_the_place(tmp_path, digits_folder, monkeypatch):
    from compress.core.rundir import RunDir

    def full(self, rel, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path(rel)))
    monkeypatch.setattr(RunDir, "write_json", full)
    line = one_error_line(CliRunner().invoke(main, cli_args(digits_folder, tmp_path / "run",
                                                            distill__baseline="false", prune__enabled="false")))
    assert "disk is full" in line and "manifest.json" in line


@pytest.mark.parametrize("key, value, needle", [
    ("teacher.lr", "nan", "teacher.lr"), ("distill.lr", "-1", "distill.lr"), ("data.std", "[0.2, 0, 0.2]", "data.std"),
    ("distill.epochs", "0", "untrained"), ("teacher.epochs", "0", "untrained"),
])
def test_bad_values_are_refused_before_any_work(tmp_path, digits_folder, key, value, needle):
    out = tmp_path / "run"
    line = one_error_line(CliRunner().invoke(main, cli_args(digits_folder, out) + ["--set", f"{key}={value}"]))
    assert needle in line and not out.exists()


def test_corrupt_training_state_is_a_warning_and_a_fresh_start(tmp_path, digits_folder):
    cfg, out = teacher_only(digits_folder, teacher__epochs=2), tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "teacher.training.pt").write_bytes(b"PK\x03\x04 truncated")
    manifest = run_pipeline(cfg, out, quiet=True, stages=(TeacherStage(),))
    assert len(manifest["stages"]["teacher"]["summary"]["history"]) == 2


def test_a_manifest_that_is_not_an_object_only_costs_a_rerun(tmp_path, digits_folder):
    cfg, out = teacher_only(digits_folder), tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text("[1, 2, 3]\n")
    assert run_pipeline(cfg, out, quiet=True, stages=(TeacherStage(),))["executed"] == ["teacher"]


def test_single_class_and_a_class_emptied_by_skipping_are_refused(tmp_path):
    one = write_digits(tmp_path / "one", classes=(0,), per_class=6)
    assert "at least two" in one_error_line(CliRunner().invoke(main, cli_args(one, tmp_path / "o1")))
    two = write_digits(tmp_path / "two", classes=(0, 1), per_class=6)
    for f in (two / "train" / "digit1").iterdir():
        f.write_bytes(b"not an image")
    result = CliRunner().invoke(main, cli_args(two, tmp_path / "o2") + ["--skip-bad-images"])
    line = result.output.strip().splitlines()[-1]  # after one warning per skipped image
    assert result.exit_code == 2 and line.startswith("error: ") and "Traceback" not in result.output
    assert "digit1" in line and "no readable training images" in line


def test_unsafe_checkpoint_message_says_what_to_do(tmp_path, digits_folder):
    import torchvision
    ckpt = tmp_path / "module.pt"
    torch.save(torchvision.models.resnet18(num_classes=3), ckpt)
    line = one_error_line(CliRunner().invoke(main, cli_args(digits_folder, tmp_path / "o",
                                                            teacher__checkpoint=str(ckpt))))
    assert "does not unpickle" in line and "state_dict" in line and "weights_only` set to `False" not in line


def test_predict_rejects_bad_labels_metadata_and_top_k(tmp_path, digits_folder):
    import onnx
    import torchvision

    from compress.exports.onnx import client_metadata, export_onnx
    model = tmp_path / "m.onnx"
    export_onnx(torchvision.models.resnet18(num_classes=3), model, 16, 17,
                client_metadata(["a", "b"], [0.5] * 3, [0.5] * 3, 20, 16))  # 2 labels, 3 outputs
    image = next((digits_folder / "val" / "digit0").iterdir())
    line = one_error_line(CliRunner().invoke(main, ["predict", str(model), str(image)]))
    assert "3 classes" in line and "2" in line
    proto = onnx.load(str(model))
    next(p for p in proto.metadata_props if p.key == "labels").value = "not json"
    onnx.save(proto, str(model))
    assert "labels" in one_error_line(CliRunner().invoke(main, ["predict", str(model), str(image)]))
    result = CliRunner().invoke(main, ["predict", str(model), str(image), "--top-k", "-1"])
    assert result.exit_code == 2 and "top-k" in result.output


def test_config_directory_is_named_as_such(tmp_path, digits_folder):
    line = one_error_line(CliRunner().invoke(main, cli_args(digits_folder, tmp_path / "o") + ["--config", str(tmp_path)]))
    assert "is a directory" in line


@pytest.mark.parametrize("target", ["openvino", "executorch"])
def test_a_target_runtime_that_is_not_installed_is_one_line(tmp_path, digits_folder, monkeypatch, target):
    import compress.exports.runtimes as runtimes
    monkeypatch.setattr(runtimes, "available", lambda runtime: False)
    out = tmp_path / "run"
    line = one_error_line(CliRunner().invoke(main, cli_args(digits_folder, out, deploy__target=target)))
    assert f"compress-distill[{target}]" in line and not out.exists()


def test_a_missing_litert_extra_is_one_line(tmp_path, digits_folder, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "litert_torch" else real(name, *a))
    out = tmp_path / "run"
    line = one_error_line(CliRunner().invoke(main, cli_args(digits_folder, out, deploy__target="litert")))
    assert "compress-distill[litert]" in line and "litert_torch" in line and not out.exists()


KILLED_DURING_EXPORT = """
import sys, time
from pathlib import Path
from compress.core import faults

def hang(path):  # the exporter has written the file under its temp name
    if Path(path).parent.name != "onnx":  # the fitness check's probe export (a temp folder), unless remembered
        return
    print("exported to temp", path, flush=True)
    time.sleep(120)

from compress.pipeline.cli import main
sys.argv = ["compress"] + sys.argv[1:]
with faults.injected("onnx.exported", hang):
    main()
"""


@pytest.mark.slow
def test_a_run_killed_during_export_leaves_nothing_after_the_rerun(tmp_path, digits_folder):
    """A real SIGKILL while the export stage has a temp file open in onnx/, then the same command
    again: it finishes, and no hidden temp file is left anywhere in the run directory."""
    import signal
    out = tmp_path / "run"
    args = cli_args(digits_folder, out, distill__baseline="false", prune__enabled="false", export__ort="false")[1:]
    victim = subprocess.Popen([sys.executable, "-c", KILLED_DURING_EXPORT, "run", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    line = victim.stdout.readline()
    assert "exported to temp" in line
    temp = Path(line.split("exported to temp ", 1)[1].strip())
    assert temp.exists() and temp.parent == out / "onnx"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    result = CliRunner().invoke(main, ["run", *args])
    assert result.exit_code == 0, result.output
    hidden = [p for p in out.rglob(".*") if p.name not in (".compress.lock",)]
    assert hidden == [] and not temp.exists()


def test_a_layer_name_that_does_not_exist_is_one_line(tmp_path, digits_folder):
    out = tmp_path / "run"
    line = one_error_line(CliRunner().invoke(main, cli_args(digits_folder, out,
                                                            quantize__keep_float='["/layer9/Conv"]')))
    assert "/layer9/Conv" in line and "/conv_stem/Conv" in line and not out.exists()
