"""The run directory: atomic writes, hashes and the manifest (the run's lock file; artifact
names are in compress.core.roster).

Every file is written to a temporary name in the same folder and renamed into place, so a run
killed at any moment leaves either the old file or the new one, never half of one. The file then
gets the mode the user's umask gives (0644 under 022), not mkstemp's private 0600: a deploy/
folder is handed to other people.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compress.core.roster import MANIFEST


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# the names atomic_path's temporary files get (mkstemp: ".<final name>.<8 random chars><suffix>"),
# so a later run can recognise what a killed one left (compress.core.lock.remove_debris)
TEMP_NAME = re.compile(r"^\.(?P<final>.+)\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


@contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success it is renamed to `final`, else removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=suffix or final.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def _discarded(suffix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="compress-rank-") as scratch:
        yield Path(scratch) / f"discarded{suffix}"


class RunDir:
    """A run directory at `root`; paths are always given relative to it."""

    def __init__(self, root: str | Path, writer: bool = True):
        self.root = Path(root)
        self.writer = writer  # False on torch.distributed ranks other than 0: they read, rank 0 writes

    def path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return self.path(rel).is_file()

    def atomic(self, rel: str, suffix: str = ""):
        """Yield a temporary path next to `rel`; on success it is renamed to `rel` (on a
        non-writer, a scratch path whose content is discarded)."""
        if not self.writer:
            return _discarded(Path(rel).suffix + suffix)
        return atomic_path(self.path(rel), suffix)

    def write_text(self, rel: str, text: str) -> None:
        with self.atomic(rel) as tmp:
            tmp.write_text(text)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_text(rel, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")

    def read_json(self, rel: str) -> Any:
        return json.loads(self.path(rel).read_text())

    def sha256(self, rel: str) -> str:
        return sha256_file(self.path(rel))

    def load_manifest(self) -> dict:
        """The manifest, or {} when it is missing, unreadable or not an object (that only costs
        a full rerun, which rewrites it)."""
        if not self.exists(MANIFEST):
            return {}
        try:
            manifest = self.read_json(MANIFEST)
        except (json.JSONDecodeError, UnicodeDecodeError):
            manifest = None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("stages", {}), dict):
            logging.getLogger("compress").warning("%s is not a compress manifest; every stage will run again",
                                                  self.path(MANIFEST))
            return {}
        return manifest
