"""A dataset listed in a file instead of class folders (how Kaggle-style and exported datasets
arrive): `labels.csv` with a header `path,label[,split]`, or `labels.jsonl` with one object
{"path", "label"[, "split"]} per line. Paths are relative to the file; `split` is train, val or
test (every row has one, or none has). Each bad row is one line naming its number. No torch."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from compress.core.errors import CompressError
from compress.core.preprocess import IMAGE_EXTENSIONS, is_data_name

SUFFIXES = (".csv", ".jsonl")
COLUMNS = ("path", "label", "split")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Row:
    path: Path
    label: str
    split: str | None


def is_labels_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def _records(path: Path) -> list[tuple[int, dict]]:
    """(line number, fields) of every data row."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None:
            raise CompressError(f"{path}: empty; expected a header line `path,label` (and optionally `split`)")
        unknown = [c for c in reader.fieldnames if c not in COLUMNS]
        if unknown or not {"path", "label"} <= set(reader.fieldnames):
            raise CompressError(f"{path}: columns {reader.fieldnames}; expected path,label and optionally split"
                                + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        return [(i + 2, row) for i, row in enumerate(reader)]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CompressError(f"{path}: line {number} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise CompressError(f"{path}: line {number} is not a JSON object with path and label")
        unknown = [k for k in row if k not in COLUMNS]
        if unknown:
            raise CompressError(f"{path}: line {number} has unknown keys {unknown}; expected path, label, split")
        rows.append((number, row))
    return rows


def read(path: str | Path) -> list[Row]:
    """Every row, checked: the image exists, has a label, and a valid split where splits are given."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"labels file {path} does not exist")
    rows, with_split = [], set()
    for number, fields in _records(path):
        where = f"{path}: line {number}"
        image, label = str(fields.get("path") or "").strip(), str(fields.get("label") or "").strip()
        split = str(fields.get("split") or "").strip() or None
        if not image or not label:
            raise CompressError(f"{where}: needs both a path and a label (got path {image!r}, label {label!r})")
        if split is not None and split not in SPLITS:
            raise CompressError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
        file = (path.parent / image).resolve() if not Path(image).is_absolute() else Path(image)
        if not is_data_name(file.name) or file.suffix.lower() not in IMAGE_EXTENSIONS:
            raise CompressError(f"{where}: {image} is not an image file ({', '.join(IMAGE_EXTENSIONS)}, not hidden)")
        if not file.is_file():
            raise CompressError(f"{where}: {image} does not exist (paths are relative to {path.parent})")
        with_split.add(split is not None)
        rows.append(Row(file, label, split))
    if not rows:
        raise CompressError(f"{path}: no rows; expected one line per image: path,label[,split]")
    if len(with_split) > 1:
        raise CompressError(f"{path}: some rows have a split and some do not; give every row one, or none")
    return rows
