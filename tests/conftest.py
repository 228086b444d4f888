"""Session fixtures (helpers.py holds the plain functions tests import)."""
from __future__ import annotations

import os
import shutil
import tempfile
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


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits_split"))
