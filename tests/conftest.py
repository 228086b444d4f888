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


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits_split"))
