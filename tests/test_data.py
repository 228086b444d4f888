"""Decoding: every colour mode becomes RGB, images are decoded once, batches are seeded."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from compress.core import data as data_mod
from compress.core.config import DataConfig
from compress.core.data import center_crop, decode_file, load_dataset, normalize
from compress.core.loader import train_batches


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    img = img.convert("L").convert(mode) if mode in ("I;16", "1") else img.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    img.save(path)
    out = decode_file(path, 20)
    assert out.dtype == torch.uint8 and out.shape == (3, 20, 26)


def test_jpeg_decoded_at_reduced_size_keeps_aspect(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (800, 600), (200, 10, 10)).save(path)
    out = decode_file(path, 36)
    assert out.shape == (3, 36, 48)
    assert abs(int(out[0].float().mean()) - 200) < 6


def test_images_are_decoded_once_per_run(digits_folder, monkeypatch, tmp_path):
    calls = []
    real = data_mod.decode_file
    monkeypatch.setattr(data_mod, "decode_file", lambda p, *a: calls.append(p) or real(p, *a))
    cfg = DataConfig(path=str(digits_folder), resize=20, crop=16, batch_size=8)
    ds = load_dataset(cfg, seed=0)
    assert len(calls) == len(ds.train) + len(ds.val) == 54
    for epoch in range(3):
        for _ in train_batches(ds.train, cfg, seed=0, epoch=epoch):
            pass
    assert len(calls) == 54


def test_batches_depend_only_on_seed_and_epoch(digits_folder):
    cfg = DataConfig(path=str(digits_folder), resize=20, crop=16, batch_size=8, augment="crop_flip")
    ds = load_dataset(cfg, seed=0)
    recipe = dict(augment="strong", mixup=0.4, cutmix=1.0, num_classes=3)
    a = list(train_batches(ds.train, cfg, seed=1, epoch=2, **recipe))
    b = list(train_batches(ds.train, cfg, seed=1, epoch=2, **recipe))
    c = list(train_batches(ds.train, cfg, seed=1, epoch=3, **recipe))
    assert all(torch.equal(x.x, y.x) and torch.equal(x.y, y.y) for x, y in zip(a, b))
    assert not all(torch.equal(x.x, y.x) for x, y in zip(a, c))
    assert a[0].x.shape == (8, 3, 16, 16)
    assert a[0].y.shape == (8, 3) and torch.allclose(a[0].y.sum(1), torch.ones(8))  # soft targets
    assert sorted(torch.cat([t.index for t in a]).tolist()) == list(range(len(ds.train)))


def test_augment_presets(digits_folder):
    cfg = DataConfig(path=str(digits_folder), resize=20, crop=16, batch_size=64, augment="crop_flip")
    ds = load_dataset(cfg, seed=0)
    bare = next(train_batches(ds.train, cfg, seed=0, epoch=0, augment="none"))
    centre = normalize(torch.stack([center_crop(ds.train.images[i], 16) for i in bare.index.tolist()]),
                       cfg.mean, cfg.std)
    assert torch.equal(bare.x, centre) and bare.y.dtype == torch.int64
    light = next(train_batches(ds.train, cfg, seed=0, epoch=0, augment="light"))
    strong = next(train_batches(ds.train, cfg, seed=0, epoch=0, augment="strong"))
    assert not torch.equal(light.x, centre) and not torch.equal(strong.x, light.x)
    off = DataConfig(path=str(digits_folder), resize=20, crop=16, batch_size=64, augment="none")
    assert torch.equal(next(train_batches(ds.train, off, seed=0, epoch=0, augment="strong")).x, centre)


def test_embedded_digits():
    ds = load_dataset(DataConfig(), seed=0)
    assert ds.classes == [str(i) for i in range(10)]
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797 and abs(len(ds.val) - 360) <= 5
    assert ds.train.images[0].shape == (3, 36, 36)


def test_three_splits_selection_on_val_figures_on_test(tmp_path):
    """digits: val as before, test carved from the training images; a tree's own test/ is used as
    given; too few images per class keep two splits; test_fraction = 0 turns it off."""
    from helpers import write_digits
    digits = load_dataset(DataConfig(resize=16, crop=16), seed=0)
    assert digits.report_split == "test" and len(digits.val) == 359
    assert len(digits.train) + len(digits.test) == 1797 - 359
    assert not set(digits.test.sources) & (set(digits.train.sources) | set(digits.val.sources))
    assert torch.bincount(digits.test.labels).min() >= 25  # every class tested
    off = load_dataset(DataConfig(resize=16, crop=16, test_fraction=0.0), seed=0)
    assert off.test is None and off.report_split == "val" and off.val.sources == digits.val.sources
    small = load_dataset(DataConfig(path=str(write_digits(tmp_path / "small", per_class=18)), resize=16, crop=16), seed=0)
    assert small.test is None  # 12 training images per class: too few to carve a test split
    given = write_digits(tmp_path / "given", per_class=18)
    for f in (given / "val").rglob("*.png"):  # a test/ folder in the tree is used as given
        target = given / "test" / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.read_bytes())
    tree = load_dataset(DataConfig(path=str(given), resize=16, crop=16), seed=0)
    assert tree.report_split == "test" and len(tree.test) == len(tree.val)


def test_evaluation_images_are_decoded_as_the_card_says_without_draft(tmp_path):
    """Val/test images follow the documented recipe exactly (full JPEG decode, then resize), the
    same as the torch-free client; training images may use libjpeg's faster draft decode."""
    from compress.core.preprocess import preprocess
    path = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(path, quality=90)
    exact = decode_file(path, 36)
    assert torch.equal(exact, decode_file(path, 36, draft=False))
    x = normalize(data_mod.center_crop(exact, 32)[None], [0.5] * 3, [0.25] * 3).numpy()
    assert np.array_equal(x, preprocess(path, 36, 32, [0.5] * 3, [0.25] * 3))
