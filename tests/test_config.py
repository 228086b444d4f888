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
