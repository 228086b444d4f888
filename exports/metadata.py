"""The metadata an exported ONNX file carries for its clients (labels and preprocessing, as
metadata_props strings), written and read without torch, so clients start fast.

Keys: labels (JSON list in class-index order), mean and std (JSON lists), resize and crop
(shorter side resized to `resize`, then centre-cropped to `crop`), color=RGB, layout=NCHW,
scale=1/255, plus what compress adds (model name, arch, params, MACs, quantization).
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx

from compress.core.errors import CompressError, summary
from compress.exports.session import cpu_session

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
REQUIRED_METADATA = ("labels", "mean", "std", "resize", "crop", "color", "layout", "scale")


def client_metadata(classes: list[str], mean, std, resize: int, crop: int, **extra) -> dict[str, str]:
    meta = {"labels": json.dumps(list(classes)), "mean": json.dumps(list(mean)), "std": json.dumps(list(std)),
            "resize": str(resize), "crop": str(crop), "color": "RGB", "layout": "NCHW", "scale": "1/255"}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return meta


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = value
        else:
            model.metadata_props.add(key=key, value=value)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, checked for the keys a client needs."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"model file {path} does not exist")
    try:  # loadable is what is checked, not fast; this runs for every file a run or a client reads
        meta = cpu_session(path, optimize=False).get_modelmeta().custom_metadata_map
    except Exception as exc:
        raise CompressError(f"{path} is not a loadable ONNX model: {summary(exc, 200)}") from None
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise CompressError(f"{path} lacks metadata {missing}; export it with compress to embed labels and preprocessing")
    return meta
