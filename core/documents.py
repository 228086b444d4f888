"""The run's documents, typed: report.json (what the benchmark measured) and onnx/quantize.json
(the int8 decision). They are the contract between the benchmark, the report, the package
stage, the model card, the gate, the CLI and the README scripts, so they are written and read
here and nowhere else.

Each document is a tree of dataclasses. pydantic validates a file on reading (a wrong or missing
field is one line naming it) and converts the nested dataclasses both ways; `to_dict()` writes
the same JSON layout as before the types existed (optional figures such as top-5 accuracy or
the GPU timings are left out when absent, not written as null).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from compress.core.errors import CompressError

T = TypeVar("T")


def _omit(default: Any = None) -> Any:
    """A field left out of the JSON when it is None (an optional figure a report may lack)."""
    return field(default=default, metadata={"omit_none": True})


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get("omit_none") and getattr(value, f.name) is None)}
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


def _validate(kind: type[T], data: Any, where: str) -> T:
    from pydantic import TypeAdapter, ValidationError
    try:
        return TypeAdapter(kind).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise CompressError(f"{where}: {place}: {first['msg'].lower()}; was it written by this compress version?") \
            from None


def read_json(path: str | Path, what: str = "") -> Any:
    """A JSON file's content; a missing or unreadable file is one line naming it."""
    path = Path(path)
    name = f"{what} {path}".strip()
    if not path.is_file():
        raise CompressError(f"{name} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompressError(f"{name} is not valid JSON ({exc})") from None


class Document:
    """A JSON document of the run directory."""

    def to_dict(self) -> dict:
        return _to_json(self)

    @classmethod
    def from_dict(cls: type[T], data: dict, where: str = "document") -> T:
        return _validate(cls, data, where)

    @classmethod
    def read(cls: type[T], path: str | Path) -> T:
        return cls.from_dict(read_json(path), str(path))  # type: ignore[attr-defined]


# ---------------------------------------------------------------- onnx/quantize.json

@dataclass
class Candidate:
    """One measured int8 (or fp32) file: batch-1 p50 in the target runtime, val accuracy, size."""

    name: str
    p50_ms: float
    accuracy: float
    onnx_bytes: int
    vendor_ops: list[str] = field(default_factory=list)  # non-standard operator domains the file needs
    agreement_with_source: float | None = _omit()  # top-1 agreement with the fp32 source on val


@dataclass
class MixedTry:
    k: int  # layers kept in float
    accuracy: float


@dataclass
class MixedPrecision:
    """The mixed-precision candidate: the k most sensitive layers kept in float (k = 1, 2, 4, ...)."""

    name: str
    accuracy: float
    k: int
    float_layers: list[str]
    search: list[MixedTry]


@dataclass
class QatRun:
    """The quantization-aware fine-tune: what it trained with and what it kept."""

    name: str
    loss: str
    teacher_signal: str
    epochs: int
    lr: float
    history: list[dict]
    calibrated_val_accuracy: float
    kept: str
    accuracy: float = 0.0  # val accuracy of the exported QDQ file


@dataclass
class PteCandidate:
    p50_ms: float
    accuracy: float
    onnx_bytes: int  # the .pte's size (named as the ONNX candidates' field)
    vendor_ops: list[str] = field(default_factory=list)
    name: str = ""


@dataclass
class PteChoice:
    """The ExecuTorch choice: fp32 and int8 .pte measured in ExecuTorch, the faster within budget ships."""

    runtime_version: str
    chosen: str  # fp32 | int8
    file: str
    reason: str
    int8_agreement_with_fp32: float
    candidates: dict[str, PteCandidate]


@dataclass
class TfliteCandidate:
    p50_ms: float  # LiteRT's interpreter, batch 1
    accuracy: float  # val, what the budget reads
    onnx_bytes: int  # the .tflite's size (named as the ONNX candidates' field)
    report_accuracy: float
    agreement_with_onnx: float  # top-1, report split, vs the ONNX file of the same weights in ONNX Runtime
    images: int
    onnxruntime_p50_ms: float  # that ONNX file, timed interleaved with the .tflite
    vendor_ops: list[str] = field(default_factory=list)
    name: str = ""


@dataclass
class TfliteChoice:
    """The LiteRT choice: fp32 and int8 .tflite measured in LiteRT, the faster within budget ships."""

    runtime_version: str
    converter: str
    chosen: str  # fp32 | int8
    file: str
    reason: str
    io: dict  # the shipped file's input and output tensors: shape, dtype, scale, zero point
    candidates: dict[str, TfliteCandidate]


@dataclass
class QuantizeDecision(Document):
    """What the quantize stage measured and chose, and which model an edge team should take."""

    source: str  # the fp32 model quantized
    format: str
    chosen: str  # the winning layout, or "fp32"
    int8_file_holds: str  # what onnx/student_int8.onnx is (the winner, or the best int8 for reference)
    deploy_target: str
    vendor_ops: list[str]
    mixed: MixedPrecision | None
    qat: QatRun | None
    executorch: PteChoice | None
    deployable: str
    reason: str
    fp32: Candidate
    candidates: list[Candidate]
    litert: TfliteChoice | None = _omit()  # deploy.target = litert


# ---------------------------------------------------------------- report.json

@dataclass
class DatasetInfo:
    name: str
    classes: list[str]
    train_size: int
    val_size: int
    test_size: int = 0
    figures_from: str = "val"  # the split the report's figures come from: test when there is one
    selection_split: str = "val"
    class_counts: dict[str, dict[str, int]] | None = _omit()  # split -> class -> images
    copies: dict[str, int] | None = _omit()  # split -> images byte-identical to an image of an earlier split

    def lopsided(self) -> bool:
        """The largest class has at least 3x the training images of the smallest: top-1 hides the small ones."""
        train = (self.class_counts or {}).get("train") or {}
        return bool(train) and max(train.values()) >= 3 * max(min(train.values()), 1)

    def copy_warnings(self) -> list[str]:
        """"12 of 153 val images are copies of train images; their figures are optimistic"."""
        sizes = {"val": self.val_size, "test": self.test_size}
        earlier = {"val": "train", "test": "train or val"}
        return [f"{n} of {sizes[s]} {s} images are copies of {earlier[s]} images; their figures are optimistic"
                for s, n in (self.copies or {}).items() if n]

    def sizes(self) -> str:
        """"1151 train / 359 val / 287 test"."""
        return f"{self.train_size} train / {self.val_size} val" + (f" / {self.test_size} test" if self.test_size else "")

    def describe(self) -> str:
        return f"Dataset **{self.name}**: {len(self.classes)} classes, {self.sizes()} images."


@dataclass(kw_only=True)
class Environment:
    cpu: str
    vendor: str = ""
    isa: list[str]
    cores: int | None = None
    threads: int
    os: str = ""
    machine: str = ""
    python: str = ""
    torch: str = ""
    onnxruntime: str = ""
    numpy: str = ""
    gpu: str | None = None


@dataclass
class Comparison:
    """Two models on the same images, McNemar's exact test (measure/stats.py)."""

    model: str
    against: str
    only_a_right: int
    only_b_right: int
    p_value: float
    delta: float  # accuracy of model minus accuracy of against
    verdict: str  # better | worse | not distinguishable
    n: int

    def sentence(self) -> str:
        """"student vs baseline: **not distinguishable** at 95% (Δ −0.55 points on 153 images; ...)"."""
        return (f"{self.model} vs {self.against}: **{self.verdict}** at 95% (Δ {100 * self.delta:+.2f} points on "
                f"{self.n} images; right only for {self.model}: {self.only_a_right}, only for {self.against}: "
                f"{self.only_b_right}; McNemar exact p = {self.p_value:.3g})")


@dataclass
class Latency:
    p50: float
    p90: float = 0.0
    p99: float = 0.0
    mean: float = 0.0
    std: float = 0.0
    iqr_over_median: float = 0.0
    noisy: bool = False
    runs: int = 0


@dataclass
class Interval:
    low: float
    high: float
    n: int


@dataclass
class VsReference:
    """How many times smaller, faster (same-run paired ratio at the first batch size) and cheaper
    than the reference, and the accuracy difference to it."""

    size_x: float
    speed_x: float
    macs_x: float | None
    accuracy_delta: float


@dataclass
class GpuFigures:
    device: str
    precision: str
    latency_ms_by_batch: dict[str, Latency]
    throughput_ips: float


@dataclass(kw_only=True)
class ModelReport:
    onnx: str
    onnx_bytes: int
    params: int | None
    macs: int | None
    operators: list[str] = field(default_factory=list)  # every operator the file needs
    accuracy: float
    accuracy_interval: Interval | None = _omit()
    per_class_accuracy: dict[str, float | None]
    confusion_matrix: list[list[int]]
    ece: float
    agreement_with_teacher: float | None = _omit()
    agreement_with_reference: float | None = _omit()  # when the reference is not the teacher
    top5_accuracy: float | None = _omit()  # more than 5 classes
    balanced_accuracy: float | None = _omit()  # mean per-class recall (classes present in the split)
    predicts_one_class: str | None = _omit()  # degenerate: the one class it predicts for every image
    latency_ms: Latency
    latency_ms_by_batch: dict[str, Latency]
    throughput_ips: float
    latency_ratio_to_reference: dict[str, float]
    vs_reference: VsReference | None = _omit()
    gpu: GpuFigures | None = _omit()

    @property
    def agreement(self) -> float:
        """Top-1 agreement with the reference model."""
        value = self.agreement_with_teacher if self.agreement_with_teacher is not None else self.agreement_with_reference
        return 1.0 if value is None else value


@dataclass
class RuntimeModel:
    loads: bool
    accuracy: float | None = _omit()
    agreement_with_onnxruntime: float | None = _omit()
    latency_ms: Latency | None = _omit()
    error: str | None = _omit()


@dataclass
class RuntimeReport:
    version: str
    models: dict[str, RuntimeModel]


@dataclass
class Contention:
    """Was the machine busy while timing (compress.measure.contention)."""

    busy: bool
    reasons: list[str]
    other_cpu_share: float | None
    steal_share: float | None
    load_average_1min: float | None
    cores: int
    process_spread: float
    process_spread_high: bool
    seconds: float


@dataclass(kw_only=True)
class BenchmarkInfo:
    device: str = "cpu"
    threads: int
    batch_sizes: list[int]
    warmup: int
    runs: int
    calls_per_sample: int = 1
    processes: int = 1
    reference: str
    interleaved: bool = True
    ort_spinning: bool = False
    contention: Contention | None = None  # compress.measure.contention
    input: list | None = None


@dataclass
class ParetoPoint:
    """One model a search could ship: its student, steps from it (prune rounds, int8), val accuracy
    (what the choice reads), batch-1 p50 on the target runtime and size."""

    name: str
    student: str
    steps: int
    fp32: bool
    accuracy: float
    p50_ms: float
    megabytes: float
    vendor_ops: list[str] = field(default_factory=list)
    on_front: bool = False
    predicts_one_class: str | None = _omit()  # degenerate on val: flagged, never chosen


@dataclass
class Budget:
    max_accuracy_drop: float
    max_latency_ms: float
    max_size_mb: float


@dataclass
class Pareto:
    """A search's choice: every point, the front, the rule and what it chose (or why nothing)."""

    objective: str
    runtime: str
    budget: Budget
    points: list[ParetoPoint]
    front: list[str]
    chosen: str | None = None
    runner_up: str | None = None
    rule: str | None = None
    eligible: list[str] = field(default_factory=list)
    refused: str | None = _omit()  # the budget nothing met, in one line

    def point(self, name: str) -> ParetoPoint:
        return next(p for p in self.points if p.name == name)


@dataclass(kw_only=True)
class Report(Document):
    """report.json."""

    dataset: DatasetInfo | None = _omit()
    environment: Environment
    comparisons: list[Comparison] = field(default_factory=list)
    runtimes: dict[str, RuntimeReport] = field(default_factory=dict)
    benchmark: BenchmarkInfo
    models: dict[str, ModelReport]
    settings: dict | None = _omit()
    training: dict[str, list[dict]] | None = _omit()
    origins: dict[str, str] | None = _omit()  # where the teacher and the student started
    recipes: dict[str, str] | None = _omit()  # how each trained model was trained (from scratch, or LP-FT)
    quantization: QuantizeDecision | None = _omit()
    pareto: Pareto | None = _omit()  # a search: every point, the front, the rule and what it chose
    warnings: list[str] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return self.benchmark.reference

    @property
    def figures_from(self) -> str:
        return self.dataset.figures_from if self.dataset else "val"

    def busy(self) -> Contention | None:
        """The contention record when the timing ran on a busy machine, else None."""
        c = self.benchmark.contention
        return c if c and c.busy else None

    def headline(self, name: str) -> str:
        """"student_int8: 23.8x smaller, 9.11x faster, +9.8 accuracy points vs the teacher on test"."""
        r = self.models[name].vs_reference
        if r is None:
            return name
        flag = " (⚠ timed on a busy machine: re-measure)" if self.busy() else ""
        return (f"{name}: {r.size_x:.1f}x smaller, {r.speed_x:.2f}x faster{flag}, {100 * r.accuracy_delta:+.1f} "
                f"accuracy points vs the {self.reference} on {self.figures_from}")
