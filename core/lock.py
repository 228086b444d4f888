"""One process at a time in a run directory (or a sweep's, or a benchmark's output folder).

The lock is an OS file lock (`filelock`, fcntl.flock on Linux and macOS) on `<dir>/.compress.lock`,
held for the whole command. The kernel drops it when the holder exits or is killed, so a lock
left by a `kill -9` is simply taken over by the next run. Who holds it (pid, host, start time,
command) is written beside it, in `.compress.lock.json`, so the second process can say so.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from compress.core.errors import CompressError
from compress.core.roster import LOCK
from compress.core.rundir import TEMP_NAME

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


WRITTEN_FOLDERS = ("", "checkpoints", "onnx", "deploy", "deploy/openvino", "plots", "cache")


def remove_debris(root: Path) -> list[str]:
    """Delete what a killed run left in `root` (call it holding the lock): hidden temp files of
    atomic writes (`.<name>.<random><suffix>`) in the folders compress writes, and the quantize
    stage's temp folders (`onnx/tmp*`). Nothing else is touched, so `--out` may point at a folder
    with files of its own. Returns what was removed, relative to `root`."""
    import shutil
    removed = []
    for sub in WRITTEN_FOLDERS:
        folder = root / sub
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_file() and TEMP_NAME.match(p.name) and p.name not in (LOCK, HOLDER):
                p.unlink(missing_ok=True)
                removed.append(str(p.relative_to(root)))
            elif p.is_dir() and sub == "onnx" and re.fullmatch(r"tmp[a-z0-9_]{8}", p.name):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(str(p.relative_to(root)) + "/")
    return removed
