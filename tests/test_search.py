"""A search over students and prune rounds: the Pareto front, the rule that chose (recomputed from
report.json), a budget nothing meets, and a killed search that resumes."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import cli_args

from compress.core import faults
from compress.core.errors import CompressError
from compress.methods.pareto import Point, choose, front
from compress.pipeline.cli import main


def p(name, accuracy, ms, mb=1.0, steps=0, fp32=True, student="a"):
    return Point(name, student, steps, fp32, accuracy, ms, mb)


def test_the_front_and_both_rules_with_their_tie_breaks():
    points = [p("a", 0.90, 3.0), p("a_pruned", 0.895, 1.5, steps=1), p("a_int8", 0.89, 1.0, 0.3, steps=1, fp32=False),
              p("a_pruned_int8", 0.80, 0.6, 0.2, steps=2, fp32=False), p("slow_and_bad", 0.70, 4.0, student="b")]
    assert [q.name for q in front(points)] == ["a_pruned_int8", "a_int8", "a_pruned", "a"]
    fastest = choose(points, "fastest_within_budget", 1.0)
    assert fastest.chosen.name == "a_int8" and fastest.runner_up.name == "a_pruned"  # a_pruned_int8 lost 10 points
    accurate = choose(points, "most_accurate_under", 1.0, max_latency_ms=1.6)
    assert accurate.chosen.name == "a_pruned" and "under 1.6 ms" in accurate.rule
    tie = [p("big", 0.9, 1.000, 5.0, steps=1), p("small", 0.9, 1.004, 2.0, steps=2)]  # same speed: size decides
    assert choose(tie, "fastest_within_budget", 1.0).chosen.name == "small"
    with pytest.raises(CompressError, match=r"no model meets deploy.max_latency_ms = 0.1: the closest is a_pruned_int8"):
        choose(points, "most_accurate_under", 1.0, max_latency_ms=0.1)


FIRST = "timm_test_efficientnet"  # the point and folder name of the first student, timm:test_efficientnet
SECOND = "timm_test_resnet"  # timm:test_resnet: two timm test networks keep the three searches near 10 s each
ARGS = dict(distill__arch='["timm:test_efficientnet","timm:test_resnet"]', prune__target="accuracy",
            prune__max_rounds="2", quantize__candidates='["qdq_u8s8"]', deploy__max_accuracy_drop="100",
            export__ort="false")


@pytest.mark.slow
def test_a_search_measures_every_point_chooses_by_the_rule_and_resumes(digits_folder, tmp_path):
    out = tmp_path / "search"

    def killed_at_the_second_student(folder):
        if SECOND in str(folder):
            raise KeyboardInterrupt
    with faults.injected("search.student", killed_at_the_second_student):
        result = CliRunner().invoke(main, cli_args(digits_folder, out, **ARGS))
    assert result.exit_code == 130  # interrupted; the first student is finished
    result = CliRunner().invoke(main, cli_args(digits_folder, out, **ARGS))
    assert result.exit_code == 0, result.output
    first = json.loads((out / f"students/{FIRST}/manifest.json").read_text())
    assert first["executed"] == [] and first["skipped"] == ["distill", "baseline", "prune", "export"]  # not retrained
    search = json.loads((out / "manifest.json").read_text())
    assert search["executed"][:3] == [f"students/{SECOND}/distill", f"students/{SECOND}/baseline",
                                      f"students/{SECOND}/prune"]
    assert [s for s in search["executed"] if "/" not in s] == ["points", "point_timing", "choice", "package", "report"]
    for student in (FIRST, SECOND):  # every point was checked against PyTorch at export
        exported = json.loads((out / f"students/{student}/onnx/models.json").read_text())
        rounds = json.loads((out / f"students/{student}/onnx/prune_rounds.json").read_text())["rounds"]
        assert all(r["parity_max_abs_diff"] <= 1e-3 for r in [*exported.values(), *rounds] if r["parity_max_abs_diff"]
                   is not None)

    report = json.loads((out / "report.json").read_text())
    pareto = report["pareto"]
    expected = 0
    for student in (FIRST, SECOND):
        rounds = json.loads((out / f"students/{student}/checkpoints/prune_rounds.json").read_text())["rounds"]
        expected += (1 + len(rounds) + 1) * 2  # the student, each round, the shipped pruned one; fp32 and int8
    assert len(pareto["points"]) == expected and len(rounds) >= 1
    assert set(pareto["front"]) <= {q["name"] for q in pareto["points"]}
    # the rule, recomputed from report.json: the fastest point within 100 points of the best fp32 student
    points = {q["name"]: q for q in pareto["points"]}
    eligible = [q for q in points.values() if q.get("predicts_one_class") is None]  # degenerate: never chosen
    fastest = min(q["p50_ms"] for q in eligible)
    chosen = points[pareto["chosen"]]
    assert chosen["p50_ms"] <= fastest + 0.01
    assert report["models"]["deployable"] == report["models"][pareto["chosen"]]
    assert (out / "deploy/model.onnx").is_file() and (out / "plots/pareto.png").is_file()
    card = (out / "deploy/model_card.md").read_text()
    assert "Chosen among every point of a search by deploy.objective = fastest_within_budget" in card
    assert "Pareto front" in (out / "report.md").read_text()

    result = CliRunner().invoke(main, cli_args(digits_folder, out, **ARGS, deploy__objective="most_accurate_under",
                                               deploy__max_latency_ms="0.0001"))
    assert result.exit_code == 1
    assert "no model meets deploy.max_latency_ms = 0.0001: the closest is" in result.output
    assert not (out / "deploy/model.onnx").exists()  # nothing shipped as if the budget had been met


def comparable(card: str, first: str) -> str:
    """A model card without what differs between two measurements of the same file (timings) and
    without the search's own section and the point names made from the student `first`."""
    keep = []
    for line in card.split("## Why this model")[0].splitlines():
        if "speed-up over the teacher" in line or line.startswith(("| 1 |", "| 8 |", "| openvino")):
            continue
        keep.append(line.replace(f"{first}_pruned", "student_pruned").replace(f"{first}_baseline", "baseline")
                    .replace(f"- {first} vs", "- student vs").replace(f"vs {first}:", "vs student:")
                    .replace(f"unpruned student ({first})", "unpruned student (student)"))
    return "\n".join(keep).strip()


