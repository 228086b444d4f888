"""Using an exported model the way an edge team would: only the .onnx file and its metadata.

`predict` names the top-k classes of image files; `evaluate` measures accuracy on a labelled
folder (or the embedded digits). Preprocessing is read from the file's metadata_props, never
from compress's config, and runs in PIL and NumPy: nothing here imports torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from compress.core import labels_file
from compress.core.errors import CompressError
from compress.core.preprocess import is_data_name, is_image_file, preprocess
from compress.exports.metadata import read_metadata
from compress.exports.session import cpu_session, run_logits, softmax


@dataclass
class ClientModel:
    """An ONNX model plus the preprocessing and labels its metadata declares."""

    path: Path
    labels: list[str]
    resize: int
    crop: int
    mean: list[float]
    std: list[float]

    @classmethod
    def load(cls, path: str | Path) -> ClientModel:
        meta = read_metadata(path)
        if (meta["color"], meta["layout"], meta["scale"]) != ("RGB", "NCHW", "1/255"):
            raise CompressError(f"{path}: unsupported preprocessing {meta['color']}/{meta['layout']}/{meta['scale']}")
        try:
            labels, mean, std = (json.loads(meta[k]) for k in ("labels", "mean", "std"))
            resize, crop = int(meta["resize"]), int(meta["crop"])
        except (ValueError, TypeError) as exc:
            raise CompressError(f"{path}: metadata labels/mean/std/resize/crop are not valid ({exc})") from None
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise CompressError(f"{path}: metadata `labels` must be a JSON list of class names")
        width = cpu_session(path).get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(labels):
            raise CompressError(f"{path}: the model outputs {width} classes but its metadata names {len(labels)}")
        return cls(Path(path), labels, resize, crop, mean, std)

    def preprocess(self, image: Path) -> np.ndarray:
        try:
            return preprocess(image, self.resize, self.crop, self.mean, self.std)
        except FileNotFoundError:
            raise CompressError(f"image {image} does not exist") from None
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            raise CompressError(f"{image}: cannot read image ({type(exc).__name__})") from None

    def logits(self, images: list[Path], threads: int | None = None) -> np.ndarray:
        batch = np.concatenate([self.preprocess(p) for p in images])
        return run_logits(cpu_session(self.path, threads), batch)


def predict(model_path: str | Path, images: list[str], top_k: int = 3) -> list[list[tuple[str, float]]]:
    """For each image, the top-k (label, probability) pairs."""
    model = ClientModel.load(model_path)
    probs = softmax(model.logits([Path(p) for p in images]))
    k = min(top_k, len(model.labels))
    return [[(model.labels[i], float(p[i])) for i in np.argsort(-p)[:k]] for p in probs]


def labelled_images(root: Path, labels: list[str]) -> list[tuple[Path, int]]:
    """(image, class index) from `root/test/<class>/`, else `root/val/<class>/`, else `root/<class>/`;
    or from a labels file (its test rows, else its val rows, else all). Hidden files and __MACOSX
    folders are never data."""
    if labels_file.is_labels_file(root) and root.is_file():
        rows = labels_file.read(root)
        split = next((s for s in ("test", "val") if any(r.split == s for r in rows)), None)
        chosen = [r for r in rows if r.split == split]
        unknown = sorted({r.label for r in chosen} - set(labels))
        if unknown:
            raise CompressError(f"{root}: labels {unknown} are not among the model's labels {labels}")
        return [(r.path, labels.index(r.label)) for r in chosen]
    if not root.is_dir():
        raise CompressError(f"data path {root} is not a directory or a labels file (.csv, .jsonl)")
    folder = next((root / s for s in ("test", "val") if (root / s).is_dir()), root)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and is_data_name(p.name))
    unknown = [c for c in classes if c not in labels]
    if not classes or unknown:
        raise CompressError(f"{folder}: class folders {unknown or '(none)'} are not among the model's labels {labels}")
    return [(p, labels.index(c)) for c in classes for p in sorted((folder / c).rglob("*")) if is_image_file(p, folder / c)]


def _digits(model: ClientModel) -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits' report split (test when it has one), preprocessed as the model says."""
    from compress.core.config import DataConfig
    from compress.core.data import load_dataset
    cfg = DataConfig(resize=model.resize, crop=model.crop, mean=model.mean, std=model.std)
    data = load_dataset(cfg, seed=0)
    split = data.report_split
    if data.classes != model.labels:
        raise CompressError(f"{model.path}: labels {model.labels} are not the digits' classes {data.classes}")
    return data.inputs(split, cfg).numpy(), data.split(split).labels.numpy()


def evaluate(model_path: str | Path, data: str | Path, batch_size: int = 64) -> dict:
    model = ClientModel.load(model_path)
    session = cpu_session(model.path)
    if str(data) == "digits":
        inputs, truth = _digits(model)
        predicted = run_logits(session, inputs).argmax(1)
    else:
        items = labelled_images(Path(data), model.labels)
        predicted = np.concatenate([run_logits(session, np.concatenate(
            [model.preprocess(p) for p, _ in items[i:i + batch_size]])).argmax(1) for i in range(0, len(items), batch_size)])
        truth = np.array([y for _, y in items])
    return {"images": len(truth), "accuracy": float((predicted == truth).mean()),
            "per_class": {model.labels[c]: float((predicted[truth == c] == c).mean())
                          for c in sorted(set(truth.tolist()))}}
