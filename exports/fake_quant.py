"""Fake-quantized models for quantization-aware training (QAT), and their export as a QDQ ONNX
file that ONNX Runtime runs in int8.

Tooling: PyTorch's own FX graph-mode QAT (`torch.ao.quantization.quantize_fx.prepare_qat_fx`),
which ships with the pinned torch and needs no other package. PyTorch's newer PT2E flow moved to
torchao and exports only through the dynamo ONNX exporter (onnxscript), two dependencies this
project does not otherwise need; the FX flow inserts the same FakeQuantize modules, and the
TorchScript exporter writes each of them as a standard QuantizeLinear/DequantizeLinear pair.

Scheme (Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference"; Krishnamoorthi 2018 for folding BatchNorm before a short
fine-tune): BatchNorm is folded into the convolutions first, so training sees exactly the
weights that ship; activations are uint8 per-tensor affine (moving-average min/max), weights
int8 symmetric, per output channel when quantize.per_channel is on. That is the QDQ u8s8 layout
the post-training candidates use, so QAT and PTQ differ only in how the ranges and weights were
found.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch.ao.quantization import (
    FakeQuantize,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    QConfig,
    QConfigMapping,
    disable_observer,
)
from torch.fx.experimental.optimization import fuse as fold_batchnorm

from compress.exports.metadata import INPUT_NAME, OUTPUT_NAME, set_metadata


def qat_qconfig(per_channel: bool) -> QConfig:
    """uint8 per-tensor activations (min/max over a calibration pass, then frozen), int8
    symmetric weights (per channel or per tensor, following the weights as they train)."""
    activation = FakeQuantize.with_args(observer=MinMaxObserver, quant_min=0, quant_max=255,
                                        dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    if per_channel:
        weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                                        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    else:
        weight = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
                                        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    return QConfig(activation=activation, weight=weight)


def fake_quant_model(model: torch.nn.Module, example: torch.Tensor, per_channel: bool) -> torch.fx.GraphModule:
    """`model` (fp32, left untouched) with BatchNorm folded and fake quantization inserted, in train mode."""
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    folded = fold_batchnorm(copy.deepcopy(model).cpu().eval())
    folded.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX graph mode's notice that PT2E moved to torchao
        return prepare_qat_fx(folded, QConfigMapping().set_global(qat_qconfig(per_channel)), (example.cpu(),))


@torch.no_grad()
def calibrate_activations(model: torch.fx.GraphModule, batches, device: torch.device) -> None:
    """Set every activation range to its min/max over `batches` (ONNX Runtime's min-max calibration),
    then freeze them: a short fine-tune then learns weights against fixed ranges instead of ranges
    dominated by its first batch (a moving average over a few dozen steps barely moves)."""
    model.eval()
    for x, *_ in batches:
        model(x.to(device))
    for name, module in model.named_modules():
        if isinstance(module, FakeQuantize) and not name.endswith("weight_fake_quant"):
            module.disable_observer()


def export_fake_quant(model: torch.nn.Module, path, crop: int, opset: int, metadata: dict[str, str]) -> None:
    """Freeze the learned ranges and write `model` as QDQ ONNX with int8 weights stored as int8."""
    model = model.cpu().eval()
    model.apply(disable_observer)
    example = torch.zeros(1, 3, crop, crop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=max(opset, 13), dynamo=False)  # per-axis Q/DQ needs opset 13
    proto = onnx.load(str(path))
    store_weights_as_int8(proto.graph)
    set_metadata(proto, metadata)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def store_weights_as_int8(graph: onnx.GraphProto) -> None:
    """Replace each QuantizeLinear applied to a constant weight by its int8 result, so the file
    holds int8 weights (a quarter of the size) and the graph reads DQ(int8 weight) -> Conv, the
    pattern ONNX Runtime fuses into an integer convolution. Rounding is ONNX's: half to even."""
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    constants.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                      if n.op_type == "Constant" and n.attribute[0].name == "value"})
    for n in graph.node:  # the exporter passes some constants through Identity nodes
        if n.op_type == "Identity" and n.input[0] in constants:
            constants[n.output[0]] = constants[n.input[0]]
    folded, drop = [], []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or not all(i in constants for i in node.input):
            continue
        x, scale, zero = (constants[i] for i in node.input)
        x, scale = x.astype(np.float64), scale.astype(np.float64)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * x.ndim
        if scale.ndim == 1 and x.ndim > 1:
            shape[axis] = -1
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(x / scale.reshape(shape)) + zero.astype(np.float64).reshape(shape), info.min, info.max)
        folded.append(numpy_helper.from_array(q.astype(zero.dtype), node.output[0]))
        drop.append(node)
    for node in drop:
        graph.node.remove(node)
    graph.initializer.extend(folded)
    used = {i for n in graph.node for i in n.input}
    for node in [n for n in graph.node if n.op_type in ("Identity", "Constant") and n.output[0] not in used]:
        graph.node.remove(node)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
