"""`compress predict` and `compress evaluate` on a tiny exported model, from the file alone."""
from __future__ import annotations

import torch
import torchvision
from click.testing import CliRunner

from compress.exports.onnx import client_metadata, export_onnx
from compress.pipeline.cli import main


def tiny_model(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    path = tmp_path / "tiny.onnx"
    export_onnx(model, path, crop=16, opset=17,
                metadata=client_metadata(["digit0", "digit1", "digit2"], [0.5] * 3, [0.25] * 3, 20, 16))
    return path


def test_predict_prints_top_k_labels(tmp_path, digits_folder):
    model = tiny_model(tmp_path)
    images = sorted((digits_folder / "val/digit1").glob("*.png"))[:2]
    result = CliRunner().invoke(main, ["predict", str(model), *map(str, images), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and all(ln.split(": ", 1)[1].count("digit") == 2 for ln in lines)
    probs = [float(tok) for tok in lines[0].split(": ", 1)[1].replace(",", "").split()[1::2]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_evaluate_counts_the_val_split(tmp_path, digits_folder):
    model = tiny_model(tmp_path)
    result = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(digits_folder)])
    assert result.exit_code == 0, result.output
    assert "on 18 images" in result.output and "digit2" in result.output


def test_bad_inputs_are_one_line_errors(tmp_path, digits_folder):
    model = tiny_model(tmp_path)
    for args, needle in ((["predict", str(model), str(tmp_path / "none.png")], "none.png"),
                         (["predict", str(tmp_path / "missing.onnx"), "x.png"], "missing.onnx"),
                         (["evaluate", str(model), "--data", str(tmp_path)], "not among the model's labels")):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


def test_bench_measures_exported_files_outside_a_run(tmp_path, digits_folder):
    import json
    big = tiny_model(tmp_path)
    small_model = torchvision.models.resnet18(num_classes=3).eval()
    small_path = tmp_path / "small.onnx"
    export_onnx(small_model, small_path, crop=16, opset=17,
                metadata=client_metadata(["digit0", "digit1", "digit2"], [0.5] * 3, [0.25] * 3, 20, 16,
                                         params=123, macs=456))
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["bench", str(big), str(small_path), "--data", str(digits_folder),
                                       "--out", str(out), "--set", "bench.runs=3", "--set", "bench.warmup=1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["benchmark"]["reference"] == "tiny" and report["dataset"]["val_size"] == 18
    assert report["models"]["small"]["macs"] == 456 and report["models"]["tiny"]["macs"] is None
    assert report["models"]["tiny"]["latency_ratio_to_reference"] == {"1": 1.0, "8": 1.0}
    assert "agreement_with_reference" in report["models"]["small"]
    mismatch = tmp_path / "other.onnx"
    export_onnx(small_model, mismatch, crop=16, opset=17,
                metadata=client_metadata(["a", "b", "c"], [0.5] * 3, [0.25] * 3, 20, 16))
    result = CliRunner().invoke(main, ["bench", str(big), str(mismatch), "--data", str(digits_folder)])
    assert result.exit_code == 2 and "other preprocessing or labels" in result.output


def test_evaluate_takes_the_embedded_digits_like_run_and_bench(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "digits.onnx"
    export_onnx(torchvision.models.resnet18(num_classes=10).eval(), path, crop=16, opset=17,
                metadata=client_metadata([str(i) for i in range(10)], [0.5] * 3, [0.25] * 3, 20, 16))
    result = CliRunner().invoke(main, ["evaluate", str(path), "--data", "digits"])
    assert result.exit_code == 0, result.output
    assert "on 287 images" in result.output  # the digits' test split


def test_predict_and_losses_never_import_torch(tmp_path, digits_folder):
    """What ONNX Runtime alone does must not wait for torch to load."""
    import subprocess
    import sys
    model = tiny_model(tmp_path)
    image = next((digits_folder / "val/digit1").glob("*.png"))
    code = ("import sys; from click.testing import CliRunner; from compress.pipeline.cli import main; "
            f"r1 = CliRunner().invoke(main, ['predict', {str(model)!r}, {str(image)!r}]); "
            "r2 = CliRunner().invoke(main, ['losses']); "
            "print(r1.exit_code, r2.exit_code, 'kl' in r2.output, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "0", "True", "False"]
