"""One import package, `compress`: what a wheel installs, provenance from the build, and a run
from a working directory full of names that could shadow ours."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_installs_only_the_compress_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("compress_distill-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"compress"}
    for sub in ("core", "stages", "methods", "methods/kd", "exports", "measure", "reporting", "gate", "pipeline"):
        assert f"compress/{sub}/__init__.py" in names
    assert "compress/_version.py" in names and not any(n.startswith(("compress/tests/", "compress/benchmarks/")) for n in names)


def test_commit_comes_from_the_build_not_the_working_directory(tmp_path, monkeypatch):
    from compress import _version
    from compress.core.provenance import git_commit, version
    other = tmp_path / "user-project"
    other.mkdir()
    git = ["git", "-C", str(other), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "theirs"], check=True)
    theirs = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(other)
    built = _version.commit_id[1:] if _version.commit_id else None
    assert version() == _version.version and git_commit() == built
    assert not (built and theirs.startswith(built))


def test_importing_compress_loads_no_torch():
    code = "import sys, compress, compress.measure.latency_worker; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_run_from_a_hostile_working_directory(tmp_path, digits_folder):
    """A `benchmarks/` package, a `benchmarks.py` and a `compress.py` in the working directory:
    none of them is imported (the marker files stay absent) and the run succeeds."""
    cwd = tmp_path / "hostile"
    (cwd / "benchmarks").mkdir(parents=True)
    marker = tmp_path / "marker"
    for name in ("benchmarks/__init__.py", "benchmarks.py", "compress.py"):
        (cwd / name).write_text(f"open({str(marker)!r} + '-' + {name.replace('/', '_')!r}, 'w').close()\n")
    args = ["run", "--data", str(digits_folder), "--out", str(tmp_path / "run"), "--quiet"]
    for item in tiny_overrides(distill__baseline="false", prune__enabled="false", quantize__enabled="false",
                               export__ort="false"):
        args += ["--set", item]
    compress_cli = Path(sys.executable).parent / "compress"
    done = subprocess.run([str(compress_cli), *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not list(tmp_path.glob("marker*"))
    assert (tmp_path / "run" / "report.json").is_file()


def test_train_throughput_benchmark_prints_both_rates_and_their_ratio():
    script = ROOT / "benchmarks" / "train_throughput.py"
    out = subprocess.run([sys.executable, str(script), "--crop", "16", "--batch", "4", "--steps", "1"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in out[2:]}
    assert set(rows) == {"resnet50", "resnet18"}
    for fed, top, ratio in rows.values():
        # the rates are printed to 0.1, the ratio from the unrounded rates: allow what rounding moves it
        slack = (0.05 / top + 0.05 / fed) * fed / top + 0.01
        assert fed > 0 and top > 0 and abs(ratio - fed / top) <= slack
