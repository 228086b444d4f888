"""Session fixtures (helpers.py holds the plain functions tests import)."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_digits


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits_split"))
