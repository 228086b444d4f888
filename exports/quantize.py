"""int8 static quantization with onnxruntime.quantization, calibrated on real training images,
and the choice between int8 layouts by measurement.

ONNX Runtime's pre-processing (shape inference, graph optimisation that folds BatchNorm into
Conv) runs first, as its documentation advises. Which int8 layout is fastest depends on the
CPU: on AVX2 QDQ S8S8 (ORT's recommended default) was slower than fp32 while QOperator U8S8
with reduce_range was faster (measured on this project's 2-core AVX2 machine). So `choose` keeps the fastest candidate within
the accuracy budget, and the fp32 model when no candidate beats it.

Two more candidates are built the same way so the report shows them measured rather than
dismissed: `dynamic` (ORT dynamic quantization) quantizes only MatMul/Gemm, i.e. the classifier
head of a CNN; its convolutions stay fp32 (ConvInteger exists but ORT documents dynamic
quantization for RNN/transformer MatMuls), so expect no speed-up. `fp16` halves the file, but
ONNX Runtime's CPU provider has few fp16 kernels and inserts casts; it is meant for GPUs/NPUs.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import chdir, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from compress.core.budget import within_budget
from compress.core.config import QuantizeConfig
from compress.core.errors import CompressError
from compress.exports.onnx import INPUT_NAME, set_metadata

CALIBRATORS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
TYPES = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}


class ArrayReader(CalibrationDataReader):
    """Feeds calibration images one at a time, as ONNX Runtime's calibrators expect."""

    def __init__(self, images: np.ndarray):
        self._items = iter([{INPUT_NAME: images[i:i + 1].astype(np.float32)} for i in range(len(images))])

    def get_next(self):
        return next(self._items, None)


@dataclass(frozen=True)
class Int8Recipe:
    """A static int8 layout: the graph form (QDQ pairs of standard operators, or ONNX Runtime's
    QOperator kernels) and the types of activations and weights, e.g. "qdq_u8s8"."""

    layout: Literal["qdq", "qoperator"]
    activations: Literal["u8", "s8"]
    weights: Literal["u8", "s8"]

    @classmethod
    def parse(cls, name: str) -> Int8Recipe:
        layout, _, types = name.partition("_")
        activations, weights = types[:2], types[2:]
        if layout not in ("qdq", "qoperator") or activations not in TYPES or weights not in TYPES:
            raise CompressError(f"{name!r} is not a static int8 layout; valid: qdq_u8s8, qdq_s8s8, qoperator_u8s8, "
                                "qoperator_s8s8")
        return cls(layout, activations, weights)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        return f"{self.layout}_{self.activations}{self.weights}"

    def as_qdq(self) -> Int8Recipe:
        """The same types in QDQ form (what ONNX Runtime's per-layer debugger reads)."""
        return Int8Recipe("qdq", self.activations, self.weights)

    def ort(self) -> tuple[QuantFormat, QuantType, QuantType]:
        return (QuantFormat.QOperator if self.layout == "qoperator" else QuantFormat.QDQ), \
            TYPES[self.activations], TYPES[self.weights]


def _keep_metadata(target: Path, source: Path, description: str) -> None:
    """Copy `source`'s metadata_props (labels, preprocessing, ...) onto `target`, note how it was made."""
    metadata = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    model = onnx.load(str(target))
    set_metadata(model, {**metadata, "quantization": description})
    onnx.save(model, str(target))
    onnx.checker.check_model(str(target))


@contextmanager
def preprocessed(source: Path) -> Iterator[Path]:
    """ORT's quantization pre-processing (shape inference, Conv+BN fusion) of `source`, in a
    temporary file; one pass serves every candidate built from the same source."""
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        _pre_process(source.resolve(), prepped)
        yield prepped


