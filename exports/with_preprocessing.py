"""`model_with_preprocessing.onnx`: the deployable model with the documented preprocessing inside
the graph, in standard ONNX operators, so an edge team feeds decoded pixels and cannot get the
recipe wrong.

Input `image`: uint8 [1, H, W, 3] RGB, any H and W, already turned upright by its EXIF
orientation (a graph cannot read the tag: the client applies it when decoding). Inside: resize the shorter side to `resize`
(bilinear with antialiasing, ONNX Resize-18, the longer side int(resize · long / short)), round
to uint8 values as PIL does, centre crop `crop` (offsets rounded half to even, ONNX Round as
Python's round), scale to [0, 1], normalise by mean and std, NCHW, then the model. Output: the
model's logits. PIL's fixed-point resampler and ONNX Runtime's float one can differ by one grey
level on some pixels, so agreement with the plain model is measured, not assumed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compress.core.preprocess import preprocess_array
from compress.exports.metadata import INPUT_NAME, OUTPUT_NAME, read_metadata
from compress.exports.session import cpu_session

OPSET = 18  # Resize with antialias
IMAGE = "image"


def _const(name: str, value, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def preprocessing_graph(resize: int, crop: int, mean, std) -> onnx.GraphProto:
    """uint8 [1, H, W, 3] → float [1, 3, crop, crop], the documented recipe."""
    nodes = [
        helper.make_node("Cast", [IMAGE], ["rgb_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["rgb_f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Shape", ["nchw"], ["shape"]),
        helper.make_node("Slice", ["shape", "i2", "i4"], ["hw"]),  # [H, W]
        helper.make_node("ReduceMin", ["hw"], ["short"], keepdims=1),
        helper.make_node("Mul", ["hw", "resize"], ["hw_scaled"]),
        helper.make_node("Div", ["hw_scaled", "short"], ["new_hw"]),  # int64: floor, as int() on positives
        helper.make_node("Slice", ["shape", "i0", "i2"], ["nc"]),
        helper.make_node("Concat", ["nc", "new_hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["nchw", "", "", "sizes"], ["resized"], mode="linear", antialias=1,
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Round", ["resized"], ["rounded"]),  # PIL keeps 8-bit values
        helper.make_node("Clip", ["rounded", "zero", "full"], ["pixels"]),
        helper.make_node("Sub", ["new_hw", "crop"], ["margin"]),
        helper.make_node("Cast", ["margin"], ["margin_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["margin_f", "two"], ["half_margin"]),
        helper.make_node("Round", ["half_margin"], ["offset_f"]),
        helper.make_node("Cast", ["offset_f"], ["starts"], to=TensorProto.INT64),
        helper.make_node("Add", ["starts", "crop"], ["ends"]),
        helper.make_node("Slice", ["pixels", "starts", "ends", "axes_hw"], ["cropped"]),
        helper.make_node("Div", ["cropped", "full"], ["unit"]),
        helper.make_node("Sub", ["unit", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], [INPUT_NAME]),
    ]
    inits = [_const("i0", [0], np.int64), _const("i2", [2], np.int64), _const("i4", [4], np.int64),
             _const("resize", [resize], np.int64), _const("crop", [crop], np.int64),
             _const("axes_hw", [2, 3], np.int64), _const("zero", 0.0, np.float32),
             _const("full", 255.0, np.float32), _const("two", 2.0, np.float32),
             _const("mean", np.reshape(mean, (1, 3, 1, 1)), np.float32),
             _const("std", np.reshape(std, (1, 3, 1, 1)), np.float32)]
    image = helper.make_tensor_value_info(IMAGE, TensorProto.UINT8, [1, "height", "width", 3])
    out = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, crop, crop])
    return helper.make_graph(nodes, "preprocessing", [image], [out], inits)


def with_preprocessing(model_path: Path, target: Path) -> None:
    """Write `target`: the model at `model_path` behind its own documented preprocessing."""
    meta = read_metadata(model_path)
    model = onnx.load(str(model_path))
    standard = next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if standard.version < OPSET:
        model = onnx.version_converter.convert_version(model, OPSET)
    pre = helper.make_model(preprocessing_graph(int(meta["resize"]), int(meta["crop"]), json.loads(meta["mean"]),
                                                json.loads(meta["std"])),
                            opset_imports=[helper.make_opsetid("", OPSET)])
    pre.ir_version = model.ir_version
    merged = onnx.compose.merge_models(pre, model, io_map=[(INPUT_NAME, INPUT_NAME)], prefix2="model/")
    prefixed = merged.graph.output[0].name  # the model's logits, renamed by the prefix: name them back
    for node in merged.graph.node:
        node.output[:] = [OUTPUT_NAME if o == prefixed else o for o in node.output]
    merged.graph.output[0].name = OUTPUT_NAME
    del merged.metadata_props[:]
    for p in model.metadata_props:
        merged.metadata_props.add(key=p.key, value=p.value)
    merged.metadata_props.add(key="input", value="uint8 RGB [1, H, W, 3], EXIF orientation applied; preprocessing "
                                                 "inside the graph")
    onnx.checker.check_model(merged, full_check=True)
    onnx.save(merged, str(target))


def agreement(plain: Path, wrapped: Path, images: list[np.ndarray]) -> dict:
    """Top-1 agreement and the largest |logit difference| between `wrapped` fed decoded pixels and
    `plain` fed the documented recipe computed in Python (PIL + NumPy), on `images` (uint8 HWC)."""
    meta = read_metadata(plain)
    resize, crop, mean, std = int(meta["resize"]), int(meta["crop"]), json.loads(meta["mean"]), json.loads(meta["std"])
    plain_session, wrapped_session = cpu_session(plain), cpu_session(wrapped)
    name = plain_session.get_inputs()[0].name
    a = np.concatenate([plain_session.run(None, {name: preprocess_array(img, resize, crop, mean, std)})[0]
                        for img in images])
    b = np.concatenate([wrapped_session.run(None, {IMAGE: np.ascontiguousarray(img[None])})[0] for img in images])
    return {"images": len(images), "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
            "max_abs_logit_diff": float(np.abs(a - b).max())}
