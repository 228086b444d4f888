"""How much of an ONNX file each phone accelerator takes, by ONNX Runtime's own mobile usability
checker (`python -m onnxruntime.tools.check_onnx_model_mobile_usability`): the nodes the NNAPI
(Android) and Core ML (iOS, NeuralNetwork and MLProgram) providers can take, in how many
partitions, and the checker's verdict. Every partition boundary is a copy between the CPU and
the accelerator, so one partition covering every node is what "runs on the accelerator" means.

The checker optimises the graph at ONNX Runtime's basic level first, as a device session does,
and counts a node only where its shapes are fixed (`require_fixed_input_sizes`).
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

PROVIDERS = ("NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")
CHECKER_VERDICTS = {"YES": "should work well", "MAYBE": "may work", "NO": "not recommended"}


@dataclass(frozen=True)
class Coverage:
    """One provider's share of one file."""

    provider: str
    nodes: int
    supported: int
    partitions: int
    verdict: str  # the checker's: YES, MAYBE or NO
    unsupported_ops: list[str]

    @property
    def whole(self) -> bool:
        return self.nodes > 0 and self.supported == self.nodes and self.partitions == 1

    def words(self) -> str:
        return (f"{self.provider}: {self.supported}/{self.nodes} nodes in {self.partitions} partition"
                f"{'s' if self.partitions != 1 else ''} ({self.verdict}, {CHECKER_VERDICTS[self.verdict]})")

    def to_dict(self) -> dict:
        return asdict(self)


def coverage(path: Path) -> list[Coverage]:
    """NNAPI and Core ML coverage of the ONNX file `path`, as ONNX Runtime's checker counts it."""
    from onnxruntime.tools.mobile_helpers.usability_checker import check_coreml_partitions, check_nnapi_partitions
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    checkers = {"NNAPI": lambda m: check_nnapi_partitions(m, True),
                "CoreML NeuralNetwork": lambda m: check_coreml_partitions(m, True, "coreml_supported_neuralnetwork_ops.md"),
                "CoreML MLProgram": lambda m: check_coreml_partitions(m, True, "coreml_supported_mlprogram_ops.md")}
    quiet = logging.getLogger("usability_checker")
    quiet.setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        optimize_model(Path(path), optimized, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        found = []
        for provider in PROVIDERS:
            info = checkers[provider](model)
            found.append(Coverage(provider, info.num_nodes, info.num_supported_nodes, info.num_partitions,
                                  info.suitability().name, sorted(info.unsupported_ops)))
    return found


def advice(by_file: dict[str, list[Coverage]]) -> str:
    """One line: which file to hand to which accelerator, from the measured coverage."""
    whole = {p: [f for f, cs in by_file.items() for c in cs if c.provider == p and c.whole] for p in PROVIDERS}
    android = f"Android NNAPI: {whole['NNAPI'][0]}" if whole["NNAPI"] else "Android NNAPI: no file runs whole (CPU)"
    ios_files = whole["CoreML NeuralNetwork"] or whole["CoreML MLProgram"]
    ios = (f"iOS Core ML: {ios_files[-1]}" if ios_files
           else "iOS Core ML: no file runs whole (set deploy.target = coreml for an fp32 fixed-shape file)")
    return f"{android}; {ios}; anything else runs on the CPU provider"