@pytest.mark.slow
def test_a_one_student_search_ships_what_a_single_run_ships(digits_folder, tmp_path):
    """The same stages make both: the same deployable file, and a card with the same commit,
    config hash, recipe and figures (the search adds why it chose)."""
    # timm's test ResNet trained long enough to answer more than one class: at one 16-px epoch the test
    # networks answer one class, which a single run may ship (deploy.allow_degenerate) and a search never does
    # the search is told to take the most accurate point under 1 MB: the pruned one (0.5 MB; unpruned 1.5 MB),
    # which a single run ships; timing could not tell a 0.37 M-parameter net from its pruned copy
    same = dict(quantize__enabled="false", deploy__objective="most_accurate_under", deploy__max_latency_ms="1000",
                deploy__max_size_mb="1.0", export__ort="false", distill__epochs="6", prune__epochs="3",
                prune__lr="0.002", prune__augment="light")  # on centre crops this recipe's pruned net answers one class
    single, search = tmp_path / "single", tmp_path / "search"
    ran = CliRunner().invoke(main, cli_args(digits_folder, single, distill__arch="timm:test_resnet", **same))
    assert ran.exit_code == 0, ran.output
    result = CliRunner().invoke(main, cli_args(digits_folder, search, distill__arch='["timm:test_resnet"]', **same))
    assert result.exit_code == 0, result.output
    assert "degenerate" not in result.output, result.output  # a real choice between two points
    assert (search / "deploy/model.onnx").read_bytes() == (single / "deploy/model.onnx").read_bytes()
    cards = [(d / "deploy/model_card.md").read_text() for d in (single, search)]
    assert comparable(cards[1], "timm_test_resnet") == comparable(cards[0], "timm_test_resnet")
    assert "commit" in cards[0].splitlines()[3] and "config sha256" in cards[0].splitlines()[3]
    assert "## Why this model" in cards[1] and "## Why this model" not in cards[0]
