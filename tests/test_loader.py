"""Data at scale: the image stores (memory, disk, decode-on-read) hold the same pixels, the disk
cache is written once and never half-written, and the DataLoader's batches depend only on
(seed, epoch): not on worker processes or ranks."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from helpers import cli_args

from compress.core import image_store
from compress.core.config import Config
from compress.core.data import eval_batches, load_dataset
from compress.core.errors import CompressError
from compress.core.image_store import DecodedOnRead, DiskImages
from compress.core.loader import TrainLoader
from compress.pipeline.cli import main


def data_config(folder, tmp_path, **changes):
    return replace(Config().data, path=str(folder), resize=20, crop=16, batch_size=8, cache_dir=str(tmp_path / "cache"),
                   **changes)


@pytest.mark.parametrize("mode, kind", [("disk", DiskImages), ("none", DecodedOnRead)])
def test_every_store_holds_the_same_pixels(digits_folder, tmp_path, mode, kind):
    memory = load_dataset(data_config(digits_folder, tmp_path, cache="memory"), 0)
    other = load_dataset(data_config(digits_folder, tmp_path, cache=mode), 0)
    assert isinstance(other.train.images, kind) and other.fingerprint == memory.fingerprint
    for split in ("train", "val"):
        a, b = memory.split(split), other.split(split)
        assert a.sources == b.sources and torch.equal(a.labels, b.labels)
        assert all(torch.equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    cfg = data_config(digits_folder, tmp_path)
    for (xa, ya), (xb, yb) in zip(eval_batches(memory, cfg), eval_batches(other, cfg), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_disk_cache_is_written_once_and_reused(digits_folder, tmp_path):
    cfg = data_config(digits_folder, tmp_path, cache="disk")
    load_dataset(cfg, 0)
    files = sorted((tmp_path / "cache").rglob("*"))
    stamps = {f: f.stat().st_mtime_ns for f in files if f.is_file()}
    assert any(f.suffix == ".u8" for f in stamps) and not any(f.name.startswith(".") for f in stamps)
    load_dataset(cfg, 0)
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps


def test_a_bad_image_leaves_no_partial_disk_cache(digits_folder, tmp_path):
    (digits_folder / "train" / "digit0" / "broken.png").write_bytes(b"not a png")
    try:
        with pytest.raises(CompressError, match="broken.png"):
            load_dataset(data_config(digits_folder, tmp_path, cache="disk"), 0)
        assert not [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]
        skipped = load_dataset(data_config(digits_folder, tmp_path, cache="disk", skip_bad_images=True), 0)
        assert len(skipped.bad_images) == 1 and all("broken" not in s for s in skipped.train.sources)
    finally:
        (digits_folder / "train" / "digit0" / "broken.png").unlink()


def test_auto_goes_to_disk_when_the_set_would_crowd_memory(digits_folder, tmp_path, monkeypatch):
    assert isinstance(load_dataset(data_config(digits_folder, tmp_path), 0).train.images, list)
    monkeypatch.setattr(image_store, "available_ram", lambda: 1000)
    assert isinstance(load_dataset(data_config(digits_folder, tmp_path), 0).train.images, DiskImages)


def batches(loader: TrainLoader, epochs=(0, 1)):
    return [(b.x.clone(), b.y.clone(), b.index.clone()) for e in epochs for b in loader.epoch(e)]


def test_worker_processes_change_nothing_in_the_batches(digits_folder, tmp_path):
    data = load_dataset(data_config(digits_folder, tmp_path, cache="disk"), 0)
    cfg = data_config(digits_folder, tmp_path, augment="crop_flip")
    recipe = dict(augment="strong", mixup=0.2, cutmix=1.0, num_classes=len(data.classes))
    in_process = batches(TrainLoader(data.train, cfg, 3, workers=0, **recipe))
    with TrainLoader(data.train, cfg, 3, workers=2, **recipe) as loader:  # closing stops the workers
        two_workers = batches(loader)
    assert len(in_process) == len(two_workers) > 2
    for (xa, ya, ia), (xb, yb, ib) in zip(in_process, two_workers, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    assert in_process[0][1].shape[1] == len(data.classes)  # soft targets from MixUp/CutMix


def test_workers_start_fresh_once_a_fork_unsafe_runtime_is_loaded(digits_folder, tmp_path, monkeypatch):
    """After OpenVINO is in the process a forked worker crashed it, so workers then come from a
    forkserver: every store and transform must travel to them, and the batches stay the same."""
    import sys
    import types

    from compress.core import loader
    for name in loader.FORK_UNSAFE:  # as if never loaded: forking is safe
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert loader.worker_start_method() is None
    for name in loader.FORK_UNSAFE:  # any one of them loaded
        with monkeypatch.context() as loaded:
            loaded.setitem(sys.modules, name, types.ModuleType(name))
            assert loader.worker_start_method() == "forkserver", name
    monkeypatch.setitem(sys.modules, "openvino", types.ModuleType("openvino"))
    cfg = data_config(digits_folder, tmp_path, augment="none")
    for mode in ("memory", "none"):  # in-memory tensors; decode-on-read with its decoding function
        data = load_dataset(data_config(digits_folder, tmp_path, cache=mode), 0)
        in_process = batches(TrainLoader(data.train, cfg, 3, augment="none", workers=0))
        with TrainLoader(data.train, cfg, 3, augment="none", workers=1) as fresh:
            started = batches(fresh)
        assert len(in_process) == len(started) > 2
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(in_process, started, strict=True))


def test_a_resumed_epoch_sees_the_batches_it_would_have_seen(digits_folder, tmp_path):
    data = load_dataset(data_config(digits_folder, tmp_path), 0)
    cfg = data_config(digits_folder, tmp_path)
    straight = batches(TrainLoader(data.train, cfg, 5, augment="strong"), (0, 1, 2))
    resumed = batches(TrainLoader(data.train, cfg, 5, augment="strong"), (2,))  # a fresh process starts at epoch 2
    tail = straight[-len(resumed):]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) for a, b in zip(tail, resumed, strict=True))


def test_ranks_take_disjoint_shards_of_one_seeded_order(digits_folder, tmp_path):
    data = load_dataset(data_config(digits_folder, tmp_path), 0)
    cfg = data_config(digits_folder, tmp_path)
    whole = [b.index.tolist() for b in TrainLoader(data.train, cfg, 1, augment="none").epoch(0)]
    shards = [[b.index.tolist() for b in TrainLoader(data.train, cfg, 1, augment="none", rank=r, world=2).epoch(0)]
              for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(whole) // 2
    assert shards[0] == whole[0:len(whole) // 2 * 2:2] and shards[1] == whole[1:len(whole) // 2 * 2:2]


def test_where_images_are_kept_reruns_no_stage(digits_folder, tmp_path):
    out = tmp_path / "run"
    fast = dict(distill__baseline="false", prune__enabled="false", quantize__enabled="false")
    assert CliRunner().invoke(main, cli_args(digits_folder, out, **fast)).exit_code == 0
    result = CliRunner().invoke(main, cli_args(digits_folder, out, data__cache="disk", data__workers="2",
                                               data__cache_dir=str(tmp_path / "c"), **fast))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["executed"] == []
