"""Typed run configuration: defaults in code, a TOML file and `--set section.key=value` on top.

Every default carries a one-line reason. Unknown sections or keys are errors that list the
valid ones, and override values are checked against the field's type, so a typo never runs
silently with a default.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from compress.core.errors import CompressError


def opt(default: Any, why: str) -> Any:
    """A config field with its default and the reason for it (shown by `compress config`)."""
    return field(default=default, metadata={"why": why})


def opt_list(factory, why: str) -> Any:
    return field(default_factory=factory, metadata={"why": why})


@dataclass
class DataConfig:
    path: str = opt("digits", "embedded default: needs no network and no files")
    val_fraction: float = opt(0.2, "only for trees without train/ and val/: held-out share per class")
    test_fraction: float = opt(0.2, "share of each class's training images held out as the test split when the "
                                    "data has no test/ and every class has >= 25 training images; 0 = no test split")
    resize: int = opt(36, "shorter side after decoding; images are kept (data.cache) at this size")
    crop: int = opt(32, "network input side; small so the default run fits 10 minutes on 2 CPU cores")
    batch_size: int = opt(32, "fits every stage in a few GB of CPU memory")
    augment: Literal["none", "crop", "crop_flip"] = opt("crop", "digits must not be mirrored, photos may be")
    mean: list = opt_list(list, "per-channel RGB mean; [] = what the student's pretrained weights expect "
                                "(ImageNet's for torchvision, the model's configuration for timm)")
    std: list = opt_list(list, "per-channel RGB std; [] = what the student's pretrained weights expect")
    skip_bad_images: bool = opt(False, "a corrupt image is an error unless the user opts in")
    cache: Literal["auto", "memory", "disk", "none"] = opt(
        "auto", "where decoded images live: auto = memory when they need under a quarter of the available RAM, "
                "else a uint8 file per split under cache_dir (decoded once, read per image); none decodes every read")
    cache_dir: str = opt("", "disk cache folder, shared by runs and keyed by the data; empty = "
                             "$XDG_CACHE_HOME/compress or ~/.cache/compress")
    workers: int = opt(-1, "DataLoader worker processes for training batches; -1 = the cores available on a GPU; "
                           "on the CPU, whose cores the model's threads use, 0 from memory and 1 from disk")


@dataclass
class TrainConfig:
    sync_bn: bool = opt(False, "multi-process training: BatchNorm statistics over every rank's batch (small "
                               "per-GPU batches); off keeps each rank's own, as plain DDP does")
    optimizer: Literal["adamw", "sgd"] = opt("adamw", "AdamW converges from scratch with little tuning")
    weight_decay: float = opt(0.05, "AdamW's usual decoupled decay for ResNets")
    momentum: float = opt(0.9, "SGD only; the value of PyTorch's transfer-learning tutorial")
    schedule: Literal["cosine", "step", "constant"] = opt("cosine", "cosine needs no step tuning per run length")
    step_size: int = opt(7, "step schedule only: epochs per decay (PyTorch's transfer-learning tutorial: StepLR(7, 0.1))")
    gamma: float = opt(0.1, "step schedule only: decay factor (PyTorch's transfer-learning tutorial)")
    warmup_epochs: int = opt(0, "linear learning-rate warm-up before the schedule (Goyal et al. 2017)")
    label_smoothing: float = opt(0.0, "on every CE term; 0 keeps hard labels (Szegedy et al. 2016)")
    mixup: float = opt(0.0, "Beta(a, a) mixing of whole images and labels (Zhang et al. 2018); 0 = off")
    cutmix: float = opt(0.0, "Beta(a, a) pasted patches (Yun et al. 2019); 0 = off; with mixup, each batch picks one")


@dataclass
class TeacherConfig:
    arch: str = opt("resnet50", "a big classifier to distil from: a torchvision name or timm:<name>")
    weights: str = opt("auto", "auto = ImageNet weights when cached or downloadable, else random (said in one line) "
                               "| none | imagenet | path to a checkpoint to start from")
    checkpoint: str = opt("", "a finished teacher checkpoint: skips teacher training altogether")
    onnx: str = opt("", "a teacher given as an ONNX file from any framework: its logits (ONNX Runtime) teach the "
                        "student; it is not trained, and losses on teacher features do not apply")
    classes: list = opt_list(list, "the ONNX teacher's output classes in order, when its file carries no `labels` "
                                   "metadata; they must be the data's classes")
    epochs: int = opt(4, "enough for digits at 32 px; raise for real data")
    lr: float = opt(0.002, "AdamW from scratch at batch 32")
    augment: Literal["none", "light", "strong"] = opt("light", "presets in compress/core/augment.py; strong regularises a teacher whose soft labels should be soft")
    dropout: float = opt(0.0, "dropout before every Linear of the teacher's head; heavily regularised KD teachers use up to 0.95")
    head_hidden: list = opt_list(list,
                       "hidden FC widths before the classes, e.g. [512, 256]; [] keeps torchvision's head")


@dataclass
class DistillConfig:
    arch: str = opt("resnet18", "a small classifier that runs on edge CPUs: a torchvision name or timm:<name>; a list "
                                "searches several students against one teacher (see distill.archs)")
    archs: list = opt_list(list, "the students of a search (set by giving distill.arch a list): each is distilled, "
                                 "pruned and quantized, and deploy.objective chooses among all of them; [] = a single run")
    weights: str = opt("auto", "auto = ImageNet weights when cached or downloadable, else random (said in one line) "
                               "| none | imagenet | path to a checkpoint to start from")
    loss: str = opt("kl", "a name or weighted sum, e.g. 'kl' or 'kl + 0.5*hint'; `compress losses` lists them")
    alpha: float = opt(0.5, "weight of CE on labels; 1 - alpha to distillation; best of 0.1/0.5/0.9 in the sweep")
    temperature: float = opt(1.0, "for kl/dml/self; T=1 beat T=4 at every alpha in the hymenoptera sweep")
    epochs: int = opt(4, "same budget as the teacher on the default data")
    lr: float = opt(0.002, "same optimizer setting as the teacher")
    baseline: bool = opt(True, "also train a CE-only twin (same init, same data order) for comparison")
    seed: int = opt(-1, "student init and data order; -1 = seed + 1; sweeps vary it with one teacher")
    augment: Literal["none", "light", "strong"] = opt("light", "none lets teacher logits be computed once and cached")
    head_hidden: list = opt_list(list,
                       "hidden FC widths in the student's head; [] keeps torchvision's head")
    freeze_encoder: bool = opt(False, "train only the head, linear-probe style (needs pretrained distill.weights)")
    teacher_folds: int = opt(0, ">= 2: each soft label from a fold teacher that never saw the image (k-fold); 0 = off")
    # settings of one loss each (`compress losses` shows them beside their term)
    hint_layers: str = opt("auto", "hint loss: student_module:teacher_module; auto = each network's stride-16 stage "
                                   "output, found by probing it (ResNets: layer3:layer3)")
    rkd_angle_weight: float = opt(2.0, "rkd = distance + w * angle; Park et al. weight them 25:50")
    adversarial_steps: int = opt(1, "discriminator updates per student step for the adversarial loss")
    adversarial_lr: float = opt(0.0002, "discriminator learning rate (Adam), the usual GAN value")


@dataclass
class PruneConfig:
    enabled: bool = opt(True, "structured pruning is part of the default deliverable")
    target: Literal["macs", "params", "latency", "accuracy"] = opt(
        "params", "params sets the file size: int8 at 0.35 is >= 20x smaller than the teacher; accuracy prunes in "
                  "rounds while val accuracy stays within deploy.max_accuracy_drop, every round a point to choose from")
    macs_ratio: float = opt(0.5, "target MACs of the pruned student relative to the unpruned one")
    params_ratio: float = opt(0.35, "ResNet18 x 0.35 in int8 is ~4 MB, about 1/24 of a fp32 ResNet50")
    target_latency_ms: float = opt(0.0, "target = latency: ORT p50 at batch 1 on this CPU at bench.threads")
    max_rounds: int = opt(6, "target = latency: prune-15%-MACs / fine-tune / measure rounds at most")
    round_epochs: int = opt(1, "target = latency: short distillation fine-tune after each round")
    importance: Literal["l1", "l2", "bn", "taylor"] = opt("l2", "weight magnitude l2 is torch-pruning's default; bn = |gamma|, taylor = |w*dL/dw|")
    global_pruning: bool = opt(False, "rank channels across layers; uniform (same share per layer) is safer")
    round_to: int = opt(8, "channel counts in multiples of 8 keep SIMD kernels efficient")
    epochs: int = opt(2, "distillation fine-tune after pruning recovers most of the loss")
    lr: float = opt(0.001, "half the student's: the weights are already trained")


@dataclass
class ExportConfig:
    opset: int = opt(17, "supported by every ONNX Runtime release since 1.11")
    parity_tolerance: float = opt(1e-3, "max |logit difference| ONNX Runtime vs PyTorch, relative to the logits' "
                                        "scale max(1, largest |logit|)")
    parity_samples: int = opt(32, "real val images used for the parity check")
    dynamic_batch: bool = opt(True, "batch axis free; false fixes it at export.batch_size (some NPUs need it)")
    batch_size: int = opt(1, "the fixed batch size when dynamic_batch = false")
    ort: bool = opt(True, "also write deploy/model.ort + required-operators config for mobile/minimal ORT")


@dataclass
class QuantizeConfig:
    enabled: bool = opt(True, "int8 is part of the default deliverable")
    format: Literal["auto", "qoperator_u8s8", "qdq_s8s8", "qdq_u8s8", "qoperator_s8s8", "dynamic", "fp16"] = opt(
        "auto", "auto measures the candidates and keeps the fastest within the accuracy budget")
    candidates: list = opt_list(lambda: ["qoperator_u8s8", "qdq_s8s8", "qdq_u8s8", "dynamic", "fp16"],
                       "all measured")
    max_accuracy_drop: float = opt(1.0, "points vs the fp32 source a candidate may lose and still ship")
    per_channel: bool = opt(True, "per-channel weight scales keep conv accuracy")
    reduce_range: bool = opt(True, "7-bit weights avoid int16 overflow in u8s8 AVX2/AVX512 kernels")
    calibration: Literal["minmax", "entropy", "percentile"] = opt("minmax", "ONNX Runtime's calibrators; min-max is the default")
    calibration_samples: int = opt(64, "real training images for activation ranges")
    min_agreement: float = opt(0.98, "int8 vs fp32 top-1 agreement on val below this is flagged")
    keep_float: list = opt_list(list, "ONNX layer names (as onnx/sensitivity.json lists them) kept in float in every "
                                      "post-training int8 candidate; empty = the measured choice decides")
    qat: Literal["auto", "on", "off"] = opt(
        "auto", "quantization-aware training: auto runs it only when no post-training candidate (mixed included) "
                "meets max_accuracy_drop; on always adds it as a candidate")
    qat_epochs: int = opt(2, "a short fine-tune from the trained student with fake quantization")
    qat_lr: float = opt(1e-5, "small: with BatchNorm folded the weights lose BN's scale invariance; on hymenoptera "
                              "AdamW at 2e-4 lost 8-20 val points in 3 epochs, 1e-5 kept within 3")


@dataclass
class DeployConfig:
    target: Literal["portable", "onnxruntime", "openvino", "executorch"] = opt(
        "portable", "portable: the deployable uses standard ONNX operators only, so it loads in any ONNX runtime; "
                    "onnxruntime also allows ONNX Runtime's own (com.microsoft) int8 operators; openvino times "
                    "the int8 choice in OpenVINO and writes its IR (needs the openvino extra); executorch "
                    "chooses fp32 or int8 .pte measured in ExecuTorch and writes deploy/model.pte (needs the "
                    "executorch extra)")
    objective: Literal["fastest_within_budget", "most_accurate_under"] = opt(
        "fastest_within_budget", "how a search (distill.arch given as a list, even of one) chooses: the fastest "
                                 "model within max_accuracy_drop of the best fp32 student, or the most accurate "
                                 "under max_latency_ms (and max_size_mb)")
    max_accuracy_drop: float = opt(1.0, "points of val accuracy the deployable may lose against the most accurate fp32 "
                                        "student; also the budget of prune.target = accuracy")
    max_latency_ms: float = opt(0.0, "most_accurate_under: batch-1 p50 limit on the target runtime (0 = none)")
    max_size_mb: float = opt(0.0, "most_accurate_under: file size limit in MB (0 = none)")


@dataclass
class BenchConfig:
    threads: int = opt(2, "fixed ONNX Runtime intra-op threads so figures compare across runs")
    batch_sizes: list = opt_list(lambda: [1, 8], "edge latency (1) and throughput (8)")
    warmup: int = opt(5, "rounds discarded before timing (allocations, caches)")
    runs: int = opt(30, "timed interleaved rounds per batch size; percentiles are taken over these")
    calls_per_sample: int = opt(1, "back-to-back calls averaged into one sample; >1 steadies sub-ms ratios")
    processes: int = opt(3, "fresh torch-free child processes the rounds are split over; on the CI models the worst "
                            "ratio spread over 8 repeats was 11.7% in 1 process, 3.8% in 3")
    metric: Literal["top1", "balanced"] = opt(
        "top1", "what choices rank accuracy by (int8 layout, ExecuTorch program, the deployable): top-1, or balanced "
                "accuracy (mean per-class recall), which lopsided classes need")


@dataclass
class Config:
    seed: int = opt(0, "one seed drives init, data order, augmentation and splits")
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "the GPU when torch sees one, else the CPU")
    track: Literal["none", "mlflow"] = opt("none", "experiment tracking is opt-in (pip install 'compress-distill[mlflow]')")
    tracking_uri: str = opt("", "MLflow store; empty = ./mlruns (or MLFLOW_TRACKING_URI)")
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict:
        return dataclasses.asdict(getattr(self, name))

    @classmethod
    def from_dict(cls, tree: dict) -> Config:
        """The Config a `Config.to_dict()` tree (e.g. a manifest's "config") describes, type-checked."""
        return cls().replace(flatten(tree))

    @classmethod
    def from_toml(cls, path: str | None = None, overrides: tuple[str, ...] = ()) -> Config:
        """Defaults, then the TOML file at `path`, then `section.key=value` overrides, in that order."""
        cfg = cls().replace(flatten(_read_toml(path)), check=False) if path else cls()
        return cfg.replace(dict(_split_override(item) for item in overrides))

    def replace(self, settings: dict[str, Any], check: bool = True) -> Config:
        """A copy with `section.key` values set, each type-checked (unknown keys list the valid
        ones), then range-checked as a whole (`check`)."""
        out = copy.deepcopy(self)
        for key, value in settings.items():
            set_key(out, key, value)
        if check:
            validate(out)
        return out


def _sections(cfg: Config) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if dataclasses.is_dataclass(getattr(cfg, f.name))}


