"""Datasets as users have them: unzipped on a Mac, a class with one image, phone photos with an
EXIF orientation, val images copied from train, a labels file instead of folders, lopsided classes."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import cli_args, write_digits
from PIL import Image

from compress.core.budget import selection_accuracy
from compress.core.config import Config
from compress.core.data import load_dataset
from compress.core.errors import CompressError
from compress.core.preprocess import decode, rgb_array
from compress.pipeline.cli import main


def data_cfg(path, **extra):
    return Config().replace({"data.path": str(path), "data.resize": 20, "data.crop": 16, **extra}).data


def test_a_tree_unzipped_on_macos_is_read_without_its_debris(tmp_path):
    root = write_digits(tmp_path / "mac", per_class=12)
    for folder in list((root / "train").iterdir()) + list((root / "val").iterdir()):
        for image in list(folder.glob("*.png")):
            (folder / f"._{image.name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
        (folder / ".DS_Store").write_bytes(b"Bud1")
    for split in ("train", "val"):
        junk = root / "__MACOSX" / split / "digit0"
        junk.mkdir(parents=True)
        (junk / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    data = load_dataset(data_cfg(root), 0)
    assert data.classes == ["digit0", "digit1", "digit2"] and len(data.train) == 24 and len(data.val) == 12
    assert not any("._" in s or "__MACOSX" in s for s in data.train.sources + data.val.sources)


def test_evaluate_and_predict_skip_the_macos_debris_too(tmp_path):
    import torchvision

    from compress.exports.client import evaluate
    from compress.exports.metadata import client_metadata
    from compress.exports.onnx import export_onnx
    root = write_digits(tmp_path / "mac", per_class=6)
    for image in (root / "val" / "digit1").glob("*.png"):
        (image.parent / f"._{image.name}").write_bytes(b"\x00\x05\x16\x07")
    (root / "__MACOSX" / "val" / "digit1").mkdir(parents=True)
    model = tmp_path / "m.onnx"
    export_onnx(torchvision.models.resnet18(num_classes=3).eval(), model, 16, 17,
                client_metadata(["digit0", "digit1", "digit2"], [0.5] * 3, [0.25] * 3, 20, 16))
    assert evaluate(model, root)["images"] == 6  # the val images, not their AppleDouble twins
    real = sorted((root / "val" / "digit1").glob("[!.]*.png"))[0]
    result = CliRunner().invoke(main, ["predict", str(model), str(real), str(real.parent / f"._{real.name}")])
    assert result.exit_code == 0 and "skipped 1 hidden" in result.output and f"{real}:" in result.output


def test_a_class_with_one_image_in_a_tree_without_splits_is_refused_before_any_work(tmp_path):
    root = write_digits(tmp_path / "flat", per_class=6, split=False)
    for extra in sorted((root / "digit2").glob("*.png"))[1:]:
        extra.unlink()
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(root, out))
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "class 'digit2' has 1 image" in lines[0] and "at least 2" in lines[0]
    assert not out.exists()


def test_phone_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    """A 40x20 landscape sensor image tagged 'rotate 90' (EXIF orientation 6) is a 20x40 portrait."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white: after rotating 90° clockwise, the top half is white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    assert rgb_array(path).shape == (40, 20, 3)  # what predict / evaluate / the card's recipe start from
    chw = decode(path, 20)  # training, evaluation, calibration
    assert chw.shape == (3, 40, 20) and chw[:, :20].mean() > 200 and chw[:, 20:].mean() < 50
    assert decode(path, 20, draft=True).shape == (3, 40, 20)


def labels_csv(tmp_path, rows) -> object:
    path = tmp_path / "labels.csv"
    path.write_text("path,label,split\n" + "".join(f"{p},{label},{s}\n" for p, label, s in rows))
    return path


