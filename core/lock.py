"""One process at a time in a run directory (or a sweep's, or a benchmark's output folder).

The lock is an OS file lock (`filelock`, fcntl.flock on Linux and macOS) on `<dir>/.compress.lock`,
held for the whole command. The kernel drops it when the holder exits or is killed, so a lock
left by a `kill -9` is simply taken over by the next run. Who holds it (pid, host, start time,
command) is written beside it, in `.compress.lock.json`, so the second process can say so.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from compress.core.errors import CompressError
from compress.core.roster import LOCK

HOLDER = LOCK + ".json"


class RunLock:
    """`with RunLock(dir):` — exclusive use of `dir`, or one line naming the holder and exit 2."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock: FileLock | None = None

    def __enter__(self) -> RunLock:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise CompressError(f"{self.root} is in use by another compress process ({self._holder()}); "
                                "wait for it to finish or use another output directory") from None
        self._lock = lock
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv[:2])}
        (self.root / HOLDER).write_text(json.dumps(info) + "\n")
        return self

    def _holder(self) -> str:
        try:
            h = json.loads((self.root / HOLDER).read_text())
            return f"pid {h['pid']} on {h['host']}, started {h['started']}, `{h['command']}`"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def __exit__(self, *exc) -> None:
        (self.root / HOLDER).unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release()


def remove_debris(root: Path) -> list[str]:
    """Delete what a killed run left in `root` (call it holding the lock): hidden temp files from
    atomic writes (`.<name>.<random><suffix>`) and temp folders of the quantize stage (`onnx/tmp*`).
    Returns what was removed, relative to `root`."""
    import shutil
    removed = []
    if not root.is_dir():
        return removed
    for folder in [root, *(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]:
        for p in folder.iterdir():
            if p.is_file() and p.name.startswith(".") and p.name not in (LOCK, HOLDER):
                p.unlink(missing_ok=True)
                removed.append(str(p.relative_to(root)))
            elif p.is_dir() and folder.name == "onnx" and p.name.startswith("tmp"):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(str(p.relative_to(root)) + "/")
    return removed