def section_names() -> tuple[str, ...]:
    return tuple(_sections(Config()))


def _fields() -> dict[str, tuple[type, dataclasses.Field]]:
    """`section.key` (or a top-level key) -> (its annotated type, its dataclass field)."""
    out = {}
    owners: dict[str, type] = {"": Config, **{name: type(sec) for name, sec in _sections(Config()).items()}}
    for prefix, cls in owners.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if prefix or not dataclasses.is_dataclass(hints[f.name]):
                out[f"{prefix}.{f.name}" if prefix else f.name] = (hints[f.name], f)
    return out


def valid_keys() -> list[str]:
    return list(_fields())


def key_reasons() -> dict[str, str]:
    """`section.key` -> why its default is what it is (the field's metadata)."""
    return {key: f.metadata.get("why", "") for key, (_, f) in _fields().items()}


def choices(key: str) -> tuple | None:
    """The allowed values of a key whose type is a Literal, else None."""
    kind = _fields()[key][0]
    return get_args(kind) if get_origin(kind) is Literal else None


def _coerce(key: str, current: Any, value: Any) -> Any:
    """Convert `value` (from TOML or a --set string) to the type of the default `current`."""
    kind = type(current)
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError
                value = text.lower() in ("true", "1", "yes", "on")
            elif kind is int:
                value = int(text)
            elif kind is float:
                value = float(text)
            elif kind is list:
                value = json.loads(text)
        except (ValueError, json.JSONDecodeError):
            raise CompressError(f"config key {key}: {value!r} is not a valid {kind.__name__}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise CompressError(f"config key {key}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    allowed = choices(key)
    if allowed and value not in allowed:
        raise CompressError(f"config key {key}: {value!r} is not one of {', '.join(allowed)}")
    return value


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set `section.key` (or a top-level key) on `cfg`, type-checked; unknown keys list valid ones.
    `distill.arch` also takes a list (a search over students): the list goes to distill.archs."""
    if key == "distill.arch" and (isinstance(value, list) or (isinstance(value, str) and value.strip().startswith("["))):
        students = _coerce("distill.archs", [], value)
        if not students or not all(isinstance(a, str) and a for a in students):
            raise CompressError(f"distill.arch: {value!r} is not a non-empty list of architecture names")
        cfg.distill.arch, cfg.distill.archs = students[0], students  # a list, even of one, is a search
        return
    if key not in valid_keys():
        raise CompressError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
    *section, name = key.split(".")
    target = getattr(cfg, section[0]) if section else cfg
    setattr(target, name, _coerce(key, getattr(target, name), value))


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




QUANTIZE_CANDIDATES = get_args(get_type_hints(QuantizeConfig)["format"])[1:]  # every format but "auto"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate(cfg: Config) -> None:
    """Range checks that types alone cannot express."""
    checks = [
        (0.0 < cfg.data.val_fraction < 1.0, "data.val_fraction must be between 0 and 1"),
        (0.0 <= cfg.data.test_fraction < 1.0, "data.test_fraction must be in [0, 1) (0 = no test split)"),
        (cfg.data.crop >= 8 and cfg.data.resize >= cfg.data.crop, "data.resize must be >= data.crop >= 8"),
        (cfg.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (cfg.data.workers >= -1, "data.workers must be >= 0, or -1 for automatic"),
        (len(cfg.data.mean) in (0, 3) and len(cfg.data.std) in (0, 3),
         "data.mean and data.std need 3 values (RGB) each, or [] for the student's pretrained configuration"),
        (all(_number(v) and math.isfinite(v) for v in cfg.data.mean + cfg.data.std)
         and all(v > 0 for v in cfg.data.std if _number(v)),
         f"data.mean and data.std must be finite numbers and data.std > 0 (it divides), got {cfg.data.std}"),
        *[(math.isfinite(value) and value > 0, f"{key} must be a positive finite number, got {value}")
          for key, value in (("teacher.lr", cfg.teacher.lr), ("distill.lr", cfg.distill.lr), ("prune.lr", cfg.prune.lr),
                             ("distill.adversarial_lr", cfg.distill.adversarial_lr),
                             ("quantize.qat_lr", cfg.quantize.qat_lr))],
        (math.isfinite(cfg.train.weight_decay) and cfg.train.weight_decay >= 0, "train.weight_decay must be >= 0"),
        (cfg.teacher.epochs >= 1 or bool(cfg.teacher.checkpoint),
         "teacher.epochs must be >= 1 (0 would ship an untrained teacher); give teacher.checkpoint to skip training"),
        (cfg.distill.epochs >= 1, "distill.epochs must be >= 1 (0 would ship an untrained student)"),
        (cfg.deploy.target != "executorch" or cfg.quantize.enabled,
         "deploy.target = executorch chooses between fp32 and int8 .pte in the quantize stage; set quantize.enabled = true"),
        (cfg.quantize.qat_epochs >= 1, "quantize.qat_epochs must be >= 1 (use quantize.qat = off for no QAT)"),
        (0.0 <= cfg.distill.alpha <= 1.0, "distill.alpha must be between 0 and 1"),
        (cfg.distill.temperature > 0, "distill.temperature must be > 0"),
        (cfg.distill.teacher_folds in (0, 1) or 2 <= cfg.distill.teacher_folds <= 10,
         "distill.teacher_folds must be 0 (off) or between 2 and 10"),
        (0.0 <= cfg.teacher.dropout < 1.0, "teacher.dropout must be in [0, 1)"),
        *[(all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in hidden),
           f"{section}.head_hidden must be a list of positive integers (hidden FC widths), e.g. [512]")
          for section, hidden in (("teacher", cfg.teacher.head_hidden), ("distill", cfg.distill.head_hidden))],
        (0.0 <= cfg.train.label_smoothing < 1.0, "train.label_smoothing must be in [0, 1)"),
        (cfg.train.mixup >= 0 and cfg.train.cutmix >= 0, "train.mixup and train.cutmix must be >= 0 (0 = off)"),
        (cfg.train.warmup_epochs >= 0, "train.warmup_epochs must be >= 0"),
        (cfg.distill.adversarial_steps >= 1, "distill.adversarial_steps must be >= 1"),
        (cfg.distill.hint_layers == "auto" or cfg.distill.hint_layers.count(":") == 1,
         "distill.hint_layers must be auto or student_module:teacher_module"),
        (0.05 <= cfg.prune.macs_ratio < 1.0, "prune.macs_ratio must be in [0.05, 1)"),
        (0.05 <= cfg.prune.params_ratio < 1.0, "prune.params_ratio must be in [0.05, 1)"),
        (cfg.deploy.objective != "most_accurate_under" or cfg.deploy.max_latency_ms > 0,
         "deploy.objective = most_accurate_under needs deploy.max_latency_ms > 0 (batch-1 p50 on the target runtime)"),
        (cfg.deploy.max_accuracy_drop >= 0 and cfg.deploy.max_latency_ms >= 0 and cfg.deploy.max_size_mb >= 0,
         "deploy.max_accuracy_drop, deploy.max_latency_ms and deploy.max_size_mb must be >= 0"),
        (not cfg.distill.archs or cfg.deploy.target != "executorch",
         "a search over students (distill.arch as a list) times ONNX files; deploy.target = executorch chooses "
         "between one student's .pte files: use portable, onnxruntime or openvino"),
        (cfg.prune.target != "latency" or cfg.prune.target_latency_ms > 0,
         "prune.target = latency needs prune.target_latency_ms > 0 (batch-1 ONNX Runtime p50 on this CPU)"),
        (cfg.prune.max_rounds >= 1 and cfg.prune.round_epochs >= 0, "prune.max_rounds >= 1 and prune.round_epochs >= 0"),
        (cfg.prune.round_to >= 1, "prune.round_to must be >= 1"),
        (min(cfg.teacher.epochs, cfg.prune.epochs) >= 0, "teacher.epochs and prune.epochs must be >= 0"),
        (cfg.quantize.calibration_samples >= 1, "quantize.calibration_samples must be >= 1"),
        (bool(cfg.quantize.candidates) and all(c in QUANTIZE_CANDIDATES for c in cfg.quantize.candidates),
         f"quantize.candidates must be a non-empty list of {', '.join(QUANTIZE_CANDIDATES)}"),
        (cfg.bench.threads >= 1 and cfg.bench.runs >= 2 and cfg.bench.calls_per_sample >= 1
         and cfg.bench.processes >= 1,
         "bench.threads >= 1, bench.runs >= 2, bench.calls_per_sample >= 1 and bench.processes >= 1"),
        (bool(cfg.bench.batch_sizes) and all(isinstance(b, int) and b >= 1 for b in cfg.bench.batch_sizes),
         "bench.batch_sizes must be a non-empty list of positive integers, e.g. [1, 8]"),
        (cfg.export.parity_samples >= 1, "export.parity_samples must be >= 1"),
        (cfg.export.batch_size >= 1, "export.batch_size must be >= 1"),
        (7 <= cfg.export.opset <= 21, "export.opset must be between 7 and 21"),
    ]
    for ok, message in checks:
        if not ok:
            raise CompressError(message)
