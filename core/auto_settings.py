"""Settings whose value depends on the machine or the models, made concrete once before a run:
`weights = "auto"` (ImageNet weights when they are cached or can be downloaded, else random
initialisation) and `data.mean` / `data.std` left empty (what the student's pretrained weights
expect). The run then records, keys and reports the concrete values, so a rerun on a machine that
went online does not reuse results trained from scratch; each decision is one line in the log and
in the manifest.
"""
from __future__ import annotations

from compress.core import architectures
from compress.core.config import Config
from compress.core.weights import WeightsSource, resolve_auto


def resolve(cfg: Config) -> tuple[Config, list[str]]:
    """(`cfg` with every automatic setting made concrete, one note per decision)."""
    changes: dict[str, object] = {}
    notes: list[str] = []
    given_teacher = bool(cfg.teacher.onnx or cfg.teacher.checkpoint)  # not trained: its weights do not apply
    for key, arch, text, skip in (("teacher.weights", cfg.teacher.arch, cfg.teacher.weights, given_teacher),
                                  ("distill.weights", cfg.distill.arch, cfg.distill.weights, False)):
        if WeightsSource.parse(text).kind != "auto":
            continue
        if skip:
            changes[key] = "none"
            continue
        architectures.check_arch(arch, key.replace("weights", "arch"))
        value, why = resolve_auto(arch, text)
        changes[key] = value
        notes.append(f"{key} = auto: ImageNet weights for {arch}" if why is None else
                     f"{key} = auto: training {arch} from scratch ({why})")
    if not cfg.data.mean or not cfg.data.std:
        architectures.check_arch(cfg.distill.arch, "distill.arch")
        mean, std = architectures.preprocessing(cfg.distill.arch)
        changes["data.mean"], changes["data.std"] = cfg.data.mean or mean, cfg.data.std or std
        if architectures.is_timm(cfg.distill.arch):
            notes.append(f"data.mean/std from {cfg.distill.arch}'s pretrained configuration: {mean} / {std}")
    return cfg.replace(changes), notes
