"""What each distillation term (compress.methods.kd) is, in plain data: its description and what it
needs. Outside the kd package so that reading it imports no torch.

`compress losses` lists this without importing torch; `registry.register` copies these
attributes onto the term's class, so the table and the code cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TermInfo:
    description: str
    needs_teacher: bool = True  # reads the fixed teacher's outputs
    features: tuple[str, ...] = ()  # "embedding" and/or "hint", from both student and teacher
    uses_temperature: bool = False
    settings: tuple[str, ...] = ()  # distill.* keys of this term alone


CATALOG: dict[str, TermInfo] = {
    "kl": TermInfo("Hinton et al. 2015: T²·KL(softmax(t/T) ‖ softmax(s/T))", uses_temperature=True),
    "mse": TermInfo("Ba & Caruana 2014: mean((s − t)²) on raw logits"),
    "hint": TermInfo("FitNets (Romero et al. 2015): MSE(regressor(student map), teacher map)", features=("hint",),
                     settings=("hint_layers",)),
    "cosine": TermInfo("PyTorch KD tutorial: 1 − cos(projected student embedding, teacher embedding)",
                       features=("embedding",)),
    "rkd": TermInfo("Park et al. 2019: RKD distance + w·angle on penultimate embeddings", features=("embedding",),
                    settings=("rkd_angle_weight",)),
    "adversarial": TermInfo("a logits discriminator, alternating GAN-style updates",
                            settings=("adversarial_steps", "adversarial_lr")),
    "dml": TermInfo("deep mutual learning (Zhang et al. 2018): a peer student, KL both ways", needs_teacher=False,
                    uses_temperature=True),
    "self": TermInfo("self distillation from the student's own previous-epoch snapshot", needs_teacher=False,
                     uses_temperature=True),
}
