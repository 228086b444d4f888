"""Config: defaults, TOML, --set precedence and type checks."""
from __future__ import annotations

import pytest

from compress.core.config import Config, valid_keys
from compress.core.errors import CompressError


def test_toml_then_set_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('seed = 3\n[distill]\nalpha = 0.2\nloss = "mse"\n[data]\nmean = [0.5, 0.5, 0.5]\n')
    cfg = Config.from_toml(str(f), ("distill.alpha=0.7", "prune.enabled=false", "data.crop=24"))
    assert (cfg.seed, cfg.distill.alpha, cfg.distill.loss) == (3, 0.7, "mse")
    assert cfg.prune.enabled is False and cfg.data.crop == 24 and cfg.data.mean == [0.5, 0.5, 0.5]
    assert cfg.teacher.arch == Config().teacher.arch


def test_int_accepted_for_float_and_rejected_the_other_way(tmp_path):
    assert Config.from_toml(None, ("distill.temperature=2",)).distill.temperature == 2.0
    with pytest.raises(CompressError, match="data.crop"):
        Config.from_toml(None, ("data.crop=2.5",))


def test_unknown_section_and_key_list_valid_keys(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[distil]\nalpha = 0.5\n")
    with pytest.raises(CompressError, match="distill.alpha"):
        Config.from_toml(str(f))
    assert "quantize.min_agreement" in valid_keys()


def test_range_checks():
    with pytest.raises(CompressError, match="alpha"):
        Config.from_toml(None, ("distill.alpha=1.5",))
    with pytest.raises(CompressError, match="resize"):
        Config.from_toml(None, ("data.resize=8", "data.crop=16"))


def test_every_key_documents_its_default():
    from compress.core.config import key_reasons
    reasons = key_reasons()
    assert [k for k in valid_keys() if not reasons.get(k)] == []


@pytest.mark.parametrize("overrides, needle", [
    (("distill.freeze_encoder=true", "distill.weights=none"), "needs pretrained distill.weights"),
    (("teacher.checkpoint=a.pt", "teacher.onnx=t.onnx"), "set one"),
    (('teacher.classes=["a","b"]',), "needs teacher.onnx"),
    (("data.std=[0.2, 0, 0.2]",), "data.std must be > 0"),
    (("bench.batch_sizes=[]",), "bench.batch_sizes"),
    (('quantize.candidates=["int4"]',), "qdq_u8s8"),
    (("teacher.lr=inf",), "teacher.lr: input should be a finite number"),
])
def test_rules_stated_beside_the_fields_are_checked(overrides, needle):
    with pytest.raises(CompressError, match=needle) as caught:
        Config.from_toml(None, overrides)
    assert "\n" not in str(caught.value)


def test_a_toml_file_is_checked_once_its_overrides_are_applied(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[data]\ncrop = 48\n")  # > the default resize on its own; fine with the override below
    assert Config.from_toml(str(f), ("data.resize=56",)).data.crop == 48
