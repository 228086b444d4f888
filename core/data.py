"""Datasets: an ImageFolder tree (with or without a train/val split) or the embedded `digits`.

Images are decoded once, converted to RGB, resized so the shorter side is `data.resize`, and
kept in memory as uint8 tensors; training only crops, flips and normalises them, so no JPEG
is decoded twice in a run. The same resize-then-centre-crop is what the ONNX metadata tells
a client to do, and `preprocess_image` is that recipe in code.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from compress.core.augment import augment_image, mix_batch
from compress.core.config import DataConfig
from compress.core.errors import CompressError

log = logging.getLogger("compress")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """Decoded images (uint8 CHW, shorter side = resize), labels and where each came from."""

    images: list[torch.Tensor]
    labels: torch.Tensor
    sources: list[str]

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Dataset:
    classes: list[str]
    train: ImageSet
    val: ImageSet
    fingerprint: str  # changes whenever the files, their split or the decode settings change
    name: str
    bad_images: list[str] = field(default_factory=list)
    _val_crops: torch.Tensor | None = None

    def val_crops(self, crop: int) -> torch.Tensor:
        """Centre crops of every val image as one uint8 tensor [N, 3, crop, crop], built once."""
        if self._val_crops is None or self._val_crops.shape[-1] != crop:
            self._val_crops = torch.stack([center_crop(img, crop) for img in self.val.images])
        return self._val_crops

    def val_inputs(self, cfg: DataConfig) -> torch.Tensor:
        """Every val image as the network sees it: centre-cropped and normalised, float [N, 3, crop, crop]."""
        return normalize(self.val_crops(cfg.crop), cfg.mean, cfg.std)


# ---------------------------------------------------------------- image decoding

def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is `size`, keeping the aspect ratio (torchvision's Resize(int))."""
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.BILINEAR)


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    _, h, w = img.shape
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img[:, top:top + size, left:left + size]


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, RGBA, palette, CMYK and 16-bit images all become 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("P", "PA") and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
    return img.convert("RGB")


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def decode_file(path: Path, resize: int) -> torch.Tensor:
    """Decode one image file to uint8 CHW RGB with the shorter side = `resize`."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (resize, resize))  # let libjpeg decode at a reduced scale: much faster
        img.load()
        return pil_to_tensor(resize_shorter(to_rgb(img), resize))


def preprocess_image(path: Path, resize: int, crop: int, mean, std) -> np.ndarray:
    """The client recipe from the ONNX metadata: RGB, resize shorter side, centre crop, /255, normalise."""
    x = center_crop(decode_file(path, resize), crop)[None]
    return normalize(x, mean, std).numpy()


def normalize(batch_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch_uint8.float() / 255.0 - mean_t) / std_t


# ---------------------------------------------------------------- finding files

def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_classes(root: Path) -> dict[str, list[Path]]:
    classes = _class_dirs(root)
    if not classes:
        raise CompressError(f"{root}: no class folders found; expected {root}/<class>/<image files>")
    if len(classes) < 2:
        raise CompressError(f"{root}: only one class folder ({classes[0].name}); a classifier needs at least two")
    found = {}
    for cls in classes:
        files = sorted(p for p in cls.rglob("*") if _is_image(p))
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


def _fingerprint(parts: list) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _decode_all(files: dict[str, list[Path]], classes: list[str], cfg: DataConfig, bad: list[str]) -> ImageSet:
    items = [(path, classes.index(cls)) for cls, paths in files.items() for path in paths]

    def work(item):
        path, _ = item
        try:
            return decode_file(path, cfg.resize)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            if not cfg.skip_bad_images:
                raise CompressError(
                    f"{path}: cannot read image ({type(exc).__name__}: {exc}); "
                    "fix or remove it, or pass --skip-bad-images") from None
            return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        decoded = list(pool.map(work, items))
    images, labels, sources = [], [], []
    for (path, label), img in zip(items, decoded):
        if img is None:
            bad.append(str(path))
            log.warning("skipping unreadable image %s", path)
            continue
        images.append(img)
        labels.append(label)
        sources.append(str(path))
    return ImageSet(images, torch.tensor(labels, dtype=torch.long), sources)


def load_folder(root: Path, cfg: DataConfig, seed: int) -> Dataset:
    if not root.exists():
        raise CompressError(f"data path {root} does not exist; pass an ImageFolder directory or `digits`")
    if not root.is_dir():
        raise CompressError(f"data path {root} is not a directory")
    has_split = (root / "train").is_dir() and (root / "val").is_dir()
    if has_split:
        train_files, val_files = _scan_classes(root / "train"), _scan_classes(root / "val")
        if set(train_files) != set(val_files):
            only_train = sorted(set(train_files) - set(val_files))
            only_val = sorted(set(val_files) - set(train_files))
            raise CompressError(
                f"{root}: train and val class folders differ (only in train: {only_train or '-'}; "
                f"only in val: {only_val or '-'})")
        classes = sorted(train_files)
    else:
        all_files = _scan_classes(root)
        classes = sorted(all_files)
        train_files, val_files = _stratified_split(all_files, cfg.val_fraction, seed)
    listing = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
               for files in (train_files, val_files) for paths in files.values() for p in paths]
    bad: list[str] = []
    train = _decode_all(train_files, classes, cfg, bad)
    val = _decode_all(val_files, classes, cfg, bad)
    for split, name in ((train, "train"), (val, "val")):
        if len(split) == 0:
            raise CompressError(f"{root}: the {name} split has no readable images")
    empty = [c for i, c in enumerate(classes) if not bool((train.labels == i).any())]
    if empty:
        raise CompressError(f"{root}: class {empty[0]!r} has no readable training images"
                            f"{' after skipping bad ones' if bad else ''}; every class needs some")
    fingerprint = _fingerprint([listing, has_split, cfg.val_fraction if not has_split else None,
                                seed if not has_split else None, cfg.resize, bad])
    return Dataset(classes, train, val, fingerprint, root.name, bad)


def load_digits(cfg: DataConfig, seed: int) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as RGB images, split by class."""
    from sklearn.datasets import load_digits as sk_digits
    bunch = sk_digits()
    pixels = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = [pil_to_tensor(resize_shorter(Image.fromarray(p).convert("RGB"), cfg.resize)) for p in pixels]
    classes = [str(c) for c in range(10)]
    by_class = [np.flatnonzero(bunch.target == int(c)) for c in classes]
    train_idx, val_idx = [], []
    for members, (kept, held) in zip(by_class, stratified_holdout([len(m) for m in by_class], cfg.val_fraction, seed),
                                     strict=True):
        train_idx += members[kept].tolist()
        val_idx += members[held].tolist()

    def subset(idx):
        return ImageSet([images[i] for i in idx], torch.tensor(bunch.target[idx], dtype=torch.long),
                        [f"digits[{i}]" for i in idx])

    fingerprint = _fingerprint(["sklearn-digits", hashlib.sha256(pixels.tobytes()).hexdigest(), cfg.val_fraction,
                                seed, cfg.resize])
    return Dataset(classes, subset(train_idx), subset(val_idx), fingerprint, "digits")


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    if cfg.path == "digits":
        return load_digits(cfg, seed)
    return load_folder(Path(cfg.path).expanduser(), cfg, seed)


