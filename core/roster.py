"""The models a run produces and every artifact's name: written down once, read by every stage.

    teacher         the big model (ResNet50), fine-tuned or given
    student         the distilled small model (ResNet18)
    baseline        the student's CE-only twin (same init and data order), when distill.baseline
    student_pruned  the student after structured pruning and a fine-tune, when prune.enabled
    student_int8    the int8 ONNX of the final fp32 student, when quantize.enabled

Which of them ships is decided by measurement in the quantize stage (`deployable`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compress.core.config import Config
    from compress.core.documents import QuantizeDecision

TEACHER, STUDENT, BASELINE, PRUNED, INT8 = "teacher", "student", "baseline", "student_pruned", "student_int8"

# ---------------------------------------------------------------- fixed artifact names
MANIFEST = "manifest.json"
LOCK = ".compress.lock"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
EXPORT_INFO = "onnx/models.json"
QUANTIZE_INFO = "onnx/quantize.json"
SENSITIVITY = "onnx/sensitivity.json"
PRUNE_ROUNDS = "checkpoints/prune_rounds.json"  # prune.target = accuracy: every round's checkpoint and val accuracy
ROUND_EXPORTS = "onnx/prune_rounds.json"  # prune.target = accuracy: every round as ONNX (points a search chooses from)
POINTS = "points/points.json"  # a search: every point's file (fp32 and int8), student, steps, val accuracy
MEASURED = "points/measured.json"  # a search: every point timed in one interleaved session, test figures
DEPLOY_ONNX = "deploy/model.onnx"
DEPLOY_WITH_PREPROCESSING = "deploy/model_with_preprocessing.onnx"
DEPLOY_ORT = "deploy/model.ort"  # made from the Android file (model_mobile.onnx) when export.mobile is on
DEPLOY_MOBILE = "deploy/model_mobile.onnx"  # batch 1, fixed shapes, int8 as QDQ uint8: what NNAPI takes whole
DEPLOY_IOS = "deploy/model_ios.onnx"  # fp32, batch 1, fixed shapes: what Core ML takes (deploy.target = coreml)
DEPLOY_ACCELERATORS = "deploy/accelerators.json"  # NNAPI / Core ML coverage of every deploy/ file
DEPLOY_OPENVINO = ("deploy/openvino/model.xml", "deploy/openvino/model.bin")
DEPLOY_OPS = "deploy/model.required_operators.config"
DEPLOY_PTE = "deploy/model.pte"  # ExecuTorch (deploy.target = executorch)
DEPLOY_TFLITE = "deploy/model.tflite"  # LiteRT (deploy.target = litert)
TFLITE_FILES = {"fp32": "onnx/litert_fp32.tflite", "int8": "onnx/litert_int8.tflite"}  # both measured
# ExecuTorch's own int8 (PT2E, XNNPACK quantizer): not named like student_int8.onnx, so runtime
# comparisons pair each .pte only with the ONNX file holding the same weights
PTE_INT8 = "onnx/student_int8.xnnpack.pte"
DEPLOY_LABELS = "deploy/labels.txt"
DEPLOY_CARD = "deploy/model_card.md"


def checkpoint_path(name: str) -> str:
    return f"checkpoints/{name}.pt"


def round_checkpoint(round_number: int) -> str:
    """A prune round's model (prune.target = accuracy), a point a search chooses from."""
    return f"checkpoints/{PRUNED}_r{round_number}.pt"


def round_name(round_number: int) -> str:
    return f"{PRUNED}_r{round_number}"


def prune_rounds(cfg: Config) -> bool:
    """Pruning in rounds, each kept as a model (prune.target = accuracy)."""
    return cfg.prune.enabled and cfg.prune.target == "accuracy"


def training_state_path(name: str) -> str:
    """Per-epoch training state, kept only while training is unfinished (for resume)."""
    return f"checkpoints/{name}.training.pt"


def onnx_path(name: str) -> str:
    return f"onnx/{name}.onnx"


def pte_path(name: str) -> str:
    """The ExecuTorch program of an ONNX model, beside it (written only for deploy.target = executorch)."""
    return f"onnx/{name}.pte"


def student_folder(arch: str) -> str:
    """A search's run directory of one student (timm:x -> students/timm_x)."""
    return "students/" + arch.replace(":", "_").replace("/", "_")


def plot_path(name: str) -> str:
    return f"plots/{name}.png"


# ---------------------------------------------------------------- which models a config makes

def fp32_models(cfg: Config) -> list[str]:
    """The fp32 models of this config (each becomes an ONNX file), in the order the report lists them."""
    return [TEACHER, STUDENT] + ([BASELINE] if cfg.distill.baseline else []) + ([PRUNED] if cfg.prune.enabled else [])


def torch_models(cfg: Config) -> list[str]:
    """The fp32 models that exist as PyTorch checkpoints: all but a teacher given as an ONNX file."""
    return [n for n in fp32_models(cfg) if not (n == TEACHER and cfg.teacher.onnx)]


def teacher_file(cfg: Config) -> str:
    """What the teacher stage leaves for the stages it teaches: a checkpoint, or the given ONNX file
    (taking the run's preprocessing) when teacher.onnx is set."""
    return onnx_path(TEACHER) if cfg.teacher.onnx else checkpoint_path(TEACHER)


def final_fp32_student(cfg: Config) -> str:
    """The student that is quantized and shipped: the pruned one when pruning is on."""
    return PRUNED if cfg.prune.enabled else STUDENT


def all_models(cfg: Config) -> list[str]:
    """Every model exported to ONNX and benchmarked."""
    return fp32_models(cfg) + ([INT8] if cfg.quantize.enabled else [])


def deployable(cfg: Config, decision: QuantizeDecision | None) -> str:
    """The model an edge team should take: int8 when it won on this CPU (the quantize stage's
    `decision`), else the fp32 student."""
    if cfg.quantize.enabled and decision is not None:
        return decision.deployable
    return final_fp32_student(cfg)


def comparisons(cfg: Config) -> tuple[tuple[str, str], ...]:
    """Which model is judged against which, on the same images: what the teacher added (student vs
    its CE twin and vs the teacher), and what each compression step cost (variant vs its source)."""
    pairs = [(STUDENT, TEACHER)]
    if cfg.distill.baseline:
        pairs.append((STUDENT, BASELINE))
    if cfg.prune.enabled:
        pairs.append((PRUNED, STUDENT))
    if cfg.quantize.enabled:
        pairs.append((INT8, final_fp32_student(cfg)))
    return tuple(pairs)
