"""Feature- and relation-based distillation terms: FitNets hints, cosine embedding, RKD.

Each compares what the networks compute inside, not only their outputs (Gou et al. 2021, "Knowledge Distillation: A Survey",
call these feature- and relation-based knowledge). Student and teacher widths
differ (ResNet18 layer3 has 256 channels, ResNet50's 1024), so hint and cosine learn a small
map from the student's space into the teacher's; it trains with the student and is discarded
after training, so the exported student is unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.methods.kd.registry import register
from compress.methods.kd.terms import Setup, Step, Term


def hint_mse(regressed: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """FitNets: D = mean((r(s_map) − t_map)²), with the student map already regressed."""
    if regressed.shape[-2:] != teacher_map.shape[-2:]:
        regressed = F.adaptive_avg_pool2d(regressed, (teacher_map.shape[-2], teacher_map.shape[-1]))
    return F.mse_loss(regressed.float(), teacher_map.float())


def cosine_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """D = mean over the batch of 1 − cos(s_i, t_i) (PyTorch's CosineEmbeddingLoss with target 1)."""
    return (1 - F.cosine_similarity(student.float(), teacher.float(), dim=1)).mean()


def _normalised_distances(e: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(e, e)
    mean = d[d > 0].mean() if (d > 0).any() else d.new_tensor(1.0)
    return d / mean


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Park et al. 2019, distance-wise RKD: D = Huber(ψ_D(s), ψ_D(t)) over all pairs i, j, where
    ψ_D is the pairwise Euclidean distance divided by its mean over the batch's distinct pairs."""
    return F.smooth_l1_loss(_normalised_distances(student.float()), _normalised_distances(teacher.float()))


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [i, j] = unit(e_j − e_i)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()  # cos of the angle at i between j and k


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Park et al. 2019, angle-wise RKD: D = Huber(ψ_A(s), ψ_A(t)) over all triplets, where
    ψ_A(i, j, k) = cos ∠(e_j − e_i, e_k − e_i)."""
    return F.smooth_l1_loss(_angles(student.float()), _angles(teacher.float()))


@register("hint")
class HintTerm(Term):
    """A trainable 3×3 conv regressor (as in PyTorch's KD tutorial) maps the student's map at
    `distill.hint_layers` (student side) to the teacher's map's channel count."""



    def __init__(self, setup: Setup):
        super().__init__()
        s_channels = setup.student_probe.feature("hint").shape[1]
        t_channels = setup.teacher_shapes().feature("hint").shape[1]
        self.regressor = nn.Conv2d(s_channels, t_channels, kernel_size=3, padding=1, bias=False)

    def forward(self, step: Step):
        return hint_mse(self.regressor(step.student.feature("hint")), step.fixed_teacher().feature("hint")), None


@register("cosine")
class CosineTerm(Term):
    """Pooled penultimate features; a linear projection lifts the student's width to the teacher's."""


    def __init__(self, setup: Setup):
        super().__init__()
        s_dim = setup.student_probe.feature("embedding").shape[1]
        t_dim = setup.teacher_shapes().feature("embedding").shape[1]
        self.projection = nn.Linear(s_dim, t_dim, bias=False) if s_dim != t_dim else nn.Identity()

    def forward(self, step: Step):
        return cosine_distance(self.projection(step.student.feature("embedding")),
                               step.fixed_teacher().feature("embedding")), None


@register("rkd")
class RKDTerm(Term):
    """Relations between samples need no common width, so there is nothing to train here.
    D = rkd_distance + distill.rkd_angle_weight · rkd_angle."""



    def __init__(self, setup: Setup):
        super().__init__()
        self.angle_weight = setup.options.rkd_angle_weight

    def forward(self, step: Step):
        s, t = step.student.feature("embedding"), step.fixed_teacher().feature("embedding")
        return rkd_distance(s, t) + self.angle_weight * rkd_angle(s, t), None
