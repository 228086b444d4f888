"""A model that predicts one class for every image is flagged and never chosen: the rule itself,
the search's choice, and a single run that refuses to package such a deployable."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from helpers import cli_args

from compress.core.budget import single_class
from compress.core.errors import CompressError
from compress.methods.pareto import Point, choose, front
from compress.pipeline.cli import main


def test_single_class_only_when_every_answer_is_the_same():
    assert single_class(np.array([2, 2, 2]), classes=3) == 2
    assert single_class(np.array([2, 2, 1]), classes=3) is None
    assert single_class(np.array([0, 0]), classes=1) is None  # one class: nothing else to predict


def _point(name: str, accuracy: float, ms: float, one: str | None = None) -> Point:
    return Point(name, "resnet18", 0 if name == "student" else 1, name == "student", accuracy, ms, 1.0, one)


def test_the_choice_leaves_out_a_degenerate_point_even_when_it_is_fastest_and_within_budget():
    points = [_point("student", 0.50, 10.0), _point("collapsed", 0.50, 1.0, "ants"), _point("int8", 0.495, 5.0)]
    assert choose(points, "fastest_within_budget", 1.0).chosen.name == "int8"
    assert "collapsed" in [p.name for p in front(points)]  # still shown, flagged, on the front
    assert choose(points, "most_accurate_under", 1.0, max_latency_ms=6.0).chosen.name == "int8"
    with pytest.raises(CompressError, match="every point predicts one class"):
        choose([_point("collapsed", 0.5, 1.0, "ants")], "fastest_within_budget", 1.0)


@pytest.mark.slow
def test_a_single_run_does_not_package_a_degenerate_deployable(digits_folder, tmp_path):
    """The student starts from a checkpoint whose head answers class 2 whatever the image (zero
    weights, one large bias) and barely moves (lr 1e-9): the run must measure that, stop with one
    line naming the key that would ship it anyway, and leave no deploy/."""
    model = torchvision.models.resnet18(num_classes=3)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([0.0, 0.0, 10.0]))
    start = tmp_path / "collapsed.pt"
    torch.save(model.state_dict(), start)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(digits_folder, out, distill__arch="resnet18", distill__weights=str(start),
                                               finetune__recipe="scratch",
                                               distill__lr=1e-9, distill__baseline="false", prune__enabled="false",
                                               quantize__enabled="false", deploy__allow_degenerate="false"))
    assert result.exit_code == 2, result.output  # the CLI's exit code for a refused run
    message = result.output.strip().splitlines()[-1]
    assert "deployable student predicts 'digit2' for every val image" in message and "deploy.allow_degenerate" in message
    assert "Traceback" not in result.output
    assert not (out / "deploy" / "model.onnx").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["student"]["predicts_one_class"] == "digit2"
    assert any("student is degenerate" in w for w in report["warnings"])