# ---------------------------------------------------------------- batching

class TrainBatch(NamedTuple):
    x: torch.Tensor  # normalised float [N, 3, crop, crop]
    y: torch.Tensor  # class indices [N], or soft targets [N, C] after mixup/cutmix
    index: torch.Tensor  # positions in the train ImageSet: lets cached per-image teacher logits line up


def train_batches(data: ImageSet, cfg: DataConfig, seed: int, epoch: int, shuffle: bool = True,
                  augment: str = "light", mixup: float = 0.0, cutmix: float = 0.0,
                  num_classes: int = 0) -> Iterator[TrainBatch]:
    """Normalised, augmented batches in an order fixed by (seed, epoch): reruns see the same data.

    `augment` is a preset of pipeline.augment; mixup/cutmix need `num_classes` for soft targets.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(data), generator=gen) if shuffle else torch.arange(len(data))
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        crops = [augment_image(data.images[i], augment, cfg.augment, cfg.crop, gen, center_crop)
                 for i in idx.tolist()]
        x, y = mix_batch(normalize(torch.stack(crops), cfg.mean, cfg.std), data.labels[idx], num_classes,
                         mixup, cutmix, gen)
        yield TrainBatch(x, y, idx)


def eval_batches(dataset: Dataset, cfg: DataConfig, batch_size: int | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    crops = dataset.val_crops(cfg.crop)
    size = batch_size or max(cfg.batch_size, 64)
    for start in range(0, len(crops), size):
        yield normalize(crops[start:start + size], cfg.mean, cfg.std), dataset.val.labels[start:start + size]


def calibration_indices(dataset: Dataset, count: int, seed: int) -> list[int]:
    """Which `count` training images calibration uses, chosen by seed."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(len(dataset.train), generator=gen)[:count].tolist()


def calibration_batch(dataset: Dataset, cfg: DataConfig, count: int, seed: int) -> torch.Tensor:
    """`count` real training images, centre-cropped and normalised, chosen by seed."""
    idx = calibration_indices(dataset, count, seed)
    return normalize(torch.stack([center_crop(dataset.train.images[i], cfg.crop) for i in idx]), cfg.mean, cfg.std)
