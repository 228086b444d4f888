"""Every kind of bad input: one `error:` line naming the culprit, exit 2, no traceback, and
nothing written to the run directory."""
from __future__ import annotations

import shutil

import pytest
import torch
import torchvision
from click.testing import CliRunner
from helpers import cli_args, write_digits

from compress.pipeline.cli import main


def assert_clean_failure(args, out, *needles):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists(), "a failed run must not leave a run directory behind"
    return lines[0]


@pytest.fixture
def folder(tmp_path, digits_folder):
    return shutil.copytree(digits_folder, tmp_path / "data")


def test_missing_path(tmp_path):
    assert_clean_failure(cli_args(tmp_path / "nope", tmp_path / "out"), tmp_path / "out", "nope", "does not exist")


def test_no_class_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_failure(cli_args(tmp_path / "empty", tmp_path / "out"), tmp_path / "out", "no class folders")


def test_class_folder_without_images(folder, tmp_path):
    (folder / "train/digit3").mkdir()
    (folder / "val/digit3").mkdir()
    (folder / "val/digit3/notes.txt").write_text("not an image")
    assert_clean_failure(cli_args(folder, tmp_path / "out"), tmp_path / "out", "digit3", "has no images")


def test_train_and_val_classes_differ(folder, tmp_path):
    shutil.rmtree(folder / "val/digit2")
    assert_clean_failure(cli_args(folder, tmp_path / "out"), tmp_path / "out", "differ", "digit2")


@pytest.mark.slow
def test_corrupt_image_is_named_and_can_be_skipped(folder, tmp_path):
    bad = folder / "train/digit1/broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    assert_clean_failure(cli_args(folder, tmp_path / "out"), tmp_path / "out", "broken.png", "--skip-bad-images")
    out = tmp_path / "out2"
    args = cli_args(folder, out, prune__enabled="false", quantize__enabled="false", distill__baseline="false")
    result = CliRunner().invoke(main, args + ["--skip-bad-images"])
    assert result.exit_code == 0, result.output
    import json
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["bad_images_skipped"] == 1
    assert manifest["dataset"]["bad_images"][0].endswith("broken.png")


@pytest.mark.parametrize("key,value,needle", [
    ("teacher.arch", "resnet5O", "resnet50"),           # lists the valid names
    ("distill.loss", "kld", "kl, mse"),
    ("distill.alhpa", "0.5", "distill.alpha"),          # unknown key lists valid keys
    ("distill.alpha", "high", "not a valid float"),
    ("prune.enabled", "maybe", "not a valid bool"),
    ("data.augment", "heavy", "none, crop, crop_flip"),
])
def test_bad_config_names_the_key_and_valid_values(digits_folder, tmp_path, key, value, needle):
    args = cli_args(digits_folder, tmp_path / "out") + ["--set", f"{key}={value}"]
    assert_clean_failure(args, tmp_path / "out", needle)


def test_bad_toml_file(digits_folder, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[distill]\nalpha = 'x'\n")
    args = cli_args(digits_folder, tmp_path / "out") + ["--config", str(cfg)]
    assert_clean_failure(args, tmp_path / "out", "distill.alpha")


def test_teacher_checkpoint_with_other_classes(digits_folder, tmp_path):
    from compress.core.models import save_checkpoint
    ckpt = tmp_path / "teacher.pt"
    save_checkpoint(torchvision.models.resnet18(num_classes=2), ckpt, {"arch": "resnet18", "classes": ["ant", "bee"]})
    args = cli_args(digits_folder, tmp_path / "out", teacher__checkpoint=str(ckpt))
    assert_clean_failure(args, tmp_path / "out", "teacher.pt", "'ant', 'bee'", "digit0")


def test_teacher_checkpoint_that_is_a_pickled_module(digits_folder, tmp_path):
    ckpt = tmp_path / "module.pt"
    torch.save(torchvision.models.resnet18(num_classes=3), ckpt)  # a whole pickled module: refused
    args = cli_args(digits_folder, tmp_path / "out", teacher__checkpoint=str(ckpt))
    assert_clean_failure(args, tmp_path / "out", "does not unpickle", "state_dict")


def test_split_tree_without_val_is_split_by_class(tmp_path):
    """Not an error: class folders without train/val get a stratified, seeded split."""
    from compress.core.config import DataConfig
    from compress.core.data import load_dataset
    root = write_digits(tmp_path / "flat", per_class=10, split=False)
    data = load_dataset(DataConfig(path=str(root), val_fraction=0.3, resize=16, crop=16), seed=0)
    assert (len(data.train), len(data.val)) == (21, 9)
    assert torch.bincount(data.val.labels).tolist() == [3, 3, 3]
    again = load_dataset(DataConfig(path=str(root), val_fraction=0.3, resize=16, crop=16), seed=0)
    assert again.val.sources == data.val.sources


@pytest.mark.parametrize("extra, needles", [
    ({"distill__loss": "kl + -1*mse"}, ("cannot read", "-1*mse")),
    ({"distill__loss": "kl+hint", "distill__hint_layers": "layer9:layer3", "distill__arch": "resnet18"}, ("hint_layers", "layer9", "layer4")),
    ({"distill__loss": "rkd", "distill__teacher_folds": "3"}, ("teacher_folds", "embedding")),
    ({"distill__teacher_folds": "2", "train__mixup": "0.2"}, ("mixup",)),
    ({"prune__target": "latency"}, ("target_latency_ms",)),
])
def test_bad_recipe_is_one_line_error(digits_folder, tmp_path, extra, needles):
    assert_clean_failure(cli_args(digits_folder, tmp_path / "out", **extra), tmp_path / "out", *needles)
