"""The CI gate on hand-made reports, A/B latency on real ONNX files, and the arithmetic behind
the figures it compares."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from compress.gate.ab import ABTiming, latency_rows, slowdown
from compress.gate.verdict import Verdict
from compress.measure.accuracy import accuracy_figures, expected_calibration_error
from compress.measure.latency import paired_ratio, percentiles
from compress.pipeline.cli import main


def model(acc, size, ratio1, ratio8, p50=1.0, macs=None, onnx="x.onnx"):
    latency = {"1": {"p50": p50}, "8": {"p50": 8 * p50}}
    return {"onnx": onnx, "onnx_bytes": size, "params": None if macs is None else macs // 10, "macs": macs,
            "operators": ["Conv", "Gemm", "Relu"], "accuracy": acc, "per_class_accuracy": {}, "confusion_matrix": [],
            "ece": 0.0, "latency_ms": latency["1"], "latency_ms_by_batch": latency, "throughput_ips": 1.0,
            "latency_ratio_to_reference": {"1": ratio1, "8": ratio8}}


REPORT = {"benchmark": {"reference": "teacher", "threads": 1, "batch_sizes": [1, 8], "warmup": 2, "runs": 30,
                        "processes": 3, "input": [None, 3, 48, 48]},
          "environment": {"cpu": "CPU A", "isa": ["avx2"], "threads": 1},
          "models": {"teacher": model(0.90, 1000, 1.0, 1.0, p50=10.0, macs=4_000_000, onnx="teacher.onnx"),
                     "student": model(0.88, 500, 0.30, 0.25, p50=3.0, macs=1_000_000, onnx="student.onnx")}}


def gate(tmp_path, report, baseline=REPORT, *extra):
    (tmp_path / "r.json").write_text(json.dumps(report))
    (tmp_path / "b.json").write_text(json.dumps(baseline))
    return CliRunner().invoke(main, ["check", str(tmp_path / "r.json"), "--baseline", str(tmp_path / "b.json"), *extra])


def changed(path, value, report=REPORT):
    r = copy.deepcopy(report)
    *keys, last = path
    target = r
    for k in keys:
        target = target[k]
    target[last] = value
    return r


def verdicts(output: str, verdict: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.rstrip().endswith(" " + verdict)]


def test_unchanged_report_passes_and_says_latency_needs_a_reference_run(tmp_path):
    result = gate(tmp_path, REPORT)
    assert result.exit_code == 0, result.output
    assert "OK: 8 gated figures within limits (against the baseline file)" in result.output  # 4 per model
    assert "latency not gated: no --reference-run" in result.output


@pytest.mark.parametrize("path,value,figure", [
    (("models", "student", "onnx_bytes"), 600, "onnx_bytes"),                       # +20%
    (("models", "student", "macs"), 1_030_000, "macs"),                             # +3%, exact figure
    (("models", "student", "params"), 103_000, "params"),
    (("models", "student", "operators"), ["Conv", "Gemm", "Relu", "com.microsoft:QLinearAdd"], "operators"),
])
def test_each_portable_regression_fails_with_exit_1(tmp_path, path, value, figure):
    result = gate(tmp_path, changed(path, value))
    assert result.exit_code == 1, result.output
    failing = verdicts(result.output, "FAIL")
    assert len(failing) == 1 and figure in failing[0] and "student" in failing[0]


def test_recorded_accuracy_and_latency_from_another_machine_are_shown_never_gated(tmp_path):
    drifted = changed(("models", "student", "latency_ratio_to_reference"), {"1": 0.45, "8": 0.40})  # +50%, +60%
    drifted["models"]["student"]["accuracy"] = 0.70  # -18 points
    drifted["environment"]["cpu"] = "CPU B"
    result = gate(tmp_path, drifted)
    assert result.exit_code == 0, result.output
    info = {ln.split()[1] for ln in verdicts(result.output, "INFO")}
    assert {"accuracy", "latency_ratio@1", "latency_ratio@8"} <= info


def test_a_dropped_operator_passes_and_is_said(tmp_path):
    result = gate(tmp_path, changed(("models", "student", "operators"), ["Conv", "Gemm"]))
    assert result.exit_code == 0 and "gone: Relu" in result.output


def test_missing_model_fails_and_new_model_is_reported(tmp_path):
    r = copy.deepcopy(REPORT)
    del r["models"]["student"]
    result = gate(tmp_path, r)
    assert result.exit_code == 1 and "absent from report" in result.output and "MISSING" in result.output
    r = copy.deepcopy(REPORT)
    r["models"]["student_int8"] = model(0.88, 200, 0.1, 0.1)
    result = gate(tmp_path, r)
    assert result.exit_code == 0 and "NEW" in result.output


def test_only_selected_models_are_checked(tmp_path):
    r = changed(("models", "student", "macs"), 5_000_000)
    assert gate(tmp_path, r, REPORT, "--models", "teacher").exit_code == 0
    assert gate(tmp_path, r, REPORT, "--models", "student").exit_code == 1


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ('{"models": {}}', "no `models` table"),
    ('{"models": {"teacher": {"accuracy": 0.9}}}', "environment"),
    ('{"format": "compress-baseline/3", "models": {}}', "is a baseline file"),
])
def test_malformed_report_exits_2(tmp_path, content, needle):
    (tmp_path / "r.json").write_text(content)
    (tmp_path / "b.json").write_text(json.dumps(REPORT))
    result = CliRunner().invoke(main, ["check", str(tmp_path / "r.json"), "--baseline", str(tmp_path / "b.json")])
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


def test_mismatched_reference_exits_2(tmp_path):
    result = gate(tmp_path, changed(("benchmark", "reference"), "student"))
    assert result.exit_code == 2 and "cannot be compared" in result.output


def test_baseline_from_several_reports_takes_medians_and_names_its_commit(tmp_path):
    files = []
    for i, r in enumerate((0.30, 0.36, 0.31)):
        f = tmp_path / f"r{i}.json"
        f.write_text(json.dumps(changed(("models", "student", "latency_ratio_to_reference", "1"), r)))
        files.append(str(f))
    result = CliRunner().invoke(main, ["baseline", *files, "-o", str(tmp_path / "b.json"), "--commit", "abc123"])
    assert result.exit_code == 0 and "median of 3 reports, reference commit abc123" in result.output
    base = json.loads((tmp_path / "b.json").read_text())
    assert base["format"] == "compress-baseline/3" and base["commit"] == "abc123" and base["runs"] == 3
    assert base["models"]["student"]["latency_ratio"]["1"] == 0.31
    assert base["recorded_on"]["cpu"] == "CPU A"
    assert gate(tmp_path, REPORT, base).exit_code == 0
    other = tmp_path / "other.json"
    r = copy.deepcopy(REPORT)
    del r["models"]["student"]
    other.write_text(json.dumps(r))
    result = CliRunner().invoke(main, ["baseline", files[0], str(other), "-o", str(tmp_path / "c.json")])
    assert result.exit_code == 2 and "other models" in result.output


def test_a_per_cpu_baseline_of_the_previous_format_still_loads(tmp_path):
    def entry(cpu, macs):
        return {"testbed": {"cpu": cpu, "vendor": "", "isa": [], "threads": 1}, "environment": {"cpu": cpu}, "runs": 1,
                "models": {n: {"accuracy": m["accuracy"], "onnx_bytes": m["onnx_bytes"], "macs": macs[n],
                               "latency_ratio": m["latency_ratio_to_reference"],
                               "latency_p50_ms": {b: s["p50"] for b, s in m["latency_ms_by_batch"].items()}}
                           for n, m in REPORT["models"].items()}}
    old = {"format": "compress-baseline/2", "reference": "teacher",
           "entries": [entry("CPU Z", {"teacher": 4_000_000, "student": 900_000}),
                       entry("CPU A", {"teacher": 4_000_000, "student": 1_000_000})]}
    result = gate(tmp_path, REPORT, old)  # the report's CPU's entry is used: the other's MACs would fail
    assert result.exit_code == 0, result.output


def with_pair(report: dict, delta: float, only_a: int, only_b: int, n: int = 300) -> dict:
    r = copy.deepcopy(report)
    r["comparisons"] = [{"model": "student", "against": "teacher", "delta": delta, "n": n, "only_a_right": only_a,
                         "only_b_right": only_b, "p_value": 0.5, "verdict": "not distinguishable"}]
    return r


def test_paired_differences_catch_a_broken_step_but_not_a_drift(tmp_path):
    base = with_pair(REPORT, -0.02, 3, 9)  # the student 2 points under the teacher
    result = gate(tmp_path, with_pair(REPORT, -0.04, 4, 16), base)  # -2 points: within the noise
    assert result.exit_code == 0, result.output
    assert any("Δacc vs teacher" in ln for ln in verdicts(result.output, "PASS"))
    result = gate(tmp_path, with_pair(REPORT, -0.20, 5, 65), base)  # -18 points: far outside it
    assert result.exit_code == 1
    assert any("Δacc vs teacher" in ln for ln in verdicts(result.output, "FAIL"))


def test_a_baseline_of_other_settings_is_refused_naming_them(tmp_path):
    settings = {"teacher.epochs": 1, "bench.runs": 600, "data.crop": 32}
    base = dict(copy.deepcopy(REPORT), settings=settings)
    now = dict(copy.deepcopy(REPORT), settings=dict(settings, **{"teacher.epochs": 3, "data.crop": 64}))
    result = gate(tmp_path, now, base)
    assert result.exit_code == 2 and "different settings" in result.output
    assert "teacher.epochs 1 vs 3" in result.output and "data.crop 32 vs 64" in result.output
    assert "bench.runs" not in result.output
    same = gate(tmp_path, dict(copy.deepcopy(REPORT), settings=settings), base)
    assert same.exit_code == 0 and "records no settings" not in same.output


def test_a_baseline_without_settings_is_compared_with_a_warning(tmp_path):
    result = gate(tmp_path, dict(copy.deepcopy(REPORT), settings={"seed": 0}), REPORT)
    assert result.exit_code == 0 and "records no settings" in result.output


# ---------------------------------------------------------------- the A/B statistic

def timings(ratios_per_process: list[float], rounds: int = 40, seed: int = 0):
    """Reference and candidate samples with the given true ratio in each process, plus round noise."""
    rng = np.random.default_rng(seed)
    ref, cand = [], []
    for r in ratios_per_process:
        base = 1.0 + 0.3 * rng.random(rounds)  # the machine's speed moves from round to round
        ref += list(base * (1 + 0.02 * rng.standard_normal(rounds)))
        cand += list(base * r * (1 + 0.02 * rng.standard_normal(rounds)))
    return cand, ref, [rounds] * len(ratios_per_process)


def test_a_slowdown_every_process_sees_fails_one_only_some_see_is_inconclusive():
    steady = slowdown(*timings([1.3] * 6))
    assert steady.ratio == pytest.approx(1.3, abs=0.01) and steady.low > 1.25 and steady.processes == 6
    split = slowdown(*timings([1.0, 1.5, 1.0, 1.5, 1.0, 1.5]))
    assert split.growth > 0.10 and split.low < 1.10
    same = slowdown(*timings([1.0] * 6))
    assert same.low < 1.0 < same.high
    lone = slowdown(*timings([1.3]))
    assert lone.processes == 1 and lone.high == float("inf")

    def judged(s, busy=False):
        return latency_rows(ABTiming({("m", 1): s}, {"busy": busy}), 0.10)[0].verdict
    assert judged(steady) is Verdict.FAIL
    assert judged(steady, busy=True) is Verdict.INCONCLUSIVE  # a busy machine is said, never failed on
    assert judged(split) is Verdict.INCONCLUSIVE
    assert judged(same) is Verdict.PASS and judged(lone) is Verdict.INCONCLUSIVE
    assert judged(slowdown(*timings([0.5] * 6))) is Verdict.PASS  # faster is never a regression


# ---------------------------------------------------------------- A/B on real files

def conv_file(path: Path, channels: int, kernel: int) -> None:
    """A one-Conv ONNX model on 3x48x48 images: `channels` and `kernel` set how long it takes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal(
        (channels, 3, kernel, kernel)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["logits"], pads=[kernel // 2] * 4)], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 48, 48])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def run_dir(root: Path, student_channels: int, accuracy: float = 0.88) -> Path:
    """A run directory: REPORT with real files beside it (a 64-filter 7x7 teacher, a 1x1 student)."""
    root.mkdir()
    conv_file(root / "teacher.onnx", 64, 7)
    conv_file(root / "student.onnx", student_channels, 1 if student_channels < 64 else 7)
    (root / "report.json").write_text(json.dumps(changed(("models", "student", "accuracy"), accuracy)))
    return root


def ab_check(tmp_path, candidate: Path, reference: Path, *extra):
    (tmp_path / "b.json").write_text(json.dumps(REPORT))
    return CliRunner().invoke(main, ["check", str(candidate / "report.json"), "--baseline", str(tmp_path / "b.json"),
                                     "--reference-run", str(reference), "--ab-processes", "3", *extra])


def test_ab_passes_identical_files_and_fails_a_far_slower_candidate(tmp_path):
    reference = run_dir(tmp_path / "ref", 1)
    same = ab_check(tmp_path, run_dir(tmp_path / "same", 1), reference)
    assert same.exit_code == 0, same.output
    assert len([ln for ln in verdicts(same.output, "PASS") if "latency@" in ln]) == 4  # 2 models x 2 batches
    slow = ab_check(tmp_path, run_dir(tmp_path / "slow", 64), reference)  # the student now as heavy as the teacher
    busy = "the machine was busy while timing" in slow.output  # then it is said, not failed
    assert slow.exit_code == (0 if busy else 1), slow.output
    flagged = verdicts(slow.output, "INCONCLUSIVE" if busy else "FAIL")
    assert {ln.split()[1] for ln in flagged} == {"latency@1", "latency@8"} and all("student" in ln for ln in flagged)


def test_accuracy_is_compared_with_the_reference_run_and_missing_files_are_one_line(tmp_path):
    reference = run_dir(tmp_path / "ref", 1)
    worse = ab_check(tmp_path, run_dir(tmp_path / "worse", 1, accuracy=0.80), reference, "--models", "student")
    assert worse.exit_code == 1 and any("reference run" in ln and "accuracy" in ln
                                        for ln in verdicts(worse.output, "FAIL")), worse.output
    (reference / "student.onnx").unlink()
    gone = ab_check(tmp_path, run_dir(tmp_path / "cand", 1), reference)
    assert gone.exit_code == 2 and "student.onnx" in gone.output and "reference run" in gone.output
    candidate, reference = run_dir(tmp_path / "at64", 1), run_dir(tmp_path / "at32", 1)
    for folder, crop in ((candidate, 64), (reference, 32)):
        (folder / "report.json").write_text(json.dumps(dict(REPORT, settings={"data.crop": crop})))
    refused = ab_check(tmp_path, candidate, reference)
    assert refused.exit_code == 2 and "report and reference run come from different settings" in refused.output
    assert "data.crop 32 vs 64" in refused.output and "timing" not in refused.output  # refused before any timing


def test_percentiles_on_known_input():
    stats = percentiles(list(range(1, 101)))  # 1..100 ms
    assert stats["p50"] == pytest.approx(50.5) and stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01) and stats["mean"] == pytest.approx(50.5)
    assert stats["iqr_over_median"] == pytest.approx(49.5 / 50.5) and stats["noisy"]
    assert not percentiles([10.0, 10.1, 9.9, 10.0])["noisy"]


def test_paired_ratio_cancels_a_shared_slowdown():
    reference = [10.0, 10.0, 20.0, 20.0, 20.0]  # the machine got twice as slow mid-run
    model = [5.0, 5.0, 10.0, 10.0, 10.0]
    assert paired_ratio(model, reference) == pytest.approx(0.5)


def test_accuracy_figures_and_ece_by_hand():
    logits = np.log(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]]))
    labels = np.array([0, 1, 1, 0])
    # confidences 0.9 (right), 0.6 (wrong), 0.8 (right), 0.7 (right); each alone in its bin
    assert expected_calibration_error(np.exp(logits), labels) == pytest.approx((0.1 + 0.6 + 0.2 + 0.3) / 4)
    f = accuracy_figures(logits, labels, ["a", "b"], teacher_predicted=np.array([0, 0, 0, 0]))
    assert f["accuracy"] == 0.75 and f["confusion_matrix"] == [[2, 0], [1, 1]]
    assert f["per_class_accuracy"] == {"a": 1.0, "b": 0.5} and f["agreement_with_teacher"] == 0.75
    assert "top5_accuracy" not in f


