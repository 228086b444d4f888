"""Which layers suffer from int8? Per-layer quantization noise, measured with ONNX Runtime's
quantization debugger (onnxruntime.quantization.qdq_loss_debug): the float model and its QDQ
int8 form run on the same calibration images with every intermediate tensor exposed, and each
quantized tensor's signal-to-quantization-noise ratio (SQNR, dB) is computed

  cumulatively: the float model's tensor vs the int8 model's (all the error up to that point).

A layer's sensitivity is the SQNR it loses: its inputs' cumulative SQNR minus its output's (a
Relu or Clip after a Conv is counted with the Conv, whose rounding it carries). The local
"before Quantize vs after Dequantize" figure is not used to rank: with uint8 activations the
quantizer also clips negatives where ONNX Runtime folded a Relu away, which reads as noise.
The layers that lose most are the ones a mixed-precision candidate keeps in float
(`nodes_to_exclude`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_activation_error,
    create_activation_matching,
    modify_model_output_intermediate_tensors,
)

from compress.exports.quantize import ArrayReader

PASS_THROUGH = ("Relu", "Clip")


def layer_sensitivity(float_model: Path, qdq_model: Path, images: np.ndarray) -> list[dict]:
    """Rows {node, op, tensor, sqnr_db (cumulative), sqnr_lost_db}, most sensitive first.
    `float_model` is the pre-processed float graph the QDQ model was quantized from."""
    with tempfile.TemporaryDirectory() as tmp:
        exposed_float, exposed_qdq = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(float_model), str(exposed_float))
        modify_model_output_intermediate_tensors(str(qdq_model), str(exposed_qdq))
        float_acts = collect_activations(str(exposed_float), ArrayReader(images))
        qdq_acts = collect_activations(str(exposed_qdq), ArrayReader(images))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    cumulative = {t: float(e["xmodel_err"]) for t, e in errors.items() if np.isfinite(e.get("xmodel_err", np.nan))}
    graph = onnx.load(str(float_model), load_external_data=False).graph
    producers = {out: node for node in graph.node for out in node.output}
    rows = []
    for tensor, out_sqnr in cumulative.items():
        node = producers.get(tensor)
        if node is None:
            continue
        layer = node
        if node.op_type in PASS_THROUGH and node.input[0] in producers:
            layer = producers[node.input[0]]  # the Conv whose output the Relu carries
        before = [cumulative[i] for i in layer.input if i in cumulative]
        lost = (min(before) - out_sqnr) if before else None
        rows.append({"node": layer.name, "op": layer.op_type, "tensor": tensor, "sqnr_db": out_sqnr,
                     "sqnr_lost_db": lost})
    return sorted(rows, key=lambda r: -(r["sqnr_lost_db"] if r["sqnr_lost_db"] is not None else -1e9))
