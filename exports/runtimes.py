"""Runtimes besides ONNX Runtime that an edge team may deploy with, each an optional extra
(`pip install 'compress-distill[openvino]'`), checked by actually running the model here.

OpenVINO reads the deployable ONNX file as is (standard operators only; a QOperator int8 file
with com.microsoft operators does not load) and converts it to its own IR (`model.xml` +
`model.bin`) with `openvino.convert_model`. ExecuTorch cannot read ONNX: it runs the `.pte`
program written beside the ONNX file from the same PyTorch weights (compress.exports.executorch). Its latency is timed in this process (the ORT figures
come from fresh processes), so compare runtimes by their ratios to the same model, not across.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from compress.core.errors import CompressError

EXTRAS = {"openvino": "openvino", "executorch": "executorch"}  # runtime -> the extra that installs it
READS_ONNX = ("openvino",)  # runtimes that load the ONNX file itself; ExecuTorch reads its own .pte


def available(runtime: str) -> bool:
    return importlib.util.find_spec(EXTRAS[runtime]) is not None


def require(runtime: str) -> None:
    if not available(runtime):
        raise CompressError(f"deploy.target = {runtime} needs the {runtime} runtime: "
                            f"pip install 'compress-distill[{EXTRAS[runtime]}]'")


def installed() -> list[str]:
    return [r for r in EXTRAS if available(r)]


class OpenVINOModel:
    """An ONNX file compiled by OpenVINO for the CPU."""

    def __init__(self, path: Path, threads: int):
        import openvino as ov
        self.version = ov.get_version()
        core = ov.Core()
        # f32: on CPUs with AMX or AVX-512 BF16 OpenVINO would otherwise run fp32 layers in bf16 by
        # default (measured here: 15 of 16 top-1 agreeing with ONNX Runtime on a random ResNet18)
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                           {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})

    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return np.concatenate([np.asarray(self.compiled(np.ascontiguousarray(images[i:i + batch_size]))[0])
                               for i in range(0, len(images), batch_size)])

    def latency_ms(self, image: np.ndarray, warmup: int, runs: int) -> list[float]:
        """`runs` batch-1 timings (ms) after `warmup` calls."""
        request = self.compiled.create_infer_request()
        x = np.ascontiguousarray(image[:1])
        samples = []
        for i in range(warmup + runs):
            t0 = time.perf_counter_ns()
            request.infer([x])
            if i >= warmup:
                samples.append((time.perf_counter_ns() - t0) / 1e6)
        return samples


def runtime_file(runtime: str, onnx_file: Path) -> Path | None:
    """The file `runtime` runs for the model saved as `onnx_file`, or None when there is none."""
    if runtime in READS_ONNX:
        return onnx_file
    pte = onnx_file.with_suffix(".pte")
    return pte if pte.is_file() else None


def load(runtime: str, path: Path, threads: int):
    """`path` (the ONNX file, or the runtime's own file) loaded in `runtime`."""
    if runtime == "openvino":
        return OpenVINOModel(path, threads)
    if runtime == "executorch":
        from compress.exports.executorch import ExecuTorchModel
        return ExecuTorchModel(path if path.suffix == ".pte" else path.with_suffix(".pte"), threads)
    raise ValueError(f"unknown runtime {runtime}")


def write_openvino_ir(onnx_file: Path, xml_file: Path) -> None:
    """OpenVINO IR (`model.xml` + `model.bin` beside it) converted from the ONNX file. Read by
    Core.read_model (the ONNX frontend), not `convert_model`: the same graph (outputs identical
    here), without the converter's telemetry, which started 16 processes for one conversion."""
    import openvino as ov
    xml_file.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Core().read_model(str(onnx_file)), str(xml_file))


def version(runtime: str) -> str:
    if runtime == "openvino":
        import openvino as ov
        return ov.get_version()
    if runtime == "executorch":
        from compress.exports.executorch import version as executorch_version
        return executorch_version()
    raise ValueError(f"unknown runtime {runtime}")
