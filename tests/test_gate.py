"""The CI gate on hand-made reports, and the arithmetic behind the figures it compares."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from compress.benchmarks.accuracy import accuracy_figures, expected_calibration_error
from compress.benchmarks.measure import paired_ratio, percentiles
from compress.pipeline.cli import main


def model(acc, size, ratio1, ratio8, p50=1.0, macs=None):
    return {"accuracy": acc, "onnx_bytes": size, "macs": macs,
            "latency_ratio_to_reference": {"1": ratio1, "8": ratio8},
            "latency_ms_by_batch": {"1": {"p50": p50}, "8": {"p50": 8 * p50}}}


REPORT = {"benchmark": {"reference": "teacher"}, "environment": {"cpu": "CPU A"},
          "models": {"teacher": model(0.90, 1000, 1.0, 1.0, p50=10.0, macs=4_000_000),
                     "student": model(0.88, 500, 0.30, 0.25, p50=3.0, macs=1_000_000)}}


def gate(tmp_path, report, baseline=REPORT, *extra):
    (tmp_path / "r.json").write_text(json.dumps(report))
    (tmp_path / "b.json").write_text(json.dumps(baseline))
    return CliRunner().invoke(main, ["check", str(tmp_path / "r.json"), "--baseline", str(tmp_path / "b.json"), *extra])


def changed(path, value):
    r = copy.deepcopy(REPORT)
    *keys, last = path
    target = r
    for k in keys:
        target = target[k]
    target[last] = value
    return r


def test_unchanged_report_passes(tmp_path):
    result = gate(tmp_path, REPORT)
    assert result.exit_code == 0, result.output
    assert "OK: 8 gated figures within limits" in result.output  # teacher: 3 (no ratio to itself); student: 5
    assert "latency_ratio@8" in result.output


@pytest.mark.parametrize("path,value,figure", [
    (("models", "student", "accuracy"), 0.86, "accuracy"),                          # -2 points
    (("models", "student", "onnx_bytes"), 600, "onnx_bytes"),                       # +20%
    (("models", "student", "latency_ratio_to_reference", "1"), 0.36, "latency_ratio@1"),  # +20%
    (("models", "student", "macs"), 1_030_000, "macs"),                             # +3%, exact figure
])
def test_each_kind_of_regression_fails_with_exit_1(tmp_path, path, value, figure):
    result = gate(tmp_path, changed(path, value))
    assert result.exit_code == 1, result.output
    failing = [ln for ln in result.output.splitlines() if ln.rstrip().endswith("FAIL")]
    assert len(failing) == 1 and figure in failing[0] and "student" in failing[0]


def test_within_limits_passes(tmp_path):
    r = changed(("models", "student", "latency_ratio_to_reference", "1"), 0.33)  # +10% < 15%
    r["models"]["student"]["accuracy"] = 0.875  # -0.5 points
    assert gate(tmp_path, r).exit_code == 0


def test_limits_are_configurable(tmp_path):
    r = changed(("models", "student", "latency_ratio_to_reference", "1"), 0.33)
    assert gate(tmp_path, r, REPORT, "--max-latency-regression", "0.05").exit_code == 1


def test_latency_can_be_gated_at_chosen_batch_sizes_only(tmp_path):
    slow1 = changed(("models", "student", "latency_ratio_to_reference", "1"), 0.45)  # +50% at batch 1
    result = gate(tmp_path, slow1, REPORT, "--latency-batches", "8")
    assert result.exit_code == 0, result.output
    assert any("latency_ratio@1" in ln and ln.rstrip().endswith("INFO") for ln in result.output.splitlines())
    slow8 = changed(("models", "student", "latency_ratio_to_reference", "8"), 0.35)  # +40% at batch 8
    assert gate(tmp_path, slow8, REPORT, "--latency-batches", "8").exit_code == 1


def test_missing_model_fails_and_new_model_is_reported(tmp_path):
    r = copy.deepcopy(REPORT)
    del r["models"]["student"]
    result = gate(tmp_path, r)
    assert result.exit_code == 1 and "absent from report" in result.output and "MISSING" in result.output
    r = copy.deepcopy(REPORT)
    r["models"]["student_int8"] = model(0.88, 200, 0.1, 0.1)
    result = gate(tmp_path, r)
    assert result.exit_code == 0 and "NEW" in result.output


def test_missing_figure_is_reported(tmp_path):
    r = copy.deepcopy(REPORT)
    del r["models"]["student"]["latency_ratio_to_reference"]["8"]
    del r["models"]["student"]["latency_ms_by_batch"]["8"]
    result = gate(tmp_path, r)
    assert result.exit_code == 1 and "latency_ratio@8" in result.output and "MISSING" in result.output


def test_only_selected_models_are_checked(tmp_path):
    r = changed(("models", "student", "accuracy"), 0.5)
    assert gate(tmp_path, r, REPORT, "--models", "teacher").exit_code == 0


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ('{"models": {}}', "no `models` table"),
    ('{"models": {"teacher": {"accuracy": 0.9}}}', "lacks figure"),
])
def test_malformed_report_exits_2(tmp_path, content, needle):
    (tmp_path / "r.json").write_text(content)
    (tmp_path / "b.json").write_text(json.dumps(REPORT))
    result = CliRunner().invoke(main, ["check", str(tmp_path / "r.json"), "--baseline", str(tmp_path / "b.json")])
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


def test_mismatched_reference_exits_2(tmp_path):
    r = changed(("benchmark", "reference"), "student")
    result = gate(tmp_path, r)
    assert result.exit_code == 2 and "cannot be compared" in result.output


def test_baseline_roundtrip_and_absolute_latency_only_on_the_same_cpu(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(REPORT))
    result = CliRunner().invoke(main, ["baseline", str(tmp_path / "r.json"), "-o", str(tmp_path / "base.json")])
    assert result.exit_code == 0, result.output
    base = json.loads((tmp_path / "base.json").read_text())
    assert base["format"] == "compress-baseline/2" and len(base["entries"]) == 1
    assert base["entries"][0]["models"]["student"]["latency_ratio"]["1"] == 0.30
    slower = copy.deepcopy(REPORT)
    slower["models"]["student"]["latency_ms_by_batch"]["1"]["p50"] = 4.0  # +33% absolute
    result = gate(tmp_path, slower, base, "--absolute-latency")
    assert result.exit_code == 1 and "latency_p50_ms@1" in result.output
    other = changed(("environment", "cpu"), "CPU B")
    other["models"]["student"]["latency_ms_by_batch"]["1"]["p50"] = 4.0
    result = gate(tmp_path, other, base, "--absolute-latency")
    assert result.exit_code == 0, result.output
    assert any("latency_p50_ms@1" in ln and ln.rstrip().endswith("INFO") for ln in result.output.splitlines())


def on_cpu(report: dict, cpu: str, vendor: str, isa: list[str]) -> dict:
    r = copy.deepcopy(report)
    r["environment"] = {"cpu": cpu, "vendor": vendor, "isa": isa, "threads": 2}
    return r


XEON = ("Intel(R) Xeon(R) Processor", "GenuineIntel", ["amx_int8", "amx_tile", "avx2", "avx512_vnni", "avx512f"])
EPYC = ("AMD EPYC", "AuthenticAMD", ["avx2", "avx512_vnni", "avx512f"])


def test_another_cpus_entry_never_fails_on_latency_or_accuracy_but_compute_fails_everywhere(tmp_path):
    base = on_cpu(REPORT, *XEON)
    drifted = on_cpu(REPORT, *EPYC)  # another CPU: slower int8 kernels, other trained weights
    drifted["models"]["student"]["latency_ratio_to_reference"] = {"1": 0.45, "8": 0.40}  # +50%, +60%
    drifted["models"]["student"]["accuracy"] = 0.70  # -18 points
    drifted["models"]["teacher"]["accuracy"] = 0.99
    result = gate(tmp_path, drifted, base)
    assert result.exit_code == 0, result.output
    assert "no baseline for AMD EPYC (avx512_vnni, 2 threads): latency and absolute accuracy not gated; " \
           "add one with `compress baseline --add`" in result.output
    info = [ln for ln in result.output.splitlines() if ln.rstrip().endswith("INFO")]
    assert {"accuracy", "latency_ratio@1", "latency_ratio@8"} <= {ln.split()[1] for ln in info}
    grown = copy.deepcopy(drifted)
    grown["models"]["student"]["macs"] = 1_200_000  # +20%
    for against in (base, on_cpu(REPORT, *EPYC)):  # the other CPU's entry, and this CPU's own
        result = gate(tmp_path, grown, against)
        assert result.exit_code == 1, result.output
        failing = [ln for ln in result.output.splitlines() if ln.rstrip().endswith("FAIL")]
        assert any("macs" in ln and "student" in ln for ln in failing), result.output
    result = gate(tmp_path, drifted, base, "--strict-testbed")
    assert result.exit_code == 2 and "no baseline for AMD EPYC" in result.output


def test_entries_per_cpu_add_replace_and_the_matching_one_is_used(tmp_path):
    files = []
    for i, (cpu, ratio) in enumerate(((XEON, 0.30), (EPYC, 0.36), (EPYC, 0.38))):
        f = tmp_path / f"r{i}.json"
        f.write_text(json.dumps(on_cpu(changed(("models", "student", "latency_ratio_to_reference", "1"), ratio), *cpu)))
        files.append(str(f))
    out = str(tmp_path / "b.json")
    run = lambda *a: CliRunner().invoke(main, ["baseline", *a, "-o", out])  # noqa: E731
    assert run(files[0]).exit_code == 0
    refused = run(files[1])
    assert refused.exit_code == 2 and "--add" in refused.output and "Intel(R) Xeon(R) Processor" in refused.output
    assert run(files[1], "--add").exit_code == 0
    result = run(files[2], "--add")
    assert result.exit_code == 0 and "replaced" in result.output and "2 entries" in result.output
    base = json.loads(Path(out).read_text())
    assert [e["testbed"]["cpu"] for e in base["entries"]] == ["Intel(R) Xeon(R) Processor", "AMD EPYC"]
    # on the EPYC, its own entry (0.38) is the bar: 0.45 is +18%, a regression there
    slow = on_cpu(changed(("models", "student", "latency_ratio_to_reference", "1"), 0.45), *EPYC)
    result = gate(tmp_path, slow, base)
    assert result.exit_code == 1 and "against AMD EPYC" not in result.output
    assert gate(tmp_path, on_cpu(REPORT, *EPYC), base).exit_code == 0


def test_an_old_single_cpu_baseline_still_loads(tmp_path):
    old = {"format": "compress-baseline/1", "reference": "teacher",
           "environment": {"cpu": XEON[0], "isa": XEON[2], "threads": 2},
           "models": {n: {"accuracy": m["accuracy"], "onnx_bytes": m["onnx_bytes"], "macs": m["macs"],
                          "latency_ratio": m["latency_ratio_to_reference"],
                          "latency_p50_ms": {b: s["p50"] for b, s in m["latency_ms_by_batch"].items()}}
                      for n, m in REPORT["models"].items()}}
    same = gate(tmp_path, on_cpu(REPORT, *XEON), old)  # the vendor is read off the model name
    assert same.exit_code == 0 and "no baseline for" not in same.output, same.output
    slow = on_cpu(changed(("models", "student", "latency_ratio_to_reference", "1"), 0.40), *XEON)
    assert gate(tmp_path, slow, old).exit_code == 1
    assert gate(tmp_path, on_cpu(slow, *EPYC), old).exit_code == 0


def with_pair(report: dict, delta: float, only_a: int, only_b: int, n: int = 300) -> dict:
    r = copy.deepcopy(report)
    r["comparisons"] = [{"model": "student", "against": "teacher", "delta": delta, "n": n,
                         "only_a_right": only_a, "only_b_right": only_b}]
    return r


def test_paired_differences_catch_a_broken_step_on_any_cpu_but_not_a_drift(tmp_path):
    base = on_cpu(with_pair(REPORT, -0.02, 3, 9), *XEON)  # the student 2 points under the teacher
    drift = on_cpu(with_pair(REPORT, -0.04, 4, 16), *EPYC)  # -2 points: within the noise
    result = gate(tmp_path, drift, base)
    assert result.exit_code == 0, result.output
    assert any("Δacc vs teacher" in ln and ln.rstrip().endswith("PASS") for ln in result.output.splitlines())
    broken = on_cpu(with_pair(REPORT, -0.20, 5, 65), *EPYC)  # -18 points: far outside it
    result = gate(tmp_path, broken, base)
    assert result.exit_code == 1
    assert any("Δacc vs teacher" in ln and ln.rstrip().endswith("FAIL") for ln in result.output.splitlines())


def test_a_new_operator_fails_and_a_dropped_one_passes(tmp_path):
    base = copy.deepcopy(REPORT)
    for m in base["models"].values():
        m["operators"] = ["Conv", "Gemm", "Relu"]
    more = copy.deepcopy(base)
    more["models"]["student"]["operators"] = ["Conv", "Gemm", "Relu", "com.microsoft:QLinearAdd"]
    result = gate(tmp_path, more, base)
    assert result.exit_code == 1 and "new: com.microsoft:QLinearAdd" in result.output
    fewer = copy.deepcopy(base)
    fewer["models"]["student"]["operators"] = ["Conv", "Gemm"]
    result = gate(tmp_path, fewer, base)
    assert result.exit_code == 0 and "gone: Relu" in result.output


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


def test_baseline_from_several_reports_takes_medians(tmp_path):
    ratios = (0.30, 0.36, 0.31)
    files = []
    for i, r in enumerate(ratios):
        f = tmp_path / f"r{i}.json"
        f.write_text(json.dumps(changed(("models", "student", "latency_ratio_to_reference", "1"), r)))
        files.append(str(f))
    result = CliRunner().invoke(main, ["baseline", *files, "-o", str(tmp_path / "b.json")])
    assert result.exit_code == 0 and "median of 3 reports" in result.output
    base = json.loads((tmp_path / "b.json").read_text())
    entry = base["entries"][0]
    assert entry["runs"] == 3 and entry["models"]["student"]["latency_ratio"]["1"] == 0.31
    other = tmp_path / "other.json"
    r = copy.deepcopy(REPORT)
    del r["models"]["student"]
    other.write_text(json.dumps(r))
    result = CliRunner().invoke(main, ["baseline", files[0], str(other), "-o", str(tmp_path / "c.json")])
    assert result.exit_code == 2 and "other models" in result.output


def test_macs_missing_from_the_report_fails_and_unknown_on_both_sides_is_no_row(tmp_path):
    result = gate(tmp_path, changed(("models", "student", "macs"), None))
    assert result.exit_code == 1 and "absent from report" in result.output, result.output
    no_macs = copy.deepcopy(REPORT)
    for m in no_macs["models"].values():
        m["macs"] = None
    result = gate(tmp_path, no_macs, no_macs)
    assert result.exit_code == 0 and "macs" not in result.output, result.output


def test_injected_regression_adds_compute_and_keeps_predictions(tmp_path):
    """gate_honesty's +compute variant: an extra residual block whose branch outputs zero."""
    import torch

    from compress.benchmarks.gate_honesty import heavier_variant
    from compress.core.models import build_model, count_macs, save_checkpoint
    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    save_checkpoint(model, tmp_path / "s.pt", {"arch": "resnet18", "classes": list("abc")})
    heavy, growth, added = heavier_variant(tmp_path / "s.pt", crop=32)
    assert 0.1 < growth < 0.3 and "block" in added
    assert count_macs(heavy, 32) == pytest.approx((1 + growth) * count_macs(model, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), heavy(x), atol=1e-5)


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


