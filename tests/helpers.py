"""Test helpers: small real image folders written from scikit-learn's digits, and a tiny config
that runs every real code path in seconds on 2 CPU cores. Its teacher and student are timm's test
networks (a 0.37 M-parameter ResNet, a 0.10 M-parameter EfficientNet): at 16 px a run's time goes to
saving, hashing, exporting and quantizing weights, which a ResNet18 pair made 2.7x slower
(21 s vs 7.8 s a run, measured). The end-to-end test runs the default ResNet50 -> ResNet18, and
the tests of ResNet-specific behaviour name their architectures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINY = {
    # random initialisation, as `auto` resolves offline, without asking the network in every run (the
    # end-to-end test and the weights tests keep `auto`)
    "teacher.weights": "none", "distill.weights": "none",
    "teacher.arch": "timm:test_resnet", "distill.arch": "timm:test_efficientnet",
    "data.resize": 20, "data.crop": 16, "data.batch_size": 16,
    "teacher.epochs": 1, "distill.epochs": 1, "prune.epochs": 1,
    "quantize.calibration_samples": 8, "export.parity_samples": 8,
    "bench.warmup": 1, "bench.runs": 3, "device": "cpu",
    # one ONNX Runtime thread: the suite runs a worker per core (pytest-xdist), and a 16-px model gains
    # nothing from a second thread that the other worker needs
    "bench.threads": 1,
    # one epoch on 36 images often ends predicting one class; these tests check structure, so such a
    # deployable is still packaged (test_degenerate.py checks the refusal)
    "deploy.allow_degenerate": "true",
    # a fixed ratio keeps the tiny runs' files fixed; the default accuracy rounds have their own tests
    "prune.target": "params",
    # the CE twin's files, rows and comparisons are checked throughout; the default trains none
    "distill.baseline": "true",
}


def tiny_overrides(**extra) -> list[str]:
    """`--set` arguments for the tiny config, with `extra` (key with '__' for '.') on top."""
    items = dict(TINY, **{k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in items.items()]


def cli_args(data: Path | str, out: Path, **extra) -> list[str]:
    args = ["run", "--data", str(data), "--out", str(out), "--quiet"]
    for item in tiny_overrides(**extra):
        args += ["--set", item]
    return args


def write_digits(root: Path, classes=(0, 1, 2), per_class=18, split=True, size=24) -> Path:
    """An ImageFolder of real handwritten digits as PNGs (`train/` + `val/`, or class folders only)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    for c in classes:
        idx = np.flatnonzero(d.target == c)[:per_class]
        for j, i in enumerate(idx):
            sub = ("train" if j < per_class * 2 // 3 else "val") if split else ""
            folder = root / sub / f"digit{c}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (d.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).resize((size, size), Image.NEAREST).save(folder / f"{i}.png")
    return root
