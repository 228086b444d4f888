"""Where decoded images live between epochs (`data.cache`):

- memory: a list of uint8 tensors (the fastest; the whole decoded set must fit in RAM);
- disk:   decoded once into one uint8 file per split under `data.cache_dir`, keyed by the data
          fingerprint (file list, sizes, mtimes, split, resize), and read back image by image with
          `os.pread`: nothing is memory-mapped, so the process's RSS does not grow with the set;
          the OS page cache keeps hot files fast without counting against the process;
- none:   nothing kept; each read decodes the file again (for sets read once, or no spare disk);
- auto:   memory when the decoded set needs under a quarter of the RAM now available, else disk.

All three are read-only sequences of uint8 CHW tensors with the same pixels, so stage results do
not depend on the mode (tested).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

CHUNK = 256  # images decoded at a time while writing the disk cache (bounds the memory it needs)
MEMORY_SHARE = 0.25  # auto: memory when the decoded set needs less than this share of available RAM


def available_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def estimated_bytes(count: int, resize: int, aspect: float = 4 / 3) -> int:
    """Decoded size of `count` images with shorter side `resize` (photos are ~4:3)."""
    return int(count * 3 * resize * resize * aspect)


def resolve_mode(mode: str, count: int, resize: int) -> str:
    if mode != "auto":
        return mode
    return "memory" if estimated_bytes(count, resize) < MEMORY_SHARE * available_ram() else "disk"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "compress"


class DiskImages(Sequence):
    """Images stored back to back in one uint8 file; `index` rows are (offset, c, h, w)."""

    def __init__(self, data_file: Path, index: np.ndarray):
        self.data_file, self.rows = Path(data_file), index
        self._fd, self._pid = None, None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if self._fd is None or self._pid != os.getpid():  # one descriptor per (worker) process
            self._fd, self._pid = os.open(self.data_file, os.O_RDONLY), os.getpid()
        offset, c, h, w = (int(v) for v in self.rows[i])
        buf = os.pread(self._fd, c * h * w, offset)
        return torch.frombuffer(bytearray(buf), dtype=torch.uint8).view(c, h, w)

    def __getstate__(self):
        return {"data_file": self.data_file, "rows": self.rows, "_fd": None, "_pid": None}

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


class DecodedOnRead(Sequence):
    """Each read decodes its file again (`data.cache = none`)."""

    def __init__(self, paths: list[Path], decode: Callable[[Path], torch.Tensor]):
        self.paths, self.decode = paths, decode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.decode(self.paths[i])


def write_disk_cache(folder: Path, name: str, paths: list[Path], decode: Callable[[Path], torch.Tensor | None],
                     workers: int) -> tuple[DiskImages, list[int]]:
    """Decode `paths` (None from `decode` = unreadable, skipped) into `folder/name.u8` and its index;
    returns the store and the positions of the images kept. Reuses a complete earlier cache: the
    index file is written last, by rename, so its presence means the data file is whole."""
    data_file, index_file = folder / f"{name}.u8", folder / f"{name}.index.npy"
    kept_file = folder / f"{name}.kept.npy"
    if index_file.is_file() and data_file.is_file() and kept_file.is_file():
        return DiskImages(data_file, np.load(index_file)), np.load(kept_file).tolist()
    folder.mkdir(parents=True, exist_ok=True)
    tmp_data = folder / f".{name}.u8.{os.getpid()}"
    rows, kept, offset = [], [], 0
    try:
        with open(tmp_data, "wb") as out, ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(paths), CHUNK):
                for j, img in enumerate(pool.map(decode, paths[start:start + CHUNK])):
                    if img is None:
                        continue
                    out.write(img.contiguous().numpy().tobytes())
                    rows.append((offset, *img.shape))
                    kept.append(start + j)
                    offset += img.numel()
    except BaseException:  # an unreadable image, a full disk, Ctrl-C: no partial cache left behind
        tmp_data.unlink(missing_ok=True)
        raise
    index = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    os.replace(tmp_data, data_file)
    for target, array in ((kept_file, np.asarray(kept, dtype=np.int64)), (index_file, index)):
        tmp = folder / f".{target.name}.{os.getpid()}.npy"
        np.save(tmp, array)
        os.replace(tmp, target)
    return DiskImages(data_file, index), kept