def _pre_process(source: Path, prepped: Path) -> None:
    """Shape inference and fusion into `prepped`, run inside `prepped`'s folder: when symbolic shape
    inference gives up, ONNX Runtime saves its partial graph as sym_shape_infer_temp.onnx (+ weights)
    into the working directory, which left 223 MB in the user's folder for a Swin student."""
    with chdir(prepped.parent):
        try:
            quant_pre_process(str(source), str(prepped), skip_symbolic_shape=False)
        except Exception:  # symbolic shape inference cannot follow every graph (Swin's window reshapes)
            try:
                quant_pre_process(str(source), str(prepped), skip_symbolic_shape=True)
            except Exception:  # the candidates are then built from the exported graph as it is
                shutil.copyfile(source, prepped)


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after the producers of its inputs (the fp16 converter appends
    its input casts at the end of the node list, which onnx.checker rejects)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("graph has a cycle or an input nobody produces")
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(source: Path, target: Path) -> None:
    """fp16 weights and activations inside, fp32 input/output so clients need not change."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    topological_sort(model.graph)
    onnx.save(model, str(target))
    _keep_metadata(target, source, "fp16 (keep_io_types: float32 input and output)")


def quantize_dynamic_int8(source: Path, target: Path, prepped: Path | None = None) -> None:
    """int8 weights for MatMul/Gemm, activations quantized per call; convolutions stay fp32."""
    from onnxruntime.quantization import quantize_dynamic
    with nullcontext(prepped) if prepped else preprocessed(source) as model_in:
        quantize_dynamic(str(model_in), str(target), op_types_to_quantize=["MatMul", "Gemm"],
                         weight_type=QuantType.QInt8)
    _keep_metadata(target, source, "int8 dynamic, MatMul/Gemm only (convolutions fp32)")


def build_candidate(source: Path, target: Path, calibration: np.ndarray, cfg: QuantizeConfig, candidate: str,
                    prepped: Path | None = None) -> None:
    """Any candidate by name: a static int8 layout, `dynamic` or `fp16` (`prepped`: see `preprocessed`)."""
    if candidate == "fp16":
        convert_fp16(source, target)
    elif candidate == "dynamic":
        quantize_dynamic_int8(source, target, prepped)
    else:
        quantize_int8(source, target, calibration, cfg, candidate, prepped)


def quantize_int8(source: Path, target: Path, calibration: np.ndarray, cfg: QuantizeConfig,
                  candidate: str = "qoperator_u8s8", prepped: Path | None = None,
                  keep_float: list[str] | tuple = ()) -> None:
    """Write an int8 copy of `source` to `target` in layout `candidate`, keeping its metadata_props;
    `keep_float`: nodes (of the pre-processed graph) left in float (mixed precision)."""
    fmt, activations, weights = Int8Recipe.parse(candidate).ort()
    reduce_range = cfg.reduce_range and activations == QuantType.QUInt8  # only u8s8 kernels can overflow
    keep_float = list(dict.fromkeys([*cfg.keep_float, *keep_float]))  # the user's layers, then the search's
    with nullcontext(prepped) if prepped else preprocessed(source) as model_in:
        quantize_static(str(model_in), str(target), ArrayReader(calibration), quant_format=fmt,
                        per_channel=cfg.per_channel, reduce_range=reduce_range, activation_type=activations,
                        weight_type=weights, calibrate_method=CALIBRATORS[cfg.calibration],
                        nodes_to_exclude=keep_float)
    mixed = f", {len(keep_float)} layers kept in float" if keep_float else ""
    _keep_metadata(target, source, f"int8 static {candidate}, {cfg.calibration} calibration"
                   f"{', per-channel' if cfg.per_channel else ''}{', reduce_range' if reduce_range else ''}{mixed}")


@dataclass
class Measured:
    name: str
    p50_ms: float
    accuracy: float
    onnx_bytes: int
    vendor_ops: list[str] = field(default_factory=list)  # non-standard operator domains the file needs


def choose(candidates: list[Measured], fp32: Measured, max_accuracy_drop: float) -> tuple[str, str]:
    """(winner, why): the fastest candidate within the accuracy budget that beats fp32, else 'fp32'."""
    allowed = [c for c in candidates if within_budget(fp32.accuracy, c.accuracy, max_accuracy_drop)]
    rejected = [c.name for c in candidates if c not in allowed]
    note = f"; over the accuracy budget ({max_accuracy_drop} pts): {', '.join(rejected)}" if rejected else ""
    faster = sorted((c for c in allowed if c.p50_ms < fp32.p50_ms), key=lambda c: c.p50_ms)
    if not faster:
        return "fp32", f"no int8 candidate within the accuracy budget beat fp32's {fp32.p50_ms:.2f} ms{note}"
    best = faster[0]
    return best.name, (f"fastest within {max_accuracy_drop} pts: {best.p50_ms:.2f} ms vs fp32 {fp32.p50_ms:.2f} ms "
                       f"({fp32.p50_ms / best.p50_ms:.2f}x), accuracy {best.accuracy:.4f} vs {fp32.accuracy:.4f}{note}")
