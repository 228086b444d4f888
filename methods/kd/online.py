"""Online and self distillation: students that learn without a fixed,
pre-trained teacher.

- `dml`: deep mutual learning (Zhang et al. 2018). A peer network of the student's architecture,
  initialised differently, trains alongside it; each learns from the labels and from the other:
      student:  alpha·CE(s, y) + (1 − alpha)·T²·KL(p/T ‖ s/T)   (p detached)
      peer:     alpha·CE(p, y) + (1 − alpha)·T²·KL(s/T ‖ p/T)   (s detached)
  Both are updated in the same optimizer step on the same batch (the simultaneous variant of
  the paper's alternating update). The peer is dropped after training.
- `self`: distillation from the student's own earlier epoch ("progressive self-knowledge
  distillation", Kim et al. 2021, with a frozen snapshot rather than stored predictions). After
  every epoch the student's weights are copied into a frozen snapshot; during the next epoch
      D = T²·KL(snapshot(x)/T ‖ s/T),
  and during the first epoch (no snapshot yet) D = 0, i.e. plain CE.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from compress.core.models import build_model
from compress.methods.kd.logit import cross_entropy, kl_divergence
from compress.methods.kd.registry import register
from compress.methods.kd.terms import Setup, Step, Term


@register("dml")
class MutualTerm(Term):

    def __init__(self, setup: Setup):
        super().__init__()
        self.temperature, self.alpha, self.smoothing = setup.temperature, setup.alpha, setup.label_smoothing
        classes = setup.student_probe.logits.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(setup.seed + 10_007)  # a different initialisation from the student's
            self.peer = build_model(setup.options.arch, classes, setup.options.weights,
                                    head_hidden=setup.options.head_hidden)

    def forward(self, step: Step):
        s = step.student.logits
        p = self.peer(step.x)
        to_student = kl_divergence(s, p.detach(), self.temperature)
        peer_loss = (self.alpha * cross_entropy(p, step.y, self.smoothing)
                     + (1 - self.alpha) * kl_divergence(p, s.detach(), self.temperature))
        return to_student, peer_loss


@register("self")
class SelfTerm(Term):

    def __init__(self, setup: Setup):
        super().__init__()
        self.temperature = setup.temperature
        self.snapshot = copy.deepcopy(setup.student).eval()
        for p in self.snapshot.parameters():
            p.requires_grad_(False)
        self.epochs_seen: torch.Tensor
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def state_objects(self) -> list:
        return [self]

    def epoch_end(self, model: nn.Module) -> None:
        self.snapshot.load_state_dict(model.state_dict())
        self.epochs_seen += 1

    def forward(self, step: Step):
        if int(self.epochs_seen) == 0:
            return step.student.logits.sum() * 0.0, None
        self.snapshot.eval()
        with torch.no_grad():
            target = self.snapshot(step.x)
        return kl_divergence(step.student.logits, target, self.temperature), None
