"""Datasets: an ImageFolder tree (with or without a train/val split), a labels file (csv or
jsonl, compress.core.labels_file) or the embedded `digits`.

Hidden files and __MACOSX folders are never data; images are turned upright by their EXIF
orientation; images byte-identical across splits are counted, since their figures are optimistic.

Images are decoded once, converted to RGB, resized so the shorter side is `data.resize`, and
kept as uint8 tensors in memory or in a disk cache (`data.cache`, compress.core.image_store);
training only crops, flips and normalises them, so no JPEG is decoded twice. The same resize-then-centre-crop is what the ONNX metadata tells
a client to do; `compress.core.preprocess` is that recipe in PIL and NumPy.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from compress.core import labels_file
from compress.core.architectures import IMAGENET_MEAN, IMAGENET_STD
from compress.core.config import DataConfig
from compress.core.errors import CompressError
from compress.core.image_store import DecodedOnRead, default_cache_dir, resolve_mode, write_disk_cache
from compress.core.preprocess import (
    IMAGE_EXTENSIONS,
    crop_offsets,
    decode,
    is_data_name,
    is_image_file,
    resize_shorter,
    rgb_array,
)
from compress.core.rundir import sha256_file

log = logging.getLogger("compress")



@dataclass
class ImageSet:
    """Decoded images (uint8 CHW, shorter side = resize), labels and where each came from."""

    images: Sequence[torch.Tensor]  # a list, or a disk-backed / decode-on-read sequence
    labels: torch.Tensor
    sources: list[str]

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Dataset:
    """train (fitting), val (every choice: epochs, int8 layout, prune rounds, sweep cells) and, when
    the data has enough images, test (the figures the report states, used for nothing else)."""

    classes: list[str]
    train: ImageSet
    val: ImageSet
    fingerprint: str  # changes whenever the files, their split or the decode settings change
    name: str
    bad_images: list[str] = field(default_factory=list)
    test: ImageSet | None = None
    copies: dict[str, int] = field(default_factory=dict)  # val/test images byte-identical to an earlier split's
    _crops: dict = field(default_factory=dict)

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split: {"train": {"cat": 120, ...}, "val": {...}, ...}."""
        splits = {"train": self.train, "val": self.val, **({"test": self.test} if self.test is not None else {})}
        return {name: {c: int((s.labels == i).sum()) for i, c in enumerate(self.classes)} for name, s in splits.items()}

    @property
    def report_split(self) -> str:
        """Where reported figures come from: test when there is one, else val (also used to select)."""
        return "test" if self.test is not None else "val"

    def split(self, name: str) -> ImageSet:
        images = getattr(self, name)
        if images is None:
            raise ValueError(f"dataset {self.name} has no {name} split")
        return images

    def crops(self, split: str, crop: int) -> torch.Tensor:
        """Centre crops of every image of `split` as one uint8 tensor [N, 3, crop, crop], built once."""
        if (split, crop) not in self._crops:
            self._crops[(split, crop)] = torch.stack([center_crop(img, crop) for img in self.split(split).images])
        return self._crops[(split, crop)]

    def inputs(self, split: str, cfg: DataConfig) -> torch.Tensor:
        """Every image of `split` as the network sees it: centre-cropped, normalised, float NCHW."""
        return normalize(self.crops(split, cfg.crop), cfg.mean, cfg.std)

    def val_crops(self, crop: int) -> torch.Tensor:
        return self.crops("val", crop)

    def val_inputs(self, cfg: DataConfig) -> torch.Tensor:
        return self.inputs("val", cfg)


# ---------------------------------------------------------------- image decoding

def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    top, left = crop_offsets(img.shape[1], img.shape[2], size)
    return img[:, top:top + size, left:left + size]


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def decode_file(path: Path, resize: int, draft: bool = False) -> torch.Tensor:
    """Decode one image file to uint8 CHW RGB with the shorter side = `resize` (the documented
    recipe; `draft` = libjpeg's reduced-scale JPEG decode, used for training images only)."""
    return torch.from_numpy(decode(path, resize, draft))


