"""Session fixtures (helpers.py holds the plain functions tests import)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import write_digits

# compress's own caches (decoded images, the remembered fitness checks, the A/B reference runs) go to
# a folder of this session, never the user's ~/.cache: the suite measures what a fresh machine pays
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="compress-test-cache-")


def pytest_configure(config) -> None:
    """Under pytest-xdist (the default: `-n auto` in pyproject.toml) each worker takes its share of
    the cores for torch, so two workers on two cores do not run four threads: the suite's Python
    work (export, hashing, process start-up) overlaps, the arithmetic does not oversubscribe."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the processes tests start take the same share


# Seconds each test file took (setup + call + teardown, summed), measured on 2 cores; the slowest
# files start first. xdist hands whole files to the workers in collection order, so a 60-s file that
# came last in alphabetical order ran alone while the other worker sat idle (longest-first is the
# classic LPT rule for parallel machines). Rewrite it after a change to the slow tests with
# `python -m pytest -q --store-file-seconds`; a file missing from it runs after the known ones.
FILE_SECONDS = Path(__file__).with_name("file_seconds.json")


def pytest_addoption(parser) -> None:
    parser.addoption("--store-file-seconds", action="store_true",
                     help=f"write each test file's seconds to {FILE_SECONDS.name} (the order the next runs start files in)")


def pytest_collection_modifyitems(config, items) -> None:
    seconds = json.loads(FILE_SECONDS.read_text()) if FILE_SECONDS.is_file() else {}
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0.0))  # stable: files stay whole


_measured: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report) -> None:
    _measured[report.nodeid.split("::")[0]] += report.duration


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)
    if session.config.getoption("store_file_seconds") and not hasattr(session.config, "workerinput"):
        ordered = dict(sorted(((f, round(s, 1)) for f, s in _measured.items()), key=lambda kv: -kv[1]))
        FILE_SECONDS.write_text(json.dumps(ordered, indent=1) + "\n")


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits_split"))