def timed_report(tmp_path, claimed_ratio: float) -> dict:
    """REPORT with real files beside it: a heavy teacher (64 7x7 filters) and a 1x1 student, so the
    student's true ratio is far below 0.3; the report claims `claimed_ratio` at batch 1."""
    conv_file(tmp_path / "teacher.onnx", 64, 7)
    conv_file(tmp_path / "student.onnx", 1, 1)
    r = changed(("models", "student", "latency_ratio_to_reference", "1"), claimed_ratio)
    r["benchmark"].update(threads=1, batch_sizes=[1, 8], warmup=2, runs=30, processes=1, input=[None, 3, 48, 48])
    for name in r["models"]:
        r["models"][name]["onnx"] = f"{name}.onnx"
    return r


def test_a_latency_failure_that_does_not_reproduce_passes_as_noise(tmp_path):
    """The run's timing said +100%; timing the same files again finds the student as fast as ever."""
    baseline = changed(("models", "student", "latency_ratio_to_reference", "1"), 0.30)
    result = gate(tmp_path, timed_report(tmp_path, 0.60), baseline)
    assert result.exit_code == 0, result.output
    assert "not reproduced, passed as noise" in result.output and "again" in result.output
    unconfirmed = gate(tmp_path, timed_report(tmp_path, 0.60), baseline, "--no-confirm")
    assert unconfirmed.exit_code == 1 and "again" not in unconfirmed.output


def test_a_latency_failure_that_reproduces_fails(tmp_path):
    """A baseline far faster than the files can ever be: the second timing confirms the failure."""
    baseline = changed(("models", "student", "latency_ratio_to_reference", "1"), 0.0001)
    result = gate(tmp_path, timed_report(tmp_path, 0.0002), baseline)
    assert result.exit_code == 1, result.output
    assert "confirmed" in result.output and "REGRESSION: 1 of" in result.output


def test_latency_failures_stand_when_the_files_are_gone(tmp_path):
    baseline = changed(("models", "student", "latency_ratio_to_reference", "1"), 0.30)
    report = timed_report(tmp_path, 0.60)
    (tmp_path / "student.onnx").unlink()
    result = gate(tmp_path, report, baseline)
    assert result.exit_code == 1, result.output
    assert "not timed again" in result.output and "student.onnx" in result.output
