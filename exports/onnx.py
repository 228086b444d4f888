"""ONNX export with everything a client needs inside the file (compress.exports.metadata), and
two checks that fail loudly: `onnx.checker`, and parity of ONNX Runtime's logits against
PyTorch's on real images.

Metadata (all strings, as ONNX requires): labels (JSON list in class-index order), mean and std
(JSON lists), resize and crop (shorter side resized to `resize`, then centre-cropped to `crop`),
color=RGB, layout=NCHW, scale=1/255. A client holding only the .onnx file can preprocess an
image and name the class.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from compress.core import architectures, faults
from compress.core.config import DataConfig
from compress.core.errors import CompressError
from compress.core.models import count_macs, count_params, load_model
from compress.exports.metadata import INPUT_NAME, OUTPUT_NAME, client_metadata, read_metadata, set_metadata
from compress.exports.session import cpu_session, run_logits


def export_onnx(model: torch.nn.Module, path: Path, crop: int, opset: int, metadata: dict[str, str]) -> None:
    """Export with a dynamic batch axis, embed `metadata`, and run the full onnx.checker."""
    model = model.cpu().float().eval()
    example = torch.zeros(1, 3, crop, crop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        # The TorchScript-based exporter: a plain conv net needs nothing the dynamo exporter adds,
        # and it is several times faster and has no onnxscript dependency.
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=opset, dynamo=False)
    faults.reach("onnx.exported", path=path)
    proto = onnx.load(str(path))
    set_metadata(proto, metadata)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)


@dataclass
class Exported:
    """What exporting a checkpoint produced: the model as exported (re-parameterised), its
    architecture and the counts written into the file."""
    model: torch.nn.Module
    arch: str
    params: int
    macs: int
    meta: dict


def export_checkpoint(checkpoint: Path, path: Path, name: str, classes: list[str], data: DataConfig,
                      opset: int) -> Exported:
    """A compress checkpoint to ONNX with the client metadata of `data`'s preprocessing: re-parameterised
    first (RepVGG/MobileOne: the fused form ships), params and MACs counted on what is exported."""
    model, meta = load_model(checkpoint)
    model = architectures.reparameterize(model)
    params, macs = count_params(model), count_macs(model, data.crop)
    export_onnx(model, path, data.crop, opset, client_metadata(
        classes, data.mean, data.std, data.resize, data.crop, model_name=name, arch=meta["arch"],
        producer="compress", params=params, macs=macs))
    return Exported(model, meta["arch"], params, macs, meta)


QUANTIZABLE = ("Conv", "Gemm", "MatMul")


def layer_names(model: torch.nn.Module, crop: int, opset: int) -> list[str]:
    """The ONNX names of `model`'s quantizable layers as the export names them (what
    onnx/sensitivity.json lists and quantize.keep_float takes): exported once to a scratch file."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "names.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.cpu().float().eval(), (torch.zeros(1, 3, crop, crop),), str(path),
                              opset_version=opset, dynamo=False)
        return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in QUANTIZABLE]


def parity(model: torch.nn.Module, path: Path, images: torch.Tensor, tolerance: float) -> float:
    """Max |logit difference| between PyTorch (fp32, CPU) and ONNX Runtime on `images`, checked
    against `tolerance` times the logits' scale (max(1, largest |logit|)): float32 rounding grows
    with the values, and a briefly trained WideResNet's logits reach the thousands."""
    model = model.cpu().float().eval()
    with torch.no_grad():
        expected = model(images).numpy()
    got = run_logits(cpu_session(path), images.numpy())
    diff = float(np.abs(expected - got).max())
    scale = max(1.0, float(np.abs(expected).max()))
    if not diff <= tolerance * scale:
        raise CompressError(f"{path}: ONNX Runtime logits differ from PyTorch by {diff:.2e} (tolerance "
                            f"{tolerance:.0e} x logit scale {scale:.3g}) on real val images; the export is wrong")
    return diff


def fix_batch(path: Path, batch: int) -> None:
    """Pin the batch axis of the model's input and output to `batch` (for runtimes and NPUs that
    need static shapes). Intermediate shape annotations are dropped, and re-inferred by ORT."""
    proto = onnx.load(str(path))
    for value in (*proto.graph.input, *proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = batch
    del proto.graph.value_info[:]
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))


__all__ = ["INPUT_NAME", "OUTPUT_NAME", "client_metadata", "export_onnx", "fix_batch", "parity", "read_metadata",
           "set_metadata"]
