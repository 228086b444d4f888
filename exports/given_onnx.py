"""A teacher given as an ONNX file, from any framework: checked against the data before any work,
adapted to the run's preprocessing, and run as a torch module so distillation can read its logits.

The file's classes come from its `labels` metadata (compress writes it) or from `teacher.classes`,
and must be the data's, in order. When the file records its own `mean`/`std` and they differ from
the run's, two nodes are put in front of its graph that turn the run's normalised input into the
one it expects: x' = x · std_run/std_file + (mean_run − mean_file)/std_file. The copy in the run
directory then takes exactly what every other model takes, so the benchmark and the logits used
for distillation measure the teacher as it was meant to run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from torch import nn

from compress.core.errors import CompressError, summary
from compress.exports.metadata import set_metadata
from compress.exports.session import cpu_session


@dataclass(frozen=True)
class GivenTeacher:
    """What the file says about itself, checked."""

    path: Path
    classes: list[str]
    mean: list[float] | None  # None: the file does not say; the run's normalisation is assumed
    std: list[float] | None


def inspect(path: str | Path, data_classes: list[str] | None, given_classes: list[str], crop: int) -> GivenTeacher:
    """Load `path`, run it on two `crop`-px images, and check its classes (`data_classes`: None
    before the data is read). One line naming the file and what to set when anything is off."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"teacher.onnx: {path} does not exist")
    try:
        session = cpu_session(path)
    except Exception as exc:
        raise CompressError(f"teacher.onnx: {path} is not a loadable ONNX model ({summary(exc)})") \
            from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise CompressError(f"teacher.onnx: {path} must take one image batch [N, 3, H, W]; it takes "
                            + ", ".join(f"{i.name} {i.shape}" for i in inputs))
    try:
        out = session.run(None, {inputs[0].name: np.zeros((2, 3, crop, crop), np.float32)})[0]
    except Exception as exc:
        raise CompressError(f"teacher.onnx: {path} does not run on a batch of 2 {crop}-px images "
                            f"(input {inputs[0].shape}: {summary(exc, 120)}); export it with a dynamic "
                            "batch axis and set data.crop to its input size") from None
    if out.ndim != 2 or out.shape[0] != 2:
        raise CompressError(f"teacher.onnx: {path} must return logits [N, classes]; it returned shape {list(out.shape)}")
    meta = session.get_modelmeta().custom_metadata_map
    classes = list(given_classes) or (json.loads(meta["labels"]) if "labels" in meta else [])
    if not classes:
        raise CompressError(f"teacher.onnx: {path} carries no `labels` metadata; list its {out.shape[1]} output "
                            "classes in order with teacher.classes")
    if len(classes) != out.shape[1]:
        raise CompressError(f"teacher.onnx: {path} returns {out.shape[1]} logits but {len(classes)} classes are named")
    if data_classes is not None and classes != list(data_classes):
        raise CompressError(f"teacher.onnx: {path} predicts classes {classes}, but the data has {list(data_classes)} "
                            "(same names in the same order are needed)")
    mean = json.loads(meta["mean"]) if "mean" in meta else None
    std = json.loads(meta["std"]) if "std" in meta else None
    return GivenTeacher(path, classes, mean, std)


def adapt(teacher: GivenTeacher, target: Path, mean: list[float], std: list[float], metadata: dict[str, str]) -> None:
    """Write the teacher to `target` taking the run's normalised input, with `metadata`."""
    model = onnx.load(str(teacher.path))
    if teacher.mean is not None and teacher.std is not None and (teacher.mean != list(mean) or teacher.std != list(std)):
        run_mean, run_std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        file_mean, file_std = np.asarray(teacher.mean, np.float32), np.asarray(teacher.std, np.float32)
        scale = (run_std / file_std).reshape(1, 3, 1, 1)
        shift = ((run_mean - file_mean) / file_std).reshape(1, 3, 1, 1)
        graph = model.graph
        initializers = {t.name for t in graph.initializer}
        entry = next(i for i in graph.input if i.name not in initializers)  # the image input
        original = entry.name
        renamed = original + "_run_normalised"
        entry.name = renamed
        graph.initializer.extend([numpy_helper.from_array(scale, "compress_renorm_scale"),
                                  numpy_helper.from_array(shift, "compress_renorm_shift")])
        graph.node.insert(0, helper.make_node("Add", ["compress_renorm_scaled", "compress_renorm_shift"], [original]))
        graph.node.insert(0, helper.make_node("Mul", [renamed, "compress_renorm_scale"], ["compress_renorm_scaled"]))
    set_metadata(model, metadata)
    onnx.save(model, str(target))
    onnx.checker.check_model(str(target))


class OnnxTeacher(nn.Module):
    """An ONNX teacher as a module: forward runs the file in ONNX Runtime on the batch (on CUDA when
    training runs there and ONNX Runtime has the provider) and returns its logits as a tensor."""

    def __init__(self, path: str | Path, device: torch.device):
        super().__init__()
        cuda = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        self.session = cpu_session(path, providers=("CUDAExecutionProvider", "CPUExecutionProvider") if cuda
                                   else ("CPUExecutionProvider",))
        self.input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.session.run(None, {self.input: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(logits).to(x.device)
