"""Adversarial distillation on logits: a discriminator trained GAN-style (Goodfellow et al. 2014)
against the student.

A small MLP discriminator D learns to tell teacher logits ("real") from student logits
("fake"); the student is trained to make D call its logits real. They alternate inside each
training step: first `distill.adversarial_steps` discriminator updates on the batch's detached
logits (Adam, `distill.adversarial_lr`), then the student's term

    D_adv = BCE(D(s), 1) = −mean log σ(D(s))        (the non-saturating GAN loss)

which the student's optimizer minimises together with CE. The discriminator is not trained by
the student's optimizer; it and its optimizer are saved with the training state, so a resumed
run continues the same game.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.methods.kd.registry import register
from compress.methods.kd.terms import Setup, Step, Term


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """BCE(D(t), 1) + BCE(D(s), 0), the scores being D's raw outputs."""
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def generator_loss(fake: torch.Tensor) -> torch.Tensor:
    """BCE(D(s), 1): small when the discriminator takes the student's logits for the teacher's."""
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


@register("adversarial")
class AdversarialTerm(Term):

    def __init__(self, setup: Setup):
        super().__init__()
        classes = setup.student_probe.logits.shape[1]
        self.steps = setup.options.adversarial_steps
        self.lr = setup.options.adversarial_lr
        self.discriminator = nn.Sequential(nn.Linear(classes, 64), nn.LeakyReLU(0.2),
                                           nn.Linear(64, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
        self.optimizer: torch.optim.Optimizer | None = None
        self.last_discriminator_loss = float("nan")

    def _opt(self) -> torch.optim.Optimizer:
        if self.optimizer is None:  # built after the term has been moved to its device
            self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=(0.5, 0.999))
        return self.optimizer

    def trainable_modules(self) -> list[nn.Module]:
        return []

    def state_objects(self) -> list:
        return [self.discriminator, self._opt()]

    def forward(self, step: Step):
        s, t = step.student.logits.float(), step.fixed_teacher().logits.float()
        if torch.is_grad_enabled():
            for _ in range(self.steps):
                d_loss = discriminator_loss(self.discriminator(t.detach()), self.discriminator(s.detach()))
                self._opt().zero_grad(set_to_none=True)
                d_loss.backward()
                self._opt().step()
                self.last_discriminator_loss = float(d_loss.detach())
        return generator_loss(self.discriminator(s)), None
