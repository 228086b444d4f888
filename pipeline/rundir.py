"""The run directory: fixed artifact names, atomic writes and the manifest (the lock file).

Every file is written to a temporary name in the same folder and renamed into place, so a run
killed at any moment leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

MANIFEST = "manifest.json"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
EXPORT_INFO = "onnx/models.json"
QUANTIZE_INFO = "onnx/quantize.json"



def checkpoint_path(name: str) -> str:
    return f"checkpoints/{name}.pt"


def training_state_path(name: str) -> str:
    """Per-epoch training state, kept only while training is unfinished (for resume)."""
    return f"checkpoints/{name}.training.pt"


def onnx_path(name: str) -> str:
    return f"onnx/{name}.onnx"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success it is renamed to `final`, else removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=suffix or final.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class RunDir:
    """A run directory at `root`; paths are always given relative to it."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return self.path(rel).is_file()

    def atomic(self, rel: str, suffix: str = ""):
        """Yield a temporary path next to `rel`; on success it is renamed to `rel`."""
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
        if not self.exists(MANIFEST):
            return {}
        try:
            return self.read_json(MANIFEST)
        except json.JSONDecodeError:
            return {}  # an unreadable manifest only costs a full rerun