def normalize(batch_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """(x / 255 − mean) / std per channel; an empty mean or std (data.mean = [], not yet made concrete
    for a run by core.auto_settings) is ImageNet's."""
    mean, std = mean or IMAGENET_MEAN, std or IMAGENET_STD
    mean_t = torch.tensor(mean, dtype=torch.float32, device=batch_uint8.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=batch_uint8.device).view(1, 3, 1, 1)
    return (batch_uint8.float() / 255.0 - mean_t) / std_t


# ---------------------------------------------------------------- finding files

def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and is_data_name(p.name))


def _scan_classes(root: Path) -> dict[str, list[Path]]:
    classes = _class_dirs(root)
    if not classes:
        raise CompressError(f"{root}: no class folders found; expected {root}/<class>/<image files>")
    if len(classes) < 2:
        raise CompressError(f"{root}: only one class folder ({classes[0].name}); a classifier needs at least two")
    found = {}
    for cls in classes:
        files = sorted(p for p in cls.rglob("*") if is_image_file(p, cls))
        if not files:
            raise CompressError(
                f"{cls}: class folder has no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        found[cls.name] = files
    return found


def stratified_holdout(class_sizes: list[int], fraction: float, seed: int) -> list[tuple[list[int], list[int]]]:
    """Per class, (kept positions, held-out positions): a seeded `fraction` of each class held
    out, at least one image on each side when the class has two or more."""
    rng = np.random.default_rng(seed)
    out = []
    for size in class_sizes:
        order = rng.permutation(size)
        n_held = min(max(int(round(size * fraction)), 1 if size > 1 else 0), size - 1) if size else 0
        out.append((sorted(order[n_held:].tolist()), sorted(order[:n_held].tolist())))
    return out


def _stratified_split(files: dict[str, list[Path]], val_fraction: float, seed: int):
    train, val = {}, {}
    for (cls, paths), (kept, held) in zip(files.items(), stratified_holdout([len(p) for p in files.values()],
                                                                               val_fraction, seed), strict=True):
        train[cls], val[cls] = [paths[i] for i in kept], [paths[i] for i in held]
    return train, val


MIN_TRAIN_PER_CLASS_FOR_TEST = 25  # fewer training images in any class: no test split (too few to fit and test)


def carve_test(train_files: dict[str, list], fraction: float, seed: int) -> tuple[dict, dict | None]:
    """(train, test): `fraction` of each class's training images held out as the test split, or
    (train, None) when the fraction is 0 or a class has fewer than MIN_TRAIN_PER_CLASS_FOR_TEST."""
    if fraction <= 0 or min(len(v) for v in train_files.values()) < MIN_TRAIN_PER_CLASS_FOR_TEST:
        return train_files, None
    kept, held = {}, {}
    for (cls, items), (k, h) in zip(train_files.items(), stratified_holdout(
            [len(v) for v in train_files.values()], fraction, seed + 7919), strict=True):
        kept[cls], held[cls] = [items[i] for i in k], [items[i] for i in h]
    return kept, held


def _fingerprint(parts: list) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _decode_all(files: dict[str, list[Path]], classes: list[str], cfg: DataConfig, bad: list[str],
                draft: bool = False, mode: str = "memory", name: str = "train") -> ImageSet:
    """Decode a split into the store `mode` names (memory, disk or none: see core.image_store)."""
    items = [(path, classes.index(cls)) for cls, paths in files.items() for path in paths]
    paths = [path for path, _ in items]

    def work(path):
        try:
            return decode_file(path, cfg.resize, draft)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            if not cfg.skip_bad_images:
                raise CompressError(
                    f"{path}: cannot read image ({type(exc).__name__}: {exc}); "
                    "fix or remove it, or pass --skip-bad-images") from None
            return None

    threads = os.cpu_count() or 2
    images: Sequence
    if mode == "none":
        images, kept = DecodedOnRead(paths, functools.partial(decode_file, resize=cfg.resize, draft=draft)), list(range(len(paths)))
    elif mode == "disk":
        key = _fingerprint([[(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths],
                            cfg.resize, draft, "uint8 CHW v2, EXIF orientation applied"])
        folder = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
        images, kept = write_disk_cache(folder / key[:32], name, paths, work, threads)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            decoded = list(pool.map(work, paths))
        kept = [i for i, img in enumerate(decoded) if img is not None]
        images = [decoded[i] for i in kept]
    for i in sorted(set(range(len(paths))) - set(kept)):
        bad.append(str(paths[i]))
        log.warning("skipping unreadable image %s", paths[i])
    return ImageSet(images, torch.tensor([items[i][1] for i in kept], dtype=torch.long), [str(paths[i]) for i in kept])


def load_folder(root: Path, cfg: DataConfig, seed: int) -> Dataset:
    if not root.exists():
        raise CompressError(f"data path {root} does not exist; pass an ImageFolder directory, a labels file "
                            "(.csv or .jsonl) or `digits`")
    if labels_file.is_labels_file(root) and root.is_file():
        return _load_listed(root, cfg, seed)
    if not root.is_dir():
        raise CompressError(f"data path {root} is not a directory or a labels file (.csv, .jsonl)")
    has_split = (root / "train").is_dir() and (root / "val").is_dir()
    test_files = None
    if has_split:
        train_files, val_files = _scan_classes(root / "train"), _scan_classes(root / "val")
        if (root / "test").is_dir():
            test_files = _scan_classes(root / "test")
        for name, other in (("val", val_files), ("test", test_files)):
            if other is not None and set(train_files) != set(other):
                only_train = sorted(set(train_files) - set(other))
                only_other = sorted(set(other) - set(train_files))
                raise CompressError(
                    f"{root}: train and {name} class folders differ (only in train: {only_train or '-'}; "
                    f"only in {name}: {only_other or '-'})")
    else:
        all_files = _scan_classes(root)
        _check_splittable(all_files, root)
        train_files, val_files = _stratified_split(all_files, cfg.val_fraction, seed)
    return _materialise(root, root.name, train_files, val_files, test_files, has_split, cfg, seed)


def _check_splittable(files: dict[str, list], where: Path) -> None:
    """Without train/ and val/, every class is split here: it needs an image on each side."""
    small = {c: len(v) for c, v in files.items() if len(v) < 2}
    if small:
        name, count = next(iter(small.items()))
        raise CompressError(f"{where}: class {name!r} has {count} image; without separate train and val splits "
                            f"each class needs at least 2 (one to train on, one to validate on), and "
                            f"{MIN_TRAIN_PER_CLASS_FOR_TEST} training images for a test split")


def _load_listed(path: Path, cfg: DataConfig, seed: int) -> Dataset:
    """A labels file: its rows grouped by split (given, or split here per class) and class."""
    rows = labels_file.read(path)
    by_split: dict[str | None, dict[str, list[Path]]] = {}
    for row in rows:
        by_split.setdefault(row.split, {}).setdefault(row.label, []).append(row.path)
    classes = sorted({row.label for row in rows})
    if None in by_split:  # no split column: class by class, like a folder of class folders
        all_files = {c: sorted(by_split[None].get(c, [])) for c in classes}
        _check_splittable(all_files, path)
        train_files, val_files = _stratified_split(all_files, cfg.val_fraction, seed)
        test_files, has_split = None, False
    else:
        for split in ("train", "val"):
            missing = [c for c in classes if not by_split.get(split, {}).get(c)]
            if missing:
                raise CompressError(f"{path}: class {missing[0]!r} has no {split} rows; every class needs train and "
                                    "val images (or leave out the split column to split here)")
        train_files, val_files = ({c: sorted(by_split[s][c]) for c in classes} for s in ("train", "val"))
        test_files = {c: sorted(by_split["test"].get(c, [])) for c in classes} if "test" in by_split else None
        has_split = True
    return _materialise(path.parent, path.stem, train_files, val_files, test_files, has_split, cfg, seed,
                        listed_in=path)


def _materialise(root: Path, name: str, train_files: dict, val_files: dict, test_files: dict | None, has_split: bool,
                 cfg: DataConfig, seed: int, listed_in: Path | None = None) -> Dataset:
    """Decode the splits (a test split carved from train when none is given), count copies across
    splits, and fingerprint what was read."""
    classes = sorted(train_files)
    if test_files is None:
        train_files, test_files = carve_test(train_files, cfg.test_fraction, seed)
    splits = {"train": train_files, "val": val_files, **({"test": test_files} if test_files is not None else {})}
    listing = [(_relative(p, root), p.stat().st_size, p.stat().st_mtime_ns)
               for files in splits.values() for paths in files.values() for p in paths]
    bad: list[str] = []
    count = sum(len(v) for files in splits.values() for v in files.values())
    mode = resolve_mode(cfg.cache, count, cfg.resize)
    train = _decode_all(train_files, classes, cfg, bad, draft=True, mode=mode)  # training crops are augmented anyway
    val = _decode_all(val_files, classes, cfg, bad, mode=mode, name="val")
    test = _decode_all(test_files, classes, cfg, bad, mode=mode, name="test") if test_files is not None else None
    for split, split_name in ((train, "train"), (val, "val"), (test, "test")):
        if split is not None and len(split) == 0:
            raise CompressError(f"{root}: the {split_name} split has no readable images")
    empty = [c for i, c in enumerate(classes) if not bool((train.labels == i).any())]
    if empty:
        raise CompressError(f"{root}: class {empty[0]!r} has no readable training images"
                            f"{' after skipping bad ones' if bad else ''}; every class needs some")
    fingerprint = _fingerprint([listing, has_split, cfg.val_fraction if not has_split else None,
                                seed if not has_split else None, cfg.resize, bad, "eval decoded without draft",
                                "EXIF orientation applied",
                                sha256_file(listed_in) if listed_in else None])
    copies = copies_across_splits({s: [Path(p) for p in split.sources] for s, split in
                                   (("train", train), ("val", val), ("test", test)) if split is not None})
    return Dataset(classes, train, val, fingerprint, name, bad, test, copies)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:  # a labels file may name images outside its folder
        return str(path)


def copies_across_splits(files: dict[str, list[Path]]) -> dict[str, int]:
    """How many images of val (and test) are byte-identical to a train image (test: or a val one):
    counted by content hash, since the same photo on both sides makes a figure optimistic.

    Only files whose size another file shares are read and hashed (identical bytes need equal
    sizes): of the 397 hymenoptera JPEGs 2 share a size, where hashing all re-read every image
    on every load, disk cache or not. A file of unique size stands for itself by its size."""
    sizes = {split: [p.stat().st_size for p in paths] for split, paths in files.items()}
    shared = {size for size, n in Counter(s for split in sizes.values() for s in split).items() if n > 1}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        hashes = {split: list(pool.map(lambda pair: sha256_file(pair[0]) if pair[1] in shared else f"size {pair[1]}",
                                       zip(paths, sizes[split]))) for split, paths in files.items()}
    seen = set(hashes.get("train", []))
    copies: dict[str, int] = {}
    for split in ("val", "test"):
        if split in hashes:
            copies[split] = sum(h in seen for h in hashes[split])
            seen |= set(hashes[split])
    return copies


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as uint8 pixels [1797, 8, 8] and their labels, read once."""
    from sklearn.datasets import load_digits as sk_digits
    bunch = sk_digits()
    return (bunch.images * (255.0 / 16.0)).round().astype(np.uint8), bunch.target


def load_digits(cfg: DataConfig, seed: int) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as RGB images, split by class."""
    pixels, targets = _digits()
    images = [pil_to_tensor(resize_shorter(Image.fromarray(p).convert("RGB"), cfg.resize)) for p in pixels]
    classes = [str(c) for c in range(10)]
    by_class = [np.flatnonzero(targets == int(c)) for c in classes]
    train_by_class, val_idx = {}, []
    for c, members, (kept, held) in zip(classes, by_class, stratified_holdout([len(m) for m in by_class],
                                                                               cfg.val_fraction, seed), strict=True):
        train_by_class[c] = members[kept].tolist()
        val_idx += members[held].tolist()
    train_by_class, test_by_class = carve_test(train_by_class, cfg.test_fraction, seed)
    train_idx = [i for c in classes for i in train_by_class[c]]
    test_idx = [i for c in classes for i in test_by_class[c]] if test_by_class else None

    def subset(idx):
        return ImageSet([images[i] for i in idx], torch.tensor(targets[idx], dtype=torch.long),
                        [f"digits[{i}]" for i in idx])

    fingerprint = _fingerprint(["sklearn-digits", hashlib.sha256(pixels.tobytes()).hexdigest(), cfg.val_fraction,
                                seed, cfg.resize, cfg.test_fraction])
    seen = {pixels[i].tobytes() for i in train_idx}
    copies = {"val": sum(pixels[i].tobytes() in seen for i in val_idx)}
    if test_idx is not None:
        seen |= {pixels[i].tobytes() for i in val_idx}
        copies["test"] = sum(pixels[i].tobytes() in seen for i in test_idx)
    return Dataset(classes, subset(train_idx), subset(val_idx), fingerprint, "digits",
                   test=subset(test_idx) if test_idx is not None else None, copies=copies)


def raw_rgb(source: str) -> np.ndarray:
    """The decoded, not yet resized, uint8 HWC RGB image an ImageSet source names (a file, or
    `digits[i]` of the embedded set): what an edge client starts from."""
    if source.startswith("digits["):
        return np.asarray(Image.fromarray(_digits()[0][int(source[7:-1])]).convert("RGB"), dtype=np.uint8)
    return rgb_array(source)


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    if cfg.path == "digits":
        return load_digits(cfg, seed)
    return load_folder(Path(cfg.path).expanduser(), cfg, seed)


# ---------------------------------------------------------------- batching

def eval_batch_size(cfg: DataConfig) -> int:
    """Evaluation needs no gradients, so it takes larger batches than training."""
    return max(cfg.batch_size, 64)


def eval_batches(dataset: Dataset, cfg: DataConfig, batch_size: int | None = None, split: str = "val"
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    images, labels = dataset.split(split), dataset.split(split).labels
    size = batch_size or eval_batch_size(cfg)
    if not isinstance(images.images, list):  # disk or decode-on-read: stream, never hold the split's crops
        for start in range(0, len(images), size):
            crops = torch.stack([center_crop(img, cfg.crop) for img in images.images[start:start + size]])
            yield normalize(crops, cfg.mean, cfg.std), labels[start:start + size]
        return
    crops = dataset.crops(split, cfg.crop)
    for start in range(0, len(crops), size):
        yield normalize(crops[start:start + size], cfg.mean, cfg.std), labels[start:start + size]


def calibration_indices(dataset: Dataset, count: int, seed: int) -> list[int]:
    """Which `count` training images calibration uses, chosen by seed."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(len(dataset.train), generator=gen)[:count].tolist()


def calibration_batch(dataset: Dataset, cfg: DataConfig, count: int, seed: int) -> torch.Tensor:
    """`count` real training images, centre-cropped and normalised, chosen by seed."""
    idx = calibration_indices(dataset, count, seed)
    return normalize(torch.stack([center_crop(dataset.train.images[i], cfg.crop) for i in idx]), cfg.mean, cfg.std)
