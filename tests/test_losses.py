"""Every distillation term against a value computed by hand (or by an independent loop)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from compress.core.config import DistillConfig
from compress.core.errors import CompressError
from compress.methods.kd.adversarial import AdversarialTerm, discriminator_loss, generator_loss
from compress.methods.kd.feature import HintTerm, cosine_distance, hint_mse, rkd_angle, rkd_distance
from compress.methods.kd.logit import kl_divergence, logit_mse
from compress.methods.kd.objective import Objective, Settings, TeacherSignal
from compress.methods.kd.online import MutualTerm, SelfTerm
from compress.methods.kd.spec import parse_spec, uses_temperature
from compress.methods.kd.terms import Outputs, Setup, Step


def test_kl_matches_hand_computed_value():
    s, t, T = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 2.0
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]  # softmax([0.5, 0])
    pt = [1 / (math.exp(0.5) + 1), math.exp(0.5) / (math.exp(0.5) + 1)]
    expected = T ** 2 * sum(q * math.log(q / p) for p, q in zip(ps, pt))
    assert kl_divergence(s, t, temperature=T).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.4898, abs=1e-4)


def test_kl_is_zero_for_identical_logits_and_batch_averaged():
    x = torch.randn(4, 5)
    assert kl_divergence(x, x, temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)
    one = kl_divergence(x[:1], x[1:2] * 2, temperature=1.0)
    two = kl_divergence(torch.cat([x[:1]] * 2), torch.cat([x[1:2] * 2] * 2), temperature=1.0)
    assert one.item() == pytest.approx(two.item(), rel=1e-6)


def test_mse_on_logits():
    s, t = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert logit_mse(s, t).item() == pytest.approx((1 + 4 + 0 + 4) / 4)


def test_hint_regressor_and_mse():
    s_map, t_map = torch.randn(2, 2, 4, 4), torch.randn(2, 3, 4, 4)
    setup = make_setup(student_probe=Outputs(torch.zeros(1, 2), hint=s_map), teacher_probe=Outputs(torch.zeros(1, 2), hint=t_map))
    term = HintTerm(setup)
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # a 1x1 map hidden in the 3x3 kernel's centre
    with torch.no_grad():
        term.regressor.weight.zero_()
        term.regressor.weight[:, :, 1, 1] = w
    expected = ((torch.einsum("oc,nchw->nohw", w, s_map) - t_map) ** 2).mean()
    d, extra = term(Step(None, None, Outputs(None, hint=s_map), Outputs(None, hint=t_map)))
    assert d.item() == pytest.approx(expected.item(), rel=1e-5) and extra is None
    assert hint_mse(t_map, t_map).item() == 0.0
    assert sum(p.numel() for p in term.parameters()) == 3 * 2 * 9  # trained with the student


def test_cosine_distance():
    assert cosine_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).item() == pytest.approx(1.0)
    assert cosine_distance(torch.tensor([[1.0, 1.0]]), torch.tensor([[3.0, 0.0]])).item() == pytest.approx(1 - 1 / math.sqrt(2))


def _huber(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def test_rkd_distance_by_hand():
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    def normalised(points):
        d = [[math.dist(p, q) for q in points] for p in points]
        mean = sum(x for row in d for x in row if x > 0) / 6
        return [[x / mean for x in row] for row in d]
    ds, dt = normalised(s.tolist()), normalised(t.tolist())
    expected = sum(_huber(ds[i][j], dt[i][j]) for i in range(3) for j in range(3)) / 9
    assert rkd_distance(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert rkd_distance(s, 3 * s).item() == pytest.approx(0.0, abs=1e-6)  # scale-free


def test_rkd_angle_by_hand():
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    def cosines(points):
        out = []
        for i in range(3):
            for j in range(3):
                for k in range(3):
                    u = [a - b for a, b in zip(points[j], points[i])]
                    v = [a - b for a, b in zip(points[k], points[i])]
                    nu, nv = math.hypot(*u), math.hypot(*v)
                    out.append(0.0 if nu == 0 or nv == 0 else (u[0] * v[0] + u[1] * v[1]) / (nu * nv))
        return out
    expected = sum(_huber(a, b) for a, b in zip(cosines(s.tolist()), cosines(t.tolist()))) / 27
    assert rkd_angle(s, t).item() == pytest.approx(expected, rel=1e-5)
    rotated = s @ torch.tensor([[0.0, -1.0], [1.0, 0.0]]) * 5 + 1  # similarity transform keeps angles
    assert rkd_angle(s, rotated).item() == pytest.approx(0.0, abs=1e-6)


def test_adversarial_losses_and_alternation():
    real, fake = torch.tensor([[0.0]]), torch.tensor([[0.0]])
    assert discriminator_loss(real, fake).item() == pytest.approx(2 * math.log(2))
    assert generator_loss(torch.tensor([[2.0]])).item() == pytest.approx(math.log(1 + math.exp(-2.0)))
    setup = make_setup(options=DistillConfig(adversarial_steps=3))
    term = AdversarialTerm(setup)
    before = [p.detach().clone() for p in term.discriminator.parameters()]
    s = torch.randn(4, 2, requires_grad=True)
    d, _ = term(Step(None, None, Outputs(s), Outputs(torch.randn(4, 2))))
    assert term.state_objects()[1].state_dict()["state"][0]["step"] == 3  # three discriminator updates
    assert any(not torch.equal(a, b) for a, b in zip(before, term.discriminator.parameters()))
    assert term.trainable_modules() == []  # not trained by the student's optimizer
    expected = generator_loss(term.discriminator(s))
    assert d.item() == pytest.approx(expected.item(), rel=1e-6)
    d.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_dml_peer_learns_from_student_and_labels():
    student = nn.Linear(4, 3)
    term = MutualTerm.__new__(MutualTerm)  # a tiny peer instead of a ResNet18
    nn.Module.__init__(term)
    term.temperature, term.alpha, term.smoothing, term.peer = 2.0, 0.25, 0.0, nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    s = student(x)
    d, peer_loss = term(Step(x, y, Outputs(s), None))
    p = term.peer(x)
    assert d.item() == pytest.approx(kl_divergence(s, p, 2.0).item(), rel=1e-6)
    expected = 0.25 * nn.functional.cross_entropy(p, y) + 0.75 * kl_divergence(p, s, 2.0)
    assert peer_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    (d + peer_loss).backward()
    assert term.peer.weight.grad is not None and student.weight.grad is not None
    assert MutualTerm.needs_teacher is False


def test_dml_term_takes_its_settings_from_the_setup():
    setup = make_setup(alpha=0.3, temperature=3.0, label_smoothing=0.1, student_probe=Outputs(torch.zeros(1, 3)),
                       options=SimpleNamespace(arch="resnet18", weights="none", head_hidden=[]))
    term = MutualTerm(setup)
    assert (term.alpha, term.temperature, term.smoothing) == (0.3, 3.0, 0.1)
    assert term.peer.fc.out_features == 3  # as many classes as the student's logits


def test_self_distillation_uses_previous_epoch_snapshot():
    student = nn.Linear(4, 3)
    term = SelfTerm(make_setup(student=student, temperature=2.0))
    x = torch.randn(5, 4)
    d0, _ = term(Step(x, None, Outputs(student(x)), None))
    assert d0.item() == 0.0  # first epoch: nothing to learn from yet
    term.epoch_end(student)
    old = student(x).detach()
    with torch.no_grad():
        student.weight[0].add_(1.0)
    d1, _ = term(Step(x, None, Outputs(student(x)), None))
    assert d1.item() == pytest.approx(kl_divergence(student(x), old, 2.0).item(), rel=1e-6) and d1.item() > 0
    assert "epochs_seen" in term.state_objects()[0].state_dict()


def test_objective_alpha_and_weighted_sum():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    x, y, t = torch.tensor([[2.0, 0.0]]), torch.tensor([0]), torch.tensor([[0.0, 2.0]])
    ce, mse, kl = math.log(1 + math.exp(-2.0)), 4.0, kl_divergence(x, t, 1.0).item()
    def objective(spec, alpha):
        return Objective(spec, Settings(alpha, 1.0, 0.0, DistillConfig(), 0), model, TeacherSignal(logits=t), x,
                         torch.device("cpu"))
    index = torch.tensor([0])
    assert objective("mse", 0.25)(model, x, y, index).item() == pytest.approx(0.25 * ce + 0.75 * mse, rel=1e-6)
    assert objective("mse", 1.0)(model, x, y, index).item() == pytest.approx(ce, rel=1e-6)
    assert objective("0.5*mse + kl", 0.0)(model, x, y, index).item() == pytest.approx(0.5 * mse + kl, rel=1e-6)


def test_spec_parsing_and_errors():
    assert parse_spec("kl + 0.5*hint") == [(1.0, "kl"), (0.5, "hint")]
    assert parse_spec("0.3*mse+rkd") == [(0.3, "mse"), (1.0, "rkd")]
    assert uses_temperature("kl") and not uses_temperature("mse + rkd")
    with pytest.raises(CompressError, match="valid: adversarial, cosine, dml, hint, kl, mse, rkd, self"):
        parse_spec("kld")
    with pytest.raises(CompressError, match="cannot read"):
        parse_spec("kl + -1*mse")
    with pytest.raises(CompressError, match="appears twice"):
        parse_spec("kl + kl")


def make_setup(**kw) -> Setup:
    base = dict(temperature=4.0, alpha=0.5, label_smoothing=0.0, student=nn.Linear(2, 2),
                student_probe=Outputs(torch.zeros(1, 2)), teacher_probe=None, options=DistillConfig(), seed=0)
    return Setup(**{**base, **kw})