def lopsided_listing(tmp_path):
    """digit0 has 4x digit1's training images; two val rows are byte copies of training images."""
    root = write_digits(tmp_path / "imgs", classes=(0, 1), per_class=45, split=False)
    zeros = sorted((root / "digit0").glob("*.png"))
    ones = sorted((root / "digit1").glob("*.png"))
    shutil.copyfile(zeros[0], root / "digit0" / "copy_of_train.png")
    shutil.copyfile(ones[0], root / "digit1" / "copy_of_train.png")
    rows = [(f"imgs/digit0/{p.name}", "zero", "train") for p in zeros[:36]]
    rows += [(f"imgs/digit1/{p.name}", "one", "train") for p in ones[:9]]
    rows += [(f"imgs/digit0/{p.name}", "zero", "val") for p in zeros[36:42]]
    rows += [(f"imgs/digit1/{p.name}", "one", "val") for p in ones[9:13]]
    rows += [("imgs/digit0/copy_of_train.png", "zero", "val"), ("imgs/digit1/copy_of_train.png", "one", "val")]
    return labels_csv(tmp_path, rows)


def test_a_labels_file_lopsided_and_leaky_end_to_end(tmp_path):
    listing = lopsided_listing(tmp_path)
    data = load_dataset(data_cfg(listing), 0)
    assert data.classes == ["one", "zero"] and data.copies == {"val": 2}
    assert data.class_counts()["train"] == {"one": 9, "zero": 36}
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(listing, out, prune__enabled="false", distill__baseline="false",
                                               bench__metric="balanced"))
    assert result.exit_code == 0, result.output
    sentence = "2 of 12 val images are copies of train images; their figures are optimistic"
    assert sentence in result.output  # the terminal
    report_md = (out / "report.md").read_text()
    assert sentence in report_md and "balanced accuracy" in report_md
    assert "| one | 9 | 5 |" in report_md and "| zero | 36 | 7 |" in report_md  # images per class per split
    assert sentence in (out / "deploy/model_card.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["copies"] == {"val": 2} and "balanced_accuracy" in report["models"]["student"]


@pytest.mark.parametrize("content,needle", [
    ("path,label,split\nimgs/nope.png,zero,train\n", "line 2: imgs/nope.png does not exist"),
    ("path,label,colour\nimgs/a.png,zero,red\n", "unknown: colour"),
    ("path,label,split\nimgs/a.png,,train\n", "line 2: needs both a path and a label"),
    ("path,label,split\nimgs/a.png,zero,holdout\n", "line 2: split 'holdout' is not one of train, val, test"),
    ("path,label,split\nimgs/a.png,zero,train\nimgs/b.png,one,train\nimgs/a.png,zero,val\n",
     "class 'one' has no val rows"),
])
def test_bad_rows_of_a_labels_file_are_one_line_naming_the_row(tmp_path, content, needle):
    (tmp_path / "imgs").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imgs" / name)
    (tmp_path / "labels.csv").write_text(content)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, cli_args(tmp_path / "labels.csv", out))
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and needle in lines[0], result.output
    assert not out.exists()


def test_a_jsonl_labels_file_without_splits_is_split_per_class(tmp_path):
    root = write_digits(tmp_path / "imgs", classes=(0, 1), per_class=10, split=False)
    lines = [json.dumps({"path": f"imgs/{p.parent.name}/{p.name}", "label": p.parent.name})
             for p in sorted(root.rglob("*.png"))]
    (tmp_path / "labels.jsonl").write_text("\n".join(lines) + "\n")
    data = load_dataset(data_cfg(tmp_path / "labels.jsonl"), 0)
    assert data.classes == ["digit0", "digit1"] and len(data.train) + len(data.val) == 20
    with pytest.raises(CompressError, match="line 2 is not JSON"):
        (tmp_path / "bad.jsonl").write_text(lines[0] + "\n{oops\n")
        load_dataset(data_cfg(tmp_path / "bad.jsonl"), 0)


def test_balanced_accuracy_sees_the_class_top1_hides():
    labels = np.array([0] * 9 + [1])
    never_one = np.zeros(10, int)  # always predicts the big class
    assert selection_accuracy(never_one, labels) == 0.9
    assert selection_accuracy(never_one, labels, "balanced") == 0.5