def honesty_script():
    """benchmarks/gate_honesty.py, a script beside the package (not installed), loaded by path."""
    import importlib.util
    path = Path(__file__).parents[1] / "benchmarks" / "gate_honesty.py"
    spec = importlib.util.spec_from_file_location("gate_honesty", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_injected_regressions_add_compute_or_ops_and_keep_predictions(tmp_path):
    """gate_honesty's variants: extra residual blocks whose branch outputs zero (+~20% MACs), and
    extra Adds of a tiny constant (MACs and operator set unchanged)."""
    import onnx
    import onnxruntime as ort
    import torch

    from compress.core.models import build_model, count_macs, save_checkpoint
    from compress.exports.onnx import export_onnx
    from compress.exports.operators import operator_set
    honesty = honesty_script()
    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    save_checkpoint(model, tmp_path / "s.pt", {"arch": "resnet18", "classes": list("abc")})
    variants = honesty.heavier_variants(tmp_path / "s.pt", crop=32, count=5)
    assert len(variants) == 5 and all(0.05 < growth < 0.5 and "block" in added for _, growth, added in variants)
    heavy, growth, _ = variants[0]
    assert abs(growth - 0.2) == min(abs(g - 0.2) for _, g, _ in variants)
    assert count_macs(heavy, 32) == pytest.approx((1 + growth) * count_macs(model, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), heavy(x), atol=1e-5)
    export_onnx(model, tmp_path / "m.onnx", 32, 17, {"macs": "1"})
    source = onnx.load(str(tmp_path / "m.onnx"))
    relus = sum(n.op_type == "Relu" for n in source.graph.node)
    slower = honesty.with_extra_adds(source, "relu", 2)
    onnx.save(slower, str(tmp_path / "slow.onnx"))
    assert len(slower.graph.node) == len(source.graph.node) + 2 * relus
    assert operator_set(tmp_path / "slow.onnx") == operator_set(tmp_path / "m.onnx")
    assert {p.key: p.value for p in slower.metadata_props}["macs"] == "1"
    blocks = honesty.with_extra_adds(source, "block", 1)
    assert len(blocks.graph.node) == len(source.graph.node) + 8  # resnet18: 8 residual blocks
    run = lambda f: ort.InferenceSession(str(f)).run(None, {"input": x.numpy()})[0]  # noqa: E731
    assert np.allclose(run(tmp_path / "m.onnx"), run(tmp_path / "slow.onnx"), atol=1e-4)
