"""Latency timed in fresh child processes: every round accounted for, rounds stay paired across
processes, the child never loads torch, and a child that fails says why."""
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compress.measure.latency_worker import time_in_fresh_processes


def relu_model(path, channels=3):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["logits"])], "relu",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", channels, 4, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_rounds_are_split_over_processes_and_all_come_back(tmp_path):
    paths = {"a": relu_model(tmp_path / "a.onnx"), "b": relu_model(tmp_path / "b.onnx")}
    images = np.random.default_rng(0).random((8, 3, 4, 4), dtype=np.float32)
    measured = time_in_fresh_processes(paths, images, [1, 8], threads=1, warmup=1, runs=7, calls=2, processes=3)
    timings = measured.samples
    assert sorted(timings) == [1, 8]
    assert {"busy", "other_cpu_share", "process_spread"} <= set(measured.contention)
    for per_model in timings.values():
        assert sorted(per_model) == ["a", "b"]
        assert all(len(t) == 7 and min(t) > 0 for t in per_model.values())


def test_more_processes_than_rounds_is_capped(tmp_path):
    paths = {"a": relu_model(tmp_path / "a.onnx")}
    timings = time_in_fresh_processes(paths, np.zeros((1, 3, 4, 4), np.float32), [1], 1, 0, runs=2, processes=5)
    assert len(timings.samples[1]["a"]) == 2


def test_the_worker_never_imports_torch():
    code = "import sys, compress.measure.latency_worker; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_a_failing_child_names_its_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(RuntimeError, match="latency worker failed"):
        time_in_fresh_processes({"bad": bad}, np.zeros((1, 3, 4, 4), np.float32), [1], 1, 0, 2)


def test_a_cpu_hog_beside_the_timing_is_reported_as_a_busy_machine(tmp_path):
    """Other processes' CPU time during the timing is measured, not guessed: with a busy loop
    on every core for the whole timing, the run is flagged busy."""
    import os
    paths = {"a": relu_model(tmp_path / "a.onnx"), "b": relu_model(tmp_path / "b.onnx")}
    hog = "import time\nt = time.time()\nwhile time.time() - t < 20: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(os.cpu_count() or 1)]
    try:
        measured = time_in_fresh_processes(paths, np.zeros((1, 3, 4, 4), np.float32), [1], 1, 2, runs=400,
                                           processes=2)
    finally:
        for h in hogs:
            h.kill()
    c = measured.contention
    assert c["busy"] and c["other_cpu_share"] > 0.3, c


def test_process_spread_is_the_widest_relative_disagreement_between_processes():
    from compress.measure.contention import Probe
    found = Probe.start().finish({"a": [1.0, 1.2, 0.8], "b": [0.5, 0.5, 0.55]})  # medians 1.0 and 0.5
    assert found["process_spread"] == pytest.approx(0.4)  # (1.2 - 0.8) / 1.0 beats (0.55 - 0.5) / 0.5
