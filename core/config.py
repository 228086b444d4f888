"""Typed run configuration: defaults in code, a TOML file and `--set section.key=value` on top.

Every field carries its default, a one-line reason and its limits (pydantic dataclasses: the
type, Literal choices, gt/ge/lt bounds), and the rules between fields are one validator on
Config, so everything a config must satisfy is stated beside the fields and checked whenever a
Config is made. Unknown sections or keys are errors that list the valid ones; every problem is
one line naming the key, so a typo never runs silently with a default.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from compress.core.errors import CompressError

SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)  # unknown keys and inf/nan are errors


def opt(default: Any, why: str, **limits: Any) -> Any:
    """A config field with its default, the reason for it (shown by `compress config`) and its
    limits (pydantic's gt/ge/lt/le/min_length...), checked when a config is made."""
    return Field(default, description=why, **limits)


def opt_list(factory, why: str, **limits: Any) -> Any:
    return Field(default_factory=factory, description=why, **limits)


def _json_list(value: Any) -> Any:
    """A list given as text (`--set bench.batch_sizes=[1,8]`) is read as JSON."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{value!r} is not a valid list (JSON, e.g. [1, 8])") from None
    return value


T = TypeVar("T")
JsonList = Annotated[list[T], BeforeValidator(_json_list)]
Rgb = Annotated[list[float], BeforeValidator(_json_list), Field(max_length=3)]
Widths = Annotated[list[Annotated[int, Field(ge=1)]], BeforeValidator(_json_list)]


@dataclass(config=SECTION)
class DataConfig:
    path: str = opt("digits", "embedded default: needs no network and no files")
    val_fraction: float = opt(0.2, "only for trees without train/ and val/: held-out share per class", gt=0, lt=1)
    test_fraction: float = opt(0.2, "share of each class's training images held out as the test split when the "
                                    "data has no test/ and every class has >= 25 training images; 0 = no test split", ge=0, lt=1)
    resize: int = opt(36, "shorter side after decoding; images are kept (data.cache) at this size", ge=8)
    crop: int = opt(32, "network input side; small so the default run fits 10 minutes on 2 CPU cores", ge=8)
    batch_size: int = opt(32, "fits every stage in a few GB of CPU memory", ge=1)
    augment: Literal["none", "crop", "crop_flip"] = opt("crop", "digits must not be mirrored, photos may be")
    mean: Rgb = opt_list(list, "per-channel RGB mean; [] = what the student's pretrained weights expect "
                                "(ImageNet's for torchvision, the model's configuration for timm)")
    std: Rgb = opt_list(list, "per-channel RGB std; [] = what the student's pretrained weights expect")
    skip_bad_images: bool = opt(False, "a corrupt image is an error unless the user opts in")
    cache: Literal["auto", "memory", "disk", "none"] = opt(
        "auto", "where decoded images live: auto = memory when they need under a quarter of the available RAM, "
                "else a uint8 file per split under cache_dir (decoded once, read per image); none decodes every read")
    cache_dir: str = opt("", "disk cache folder, shared by runs and keyed by the data; empty = "
                             "$XDG_CACHE_HOME/compress or ~/.cache/compress")
    workers: int = opt(-1, "DataLoader worker processes for training batches; -1 = the cores available on a GPU; "
                           "on the CPU, whose cores the model's threads use, 0 from memory and 1 from disk", ge=-1)


@dataclass(config=SECTION)
class TrainConfig:
    sync_bn: bool = opt(False, "multi-process training: BatchNorm statistics over every rank's batch (small "
                               "per-GPU batches); off keeps each rank's own, as plain DDP does")
    optimizer: Literal["adamw", "sgd"] = opt("adamw", "AdamW converges from scratch with little tuning")
    weight_decay: float = opt(0.05, "AdamW's usual decoupled decay for ResNets", ge=0)
    momentum: float = opt(0.9, "SGD only; the value of PyTorch's transfer-learning tutorial", ge=0)
    schedule: Literal["cosine", "step", "constant"] = opt("cosine", "cosine needs no step tuning per run length")
    step_size: int = opt(7, "step schedule only: epochs per decay (PyTorch's transfer-learning tutorial: StepLR(7, 0.1))", ge=1)
    gamma: float = opt(0.1, "step schedule only: decay factor (PyTorch's transfer-learning tutorial)", gt=0)
    warmup_epochs: int = opt(0, "linear learning-rate warm-up before the schedule (Goyal et al. 2017)", ge=0)
    label_smoothing: float = opt(0.0, "on every CE term; 0 keeps hard labels (Szegedy et al. 2016)", ge=0, lt=1)
    mixup: float = opt(0.0, "Beta(a, a) mixing of whole images and labels (Zhang et al. 2018); 0 = off", ge=0)
    cutmix: float = opt(0.0, "Beta(a, a) pasted patches (Yun et al. 2019); 0 = off; with mixup, each batch picks one", ge=0)


@dataclass(config=SECTION)
class FinetuneConfig:
    """How a model that starts from pretrained weights is trained (the teacher, the student and its
    CE twin alike); a model from random initialisation takes the train.* recipe instead."""

    recipe: Literal["auto", "lp_ft", "scratch"] = opt(
        "auto", "auto = lp_ft when the model starts from pretrained weights (ImageNet or a checkpoint), scratch "
                "(the train.* recipe at teacher.lr / distill.lr) otherwise: from-scratch rates destroy pretrained "
                "features (fine-tuning EfficientNet-Lite0 with them fell from 0.94-0.96 zero-shot to 0.71-0.83)")
    probe_epochs: int = opt(3, "epochs of the budget that fit the new head alone on the frozen network's features "
                               "first (linear probing, Kumar et al. 2022 LP-FT), each adding one augmented view of "
                               "the training set to the features the head is fit on by L-BFGS (each costs a forward pass; "
                               "hymenoptera's probe: 0.935 val on 1 view, 0.954 on 3)", ge=0)
    probe_l2: float = opt(0.03, "the L2 penalty of the probe's L-BFGS fit on cached features (mean cross-entropy + "
                                 "l2/2 |W|^2): without one, separable features drive the head's weights without bound (0.03 was "
                                 "the best of 1e-4..0.1 on hymenoptera's EfficientNet-Lite0 features)", ge=0)
    lr: float = opt(0.001, "the head's rate once the whole network trains (PyTorch's transfer-learning tutorial: "
                           "SGD at 0.001)", gt=0)
    backbone_lr_scale: float = opt(0.1, "discriminative rates: the pretrained layers train at lr x this (fastai "
                                        "spreads the body over lr/100 .. lr)", gt=0, le=1)
    optimizer: Literal["sgd", "adamw"] = opt("sgd", "SGD with momentum, as the transfer-learning tutorial; AdamW's "
                                                    "adaptive steps move pretrained weights further")
    momentum: float = opt(0.9, "SGD only: the tutorial's value", ge=0)
    weight_decay: float = opt(0.0001, "small: pulling pretrained weights to zero forgets them", ge=0)
    keep_bn_statistics: bool = opt(True, "BatchNorm layers keep the pretrained running statistics while the "
                                         "network fine-tunes (their scale and shift still train): batches of 32 "
                                         "re-estimate ImageNet's statistics badly")
    head_init_std: float = opt(0.01, "the new head starts at N(0, std) with zero bias: timm's own init gave a "
                                     "2-class head |logits| of about 11 on ImageNet features", ge=0)


@dataclass(config=SECTION)
class TeacherConfig:
    arch: str = opt("resnet50", "a big classifier to distil from: a torchvision name or timm:<name>")
    weights: str = opt("auto", "auto = ImageNet weights when cached or downloadable, else random (said in one line) "
                               "| none | imagenet | path to a checkpoint to start from")
    checkpoint: str = opt("", "a finished teacher checkpoint: skips teacher training altogether")
    onnx: str = opt("", "a teacher given as an ONNX file from any framework: its logits (ONNX Runtime) teach the "
                        "student; it is not trained, and losses on teacher features do not apply")
    classes: JsonList[str] = opt_list(list, "the ONNX teacher's output classes in order, when its file carries no `labels` "
                                   "metadata; they must be the data's classes")
    epochs: int = opt(3, "enough for digits at 32 px (test 0.93; 4 epochs reach 0.95 for 11 s more on 2 cores, "
                         "and the student beats either); raise for real data", ge=0)
    lr: float = opt(0.002, "AdamW from scratch at batch 32", gt=0)
    augment: Literal["none", "light", "strong"] = opt("light", "presets in compress/core/augment.py; strong regularises a teacher whose soft labels should be soft")
    dropout: float = opt(0.0, "dropout before every Linear of the teacher's head; heavily regularised KD teachers use up to 0.95", ge=0, lt=1)
    head_hidden: Widths = opt_list(list,
                       "hidden FC widths before the classes, e.g. [512, 256]; [] keeps torchvision's head")


@dataclass(config=SECTION)
class DistillConfig:
    arch: str = opt("resnet18", "a small classifier that runs on edge CPUs: a torchvision name or timm:<name>; a list "
                                "searches several students against one teacher (see distill.archs)")
    archs: JsonList[str] = opt_list(list, "the students of a search (set by giving distill.arch a list): each is distilled, "
                                 "pruned and quantized, and deploy.objective chooses among all of them; [] = a single run")
    weights: str = opt("auto", "auto = ImageNet weights when cached or downloadable, else random (said in one line) "
                               "| none | imagenet | path to a checkpoint to start from")
    loss: str = opt("kl", "a name or weighted sum, e.g. 'kl' or 'kl + 0.5*hint'; `compress losses` lists them")
    alpha: float = opt(0.5, "weight of CE on labels; 1 - alpha to distillation; best of 0.1/0.5/0.9 in the sweep", ge=0, le=1)
    temperature: float = opt(1.0, "for kl/dml/self; T=1 beat T=4 at every alpha in the hymenoptera sweep", gt=0)
    epochs: int = opt(3, "same budget as the teacher on the default data", ge=0)
    lr: float = opt(0.002, "same optimizer setting as the teacher", gt=0)
    baseline: bool = opt(False, "also train a CE-only twin (same init, same data order), the control that shows what "
                                "the teacher added; off by default: it ships nothing and costs a student's training")
    seed: int = opt(-1, "student init and data order; -1 = seed + 1; sweeps vary it with one teacher")
    augment: Literal["none", "light", "strong"] = opt("light", "none lets teacher logits be computed once and cached")
    head_hidden: Widths = opt_list(list,
                       "hidden FC widths in the student's head; [] keeps torchvision's head")
    freeze_encoder: bool = opt(False, "train only the head, linear-probe style (needs pretrained distill.weights)")
    teacher_folds: int = opt(0, ">= 2: each soft label from a fold teacher that never saw the image (k-fold); 0 = off")
    # settings of one loss each (`compress losses` shows them beside their term)
    hint_layers: str = opt("auto", "hint loss: student_module:teacher_module; auto = each network's stride-16 stage "
                                   "output, found by probing it (ResNets: layer3:layer3)")
    rkd_angle_weight: float = opt(2.0, "rkd = distance + w * angle; Park et al. weight them 25:50", ge=0)
    adversarial_steps: int = opt(1, "discriminator updates per student step for the adversarial loss", ge=1)
    adversarial_lr: float = opt(0.0002, "discriminator learning rate (Adam), the usual GAN value", gt=0)


@dataclass(config=SECTION)
class PruneConfig:
    enabled: bool = opt(True, "structured pruning is part of the default deliverable")
    target: Literal["macs", "params", "latency", "accuracy"] = opt(
        "accuracy", "accuracy prunes 15% of MACs per round while val accuracy stays within deploy.max_accuracy_drop "
                    "of the unpruned student (a fixed ratio shipped a hymenoptera model 12 points below it), "
                    "every round a point to choose from; params/macs prune to a fixed ratio whatever it costs")
    macs_ratio: float = opt(0.5, "target MACs of the pruned student relative to the unpruned one", ge=0.05, lt=1)
    params_ratio: float = opt(0.35, "ResNet18 x 0.35 in int8 is ~4 MB, about 1/24 of a fp32 ResNet50", ge=0.05, lt=1)
    target_latency_ms: float = opt(0.0, "target = latency: ORT p50 at batch 1 on this CPU at bench.threads", ge=0)
    max_rounds: int = opt(6, "target = latency: prune-15%-MACs / fine-tune / measure rounds at most", ge=1)
    round_epochs: int = opt(1, "target = latency or accuracy: the distillation fine-tune after each round (for "
                                  "accuracy, the round that ships is the one measured: no further fine-tune)", ge=0)
    importance: Literal["l1", "l2", "bn", "taylor"] = opt("l2", "weight magnitude l2 is torch-pruning's default; bn = |gamma|, taylor = |w*dL/dw|")
    global_pruning: bool = opt(False, "rank channels across layers; uniform (same share per layer) is safer")
    round_to: int = opt(8, "channel counts in multiples of 8 keep SIMD kernels efficient", ge=1)
    epochs: int = opt(2, "target = macs, params or latency: distillation fine-tune after pruning recovers most of "
                         "the loss", ge=0)
    lr: float = opt(5e-5, "a fresh AdamW restarted at 1e-3 on the trained digits student lost 5.9 val points in "
                          "one 15% round; 2e-4 held 2 rounds within 1 point, 5e-5 all 6 (0.33x MACs)", gt=0)
    augment: Literal["none", "light", "strong"] = opt(
        "none", "the fine-tunes after pruning: none (centre crops) lets the teacher's logits be computed once for "
                "every round, where augmented views need a teacher pass per round (recovery at a small lr needs no "
                "new views)")


@dataclass(config=SECTION)
class ExportConfig:
    opset: int = opt(17, "supported by every ONNX Runtime release since 1.11", ge=7, le=21)
    parity_tolerance: float = opt(1e-3, "max |logit difference| ONNX Runtime vs PyTorch, relative to the logits' "
                                        "scale max(1, largest |logit|)", gt=0)
    parity_samples: int = opt(32, "real val images used for the parity check", ge=1)
    dynamic_batch: bool = opt(True, "batch axis free; false fixes it at export.batch_size (some NPUs need it)")
    batch_size: int = opt(1, "the fixed batch size when dynamic_batch = false", ge=1)
    ort: bool = opt(True, "also write deploy/model.ort + required-operators config for mobile/minimal ORT (from "
                          "model_mobile.onnx when mobile is on)")
    mobile: bool = opt(True, "also write deploy/model_mobile.onnx: batch 1, fixed shapes, int8 as QDQ uint8 "
                             "per-tensor (what Android's NNAPI takes whole), checked against model.onnx, and "
                             "deploy/accelerators.json with each file's NNAPI and Core ML coverage")


Int8Format = Literal["qoperator_u8s8", "qdq_s8s8", "qdq_u8s8", "qoperator_s8s8", "dynamic", "fp16"]


@dataclass(config=SECTION)
class QuantizeConfig:
    enabled: bool = opt(True, "int8 is part of the default deliverable")
    format: Literal["auto", Int8Format] = opt(
        "auto", "auto measures the candidates and keeps the fastest within the accuracy budget")
    candidates: JsonList[Int8Format] = opt_list(lambda: ["qoperator_u8s8", "qdq_s8s8", "qdq_u8s8", "dynamic", "fp16"],
                                                "all measured", min_length=1)
    max_accuracy_drop: float = opt(1.0, "points vs the fp32 source a candidate may lose and still ship", ge=0)
    per_channel: bool = opt(True, "per-channel weight scales keep conv accuracy")
    reduce_range: bool = opt(True, "7-bit weights avoid int16 overflow in u8s8 AVX2/AVX512 kernels")
    calibration: Literal["minmax", "entropy", "percentile"] = opt("minmax", "ONNX Runtime's calibrators; min-max is the default")
    calibration_samples: int = opt(64, "real training images for activation ranges", ge=1)
    min_agreement: float = opt(0.98, "int8 vs fp32 top-1 agreement on val below this is flagged", ge=0, le=1)
    keep_float: JsonList[str] = opt_list(list, "ONNX layer names (as onnx/sensitivity.json lists them) kept in float in every "
                                      "post-training int8 candidate; empty = the measured choice decides")
    qat: Literal["auto", "on", "off"] = opt(
        "auto", "quantization-aware training: auto runs it only when no post-training candidate (mixed included) "
                "meets max_accuracy_drop; on always adds it as a candidate")
    qat_epochs: int = opt(2, "a short fine-tune from the trained student with fake quantization", ge=1)
    qat_lr: float = opt(1e-5, "small: with BatchNorm folded the weights lose BN's scale invariance; on hymenoptera "
                              "AdamW at 2e-4 lost 8-20 val points in 3 epochs, 1e-5 kept within 3", gt=0)


@dataclass(config=SECTION)
class DeployConfig:
    target: Literal["portable", "onnxruntime", "openvino", "executorch", "coreml", "litert"] = opt(
        "portable", "portable: the deployable uses standard ONNX operators only, so it loads in any ONNX runtime; "
                    "onnxruntime also allows ONNX Runtime's own (com.microsoft) int8 operators; openvino times "
                    "the int8 choice in OpenVINO and writes its IR (needs the openvino extra); executorch "
                    "chooses fp32 or int8 .pte measured in ExecuTorch and writes deploy/model.pte (needs the "
                    "executorch extra); coreml also writes deploy/model_ios.onnx, fp32 with fixed shapes, because "
                    "Core ML cannot take an int8 (QDQ) graph; litert chooses fp32 or int8 .tflite measured in LiteRT's "
                    "interpreter and writes deploy/model.tflite (needs the litert extra)")
    objective: Literal["fastest_within_budget", "most_accurate_under"] = opt(
        "fastest_within_budget", "how a search (distill.arch given as a list, even of one) chooses: the fastest "
                                 "model within max_accuracy_drop of the best fp32 student, or the most accurate "
                                 "under max_latency_ms (and max_size_mb)")
    max_accuracy_drop: float = opt(1.0, "points of val accuracy the deployable may lose against the most accurate fp32 "
                                        "student; also the budget of prune.target = accuracy", ge=0)
    max_latency_ms: float = opt(0.0, "most_accurate_under: batch-1 p50 limit on the target runtime (0 = none)", ge=0)
    max_size_mb: float = opt(0.0, "most_accurate_under: file size limit in MB (0 = none)", ge=0)
    allow_degenerate: bool = opt(False, "a single run whose deployable predicts one class for every image stops "
                                        "without writing deploy/ (exit 2); true packages it anyway. A search never "
                                        "chooses such a point")


@dataclass(config=SECTION)
class BenchConfig:
    threads: int = opt(2, "fixed ONNX Runtime intra-op threads so figures compare across runs", ge=1)
    batch_sizes: Annotated[JsonList[Annotated[int, Field(ge=1)]], Field(min_length=1)] = opt_list(
        lambda: [1, 8], "edge latency (1) and throughput (8)")
    warmup: int = opt(5, "rounds discarded before timing (allocations, caches)", ge=0)
    runs: int = opt(30, "timed interleaved rounds per batch size; percentiles are taken over these", ge=2)
    calls_per_sample: int = opt(1, "back-to-back calls averaged into one sample; >1 steadies sub-ms ratios", ge=1)
    processes: int = opt(3, "fresh torch-free child processes the rounds are split over; on the CI models the worst "
                            "ratio spread over 8 repeats was 11.7% in 1 process, 3.8% in 3", ge=1)
    metric: Literal["top1", "balanced"] = opt(
        "top1", "what choices rank accuracy by (int8 layout, ExecuTorch program, the deployable): top-1, or balanced "
                "accuracy (mean per-class recall), which lopsided classes need")


@dataclass(config=SECTION)
class Config:
    """The whole configuration. Types and limits live on the fields above; the rules between
    fields are the validator below; both run whenever a Config is made or replaced."""

    seed: int = opt(0, "one seed drives init, data order, augmentation and splits")
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "the GPU when torch sees one, else the CPU")
    track: Literal["none", "mlflow"] = opt("none", "experiment tracking is opt-in (pip install 'compress-distill[mlflow]')")
    tracking_uri: str = opt("", "MLflow store; empty = ./mlruns (or MLFLOW_TRACKING_URI)")
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict:
        return dataclasses.asdict(getattr(self, name))

    @model_validator(mode="after")
    def _rules_between_fields(self, info: ValidationInfo) -> Config:
        if info.context and not info.context.get("rules", True):
            return self  # a TOML file before its --set overrides: checked once they are applied
        for ok, message in _rules(self):
            if not ok:
                raise ValueError(message)
        return self

    @classmethod
    def from_dict(cls, tree: dict) -> Config:
        """The Config a `Config.to_dict()` tree (e.g. a manifest's "config") describes, validated."""
        return cls().replace(flatten(tree))

    @classmethod
    def from_toml(cls, path: str | None = None, overrides: tuple[str, ...] = ()) -> Config:
        """Defaults, then the TOML file at `path`, then `section.key=value` overrides, in that order."""
        cfg = cls().replace(flatten(_read_toml(path)), check=False) if path else cls()
        return cfg.replace(dict(_split_override(item) for item in overrides))

    def replace(self, settings: dict[str, Any], check: bool = True) -> Config:
        """A copy with `section.key` values set, validated as a whole: field types and limits, then
        (`check`) the rules between fields. An unknown key lists the valid ones."""
        tree = self.to_dict()
        for key, value in settings.items():
            _set(tree, key, value)
        return _validated(tree, check)


def _set(tree: dict, key: str, value: Any) -> None:
    """Put `section.key` into a config tree. `distill.arch` also takes a list (a search over
    students): the list goes to distill.archs, its first entry to distill.arch."""
    if key == "distill.arch" and (isinstance(value, list) or (isinstance(value, str) and value.strip().startswith("["))):
        students = _json_list(value) if isinstance(value, str) else value
        if not students or not all(isinstance(a, str) and a for a in students):
            raise CompressError(f"distill.arch: {value!r} is not a non-empty list of architecture names")
        tree["distill"]["arch"], tree["distill"]["archs"] = students[0], list(students)  # even of one: a search
        return
    if key not in valid_keys():
        raise CompressError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
    *section, name = key.split(".")
    (tree[section[0]] if section else tree)[name] = value


# pydantic's error types, said as the config reference says them
_KINDS = {"float_parsing": "float", "float_type": "float", "int_parsing": "int", "int_type": "int",
          "int_from_float": "int", "bool_parsing": "bool", "bool_type": "bool", "string_type": "string",
          "list_type": "list"}


def _validated(tree: dict, rules: bool) -> Config:
    """A Config from a tree; the first problem is one CompressError naming the key."""
    try:
        return TypeAdapter(Config).validate_python(tree, context={"rules": rules})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = [str(part) for part in error["loc"] if not isinstance(part, int)]
        key = ".".join(where)
        message = str(error["msg"])
        if error["type"] == "value_error" and key in ("", *section_names()):  # a rule between fields
            raise CompressError(message.removeprefix("Value error, ")) from None
        given = error.get("input")
        if error["type"] in _KINDS:
            raise CompressError(f"config key {key}: {given!r} is not a valid {_KINDS[error['type']]}") from None
        if error["type"] == "literal_error":
            allowed = ", ".join(map(str, choices(key) or ())) or str(error.get("ctx", {}).get("expected", ""))
            raise CompressError(f"config key {key}: {given!r} is not one of {allowed.replace(chr(39), '')}") from None
        message = message.removeprefix("Value error, ")
        raise CompressError(f"config key {key}: {message[0].lower() + message[1:]} (got {given!r})") from None


def _sections(cfg: Config) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if dataclasses.is_dataclass(getattr(cfg, f.name))}


def section_names() -> tuple[str, ...]:
    return tuple(_sections(Config()))


@functools.cache
def _fields() -> dict[str, tuple[Any, FieldInfo]]:
    """`section.key` (or a top-level key) -> (its annotated type, its pydantic field)."""
    out = {}
    owners: dict[str, type] = {"": Config, **{name: type(sec) for name, sec in _sections(Config()).items()}}
    for prefix, cls in owners.items():
        hints = get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            if prefix or not dataclasses.is_dataclass(hints[f.name]):
                info = f.default
                assert isinstance(info, FieldInfo), f"{prefix}.{f.name} is not declared with opt()"
                out[f"{prefix}.{f.name}" if prefix else f.name] = (hints[f.name], info)
    return out


def valid_keys() -> list[str]:
    return list(_fields())


def key_reasons() -> dict[str, str]:
    """`section.key` -> why its default is what it is (the field's description)."""
    return {key: info.description or "" for key, (_, info) in _fields().items()}


def choices(key: str) -> tuple | None:
    """The allowed values of a key whose type is a Literal, else None."""
    kind = _fields()[key][0]
    return get_args(kind) if get_origin(kind) is Literal else None


def get_key(cfg, key: str) -> Any:
    """The value of `section.key` (or a top-level key) on a Config or a stage's view of one."""
    *section, name = key.split(".")
    return getattr(getattr(cfg, section[0]) if section else cfg, name)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"data": {"crop": 32}} -> {"data.crop": 32}."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _read_toml(path: str) -> dict:
    p = Path(path)
    if p.is_dir():
        raise CompressError(f"config file {path} is a directory; give a TOML file, e.g. configs/hymenoptera-cpu.toml")
    if not p.is_file():
        raise CompressError(f"config file {path} does not exist")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CompressError(f"config file {path} is not valid TOML: {exc}") from None


