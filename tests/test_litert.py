"""LiteRT for Android: `deploy.target = litert` converts the student with litert-torch, runs the fp32
and int8 .tflite in LiteRT's own interpreter on uint8 NHWC pixels, holds them against the ONNX file
of the same weights, and ships the measured choice as deploy/model.tflite with its tensors in the
card. Skipped where the litert extra is not installed."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import cli_args

from compress.core.errors import CompressError
from compress.exports import litert
from compress.exports.session import cpu_session, run_logits
from compress.pipeline.cli import main

# found, not imported (litert.require): importing litert_torch loads JAX (~3 s, and thread pools
# that a later fork in the same worker must not inherit) in every worker that collects this file
try:
    litert.require()
except CompressError:
    pytest.skip("the litert extra is not installed", allow_module_level=True)


def test_the_pixels_a_tflite_takes_are_the_crops_the_onnx_file_takes():
    from compress.exports.litert import to_pixels
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    images = ((pixels.transpose(0, 3, 1, 2) / 255.0 - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1)))
    assert np.array_equal(to_pixels(images.astype(np.float32), mean, std), pixels)


@pytest.mark.slow
def test_litert_target_ships_a_measured_tflite_that_runs_in_the_interpreter(digits_folder, tmp_path):
    from compress.exports.litert import LiteRTModel, to_pixels
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(digits_folder, out, deploy__target="litert", distill__baseline="false",
                                               quantize__candidates='["qdq_u8s8"]', export__ort="false",
                                               prune__enabled="false", export__mobile="false"))  # the target, no more
    assert result.exit_code == 0, result.output
    decision = json.loads((out / "onnx/quantize.json").read_text())
    tfl = decision["litert"]
    assert tfl["chosen"] in ("fp32", "int8") and set(tfl["candidates"]) == {"fp32", "int8"}
    assert (out / "deploy/model.tflite").read_bytes() == (out / tfl["file"]).read_bytes()
    assert tfl["io"]["input"]["shape"] == [1, 16, 16, 3] and tfl["io"]["input"]["dtype"] == "uint8"
    # the shipped file, rerun here in LiteRT on the val crops, against the ONNX file of the same weights
    onnx_file = out / f"onnx/{decision['source']}.onnx"
    images = np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float32).clip(-2, 2)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    pixels = to_pixels(images, mean, std)
    back = ((pixels.transpose(0, 3, 1, 2) / 255.0 - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1)))
    onnx_logits = run_logits(cpu_session(onnx_file), back.astype(np.float32))
    fp32 = LiteRTModel(out / "onnx/litert_fp32.tflite", 1).logits(pixels)
    assert np.abs(fp32 - onnx_logits).max() < 1e-3 * max(1.0, np.abs(onnx_logits).max())
    assert tfl["candidates"]["fp32"]["agreement_with_onnx"] == 1.0
    # int8 weights: a quarter of fp32's bytes; at 0.1 M parameters the graph and its quantization
    # parameters are a fixed ~40% of the file (0.56 measured), so the bound is 0.65
    assert (out / "onnx/litert_int8.tflite").stat().st_size < 0.65 * (out / "onnx/litert_fp32.tflite").stat().st_size
    report = json.loads((out / "report.json").read_text())
    assert report["runtimes"]["litert"]["models"][decision["source"]]["agreement_with_onnxruntime"] >= 0.99
    card = (out / "deploy/model_card.md").read_text()
    assert "## LiteRT (model.tflite)" in card and "uint8 RGB pixels, NHWC [1, 16, 16, 3]" in card
