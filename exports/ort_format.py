"""ONNX Runtime's own format (.ort) for mobile and minimal builds, with the required-operators
config that a custom minimal ORT build is compiled from (`onnxruntime.tools.convert_onnx_models_to_ort`).

Graph optimisations are applied at conversion time ("Fixed" style), so the file loads without
an optimiser on the device; it is therefore specific to the ORT version that wrote it, which
the model card records. Only the *basic* optimisation level is applied (constant folding,
redundant-node removal): the extended/all levels bake in x86 layout transforms (NCHWc, NHWC
kernels) that an ARM phone build may not have, and the file is meant for devices we do not know.
A QOperator int8 model keeps its QLinearConv kernels at this level; a QDQ model's Q/DQ pairs are
fused only by a full ORT build at load time (a minimal build would need the "Runtime" style).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import onnxruntime as ort

from compress.core.errors import CompressError, summary

LEVEL_VARIABLE = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"


def convert_to_ort(source: Path, target: Path, config_target: Path) -> None:
    """Write `target` (.ort) and `config_target` (required operators) for the ONNX file `source`."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "in" / "model.onnx"
        staged.parent.mkdir()
        shutil.copyfile(source, staged)
        out = Path(tmp) / "out"
        log = io.StringIO()
        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
        level = os.environ.get(LEVEL_VARIABLE)
        os.environ[LEVEL_VARIABLE] = "basic"
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                convert_onnx_models_to_ort(staged, output_dir=out, optimization_styles=[OptimizationStyle.Fixed])
        except Exception as exc:
            raise CompressError(f"ORT-format conversion of {source.name} failed: {summary(exc, 200)}") from None
        finally:
            if level is None:
                os.environ.pop(LEVEL_VARIABLE, None)
            else:
                os.environ[LEVEL_VARIABLE] = level
        ort_files = list(out.glob("*.ort"))
        configs = list(out.glob("*.config"))
        if len(ort_files) != 1 or len(configs) != 1:
            raise CompressError(f"ORT-format conversion of {source.name} wrote {[p.name for p in out.iterdir()]}; "
                                f"expected one .ort and one .config (log: {log.getvalue()[-300:]})")
        shutil.copyfile(ort_files[0], target)
        lines = configs[0].read_text().splitlines()
        lines = [line for line in lines if not line.startswith("# -")]  # drop the temporary path
        config_target.write_text("\n".join(lines).replace("model/s:", f"{target.name}") + "\n")
    ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])  # it must load here too