def _split_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise CompressError(f"--set {item!r}: expected section.key=value, e.g. distill.alpha=0.7")
    key, value = item.split("=", 1)
    return key.strip(), value


QUANTIZE_CANDIDATES = get_args(Int8Format)  # every format but "auto"


def _rules(cfg: Config) -> list[tuple[bool, str]]:
    """The rules between fields (and the few a field's type cannot say), each with its message."""
    d, t, q, p = cfg.distill, cfg.teacher, cfg.quantize, cfg.prune
    return [
        (cfg.data.resize >= cfg.data.crop, "data.resize must be >= data.crop"),
        (len(cfg.data.mean) in (0, 3) and len(cfg.data.std) in (0, 3),
         "data.mean and data.std need 3 values (RGB) each, or [] for the student's pretrained configuration"),
        (all(v > 0 for v in cfg.data.std), f"data.std must be > 0 (it divides), got {cfg.data.std}"),
        (t.epochs >= 1 or bool(t.checkpoint),
         "teacher.epochs must be >= 1 (0 would ship an untrained teacher); give teacher.checkpoint to skip training"),
        (d.epochs >= 1, "distill.epochs must be >= 1 (0 would ship an untrained student)"),
        (not (t.checkpoint and t.onnx), "teacher.checkpoint and teacher.onnx both give a finished teacher: set one"),
        (not t.classes or bool(t.onnx), "teacher.classes names an ONNX teacher's outputs: it needs teacher.onnx"),
        (not d.freeze_encoder or d.weights != "none",
         "distill.freeze_encoder = true trains the head alone, which needs pretrained distill.weights (imagenet, "
         "auto with the weights cached or downloadable, or a checkpoint); with random weights it learns nothing"),
        (cfg.deploy.target != "executorch" or q.enabled,
         "deploy.target = executorch chooses between fp32 and int8 .pte in the quantize stage; set quantize.enabled = true"),
        (cfg.deploy.target != "litert" or q.enabled,
         "deploy.target = litert chooses between fp32 and int8 .tflite in the quantize stage; set quantize.enabled = true"),
        (not d.archs or cfg.deploy.target != "litert",
         "a search over students (distill.arch as a list) times ONNX files; deploy.target = litert chooses .tflite "
         "files for one student: give distill.arch as one name"),
        (d.teacher_folds in (0, 1) or 2 <= d.teacher_folds <= 10,
         "distill.teacher_folds must be 0 (off) or between 2 and 10"),
        (d.hint_layers == "auto" or d.hint_layers.count(":") == 1,
         "distill.hint_layers must be auto or student_module:teacher_module"),
        (cfg.deploy.objective != "most_accurate_under" or cfg.deploy.max_latency_ms > 0,
         "deploy.objective = most_accurate_under needs deploy.max_latency_ms > 0 (batch-1 p50 on the target runtime)"),
        (not d.archs or cfg.deploy.target != "executorch",
         "a search over students (distill.arch as a list) times ONNX files; deploy.target = executorch chooses "
         "between one student's .pte files: use portable, onnxruntime or openvino"),
        (p.target != "latency" or p.target_latency_ms > 0,
         "prune.target = latency needs prune.target_latency_ms > 0 (batch-1 ONNX Runtime p50 on this CPU)"),
    ]
