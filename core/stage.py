"""What a stage is: a name, the config keys it reads, its checks, the artifacts it reads and
writes, and run().

The runner derives a stage's cache key from exactly these declarations, and hands the stage a
view of the config that holds only the keys it declared (`reads`): reading any other key raises
at once, so a cache key cannot miss a setting the stage uses.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from compress.core.config import Config, get_key
from compress.core.data import Dataset
from compress.core.rundir import RunDir

log = logging.getLogger("compress")

UNKEYED = ("data.path",)  # the data fingerprint covers the content: `../data` and `/abs/data` share a cache


class UndeclaredRead(AttributeError):
    """A stage read a config key it did not declare in `reads`: a bug in the stage, not bad input."""


def expand(cfg: Config, reads: tuple[str, ...]) -> list[str]:
    """`reads` entries ("seed", "data", "distill.arch") as full keys, minus the unkeyed ones."""
    keys = []
    for entry in reads:
        value = getattr(cfg, entry.split(".")[0])
        if "." not in entry and dataclasses.is_dataclass(value):
            keys += [f"{entry}.{f.name}" for f in dataclasses.fields(value)]
        else:
            keys.append(entry)
    return [k for k in dict.fromkeys(keys) if k not in UNKEYED]


class _SectionView:
    def __init__(self, owner: str, name: str, section: Any, keys: set[str]):
        self._owner, self._name, self._section, self._keys = owner, name, section, keys

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        if key not in self._keys:
            raise UndeclaredRead(f"stage {self._owner!r} reads {self._name}.{key} but does not declare it in "
                                 "reads(); declare it so the stage's cache key covers it")
        return getattr(self._section, key)

    def as_dict(self) -> dict[str, Any]:
        return {k: dataclasses.asdict(self._section)[k] for k in sorted(self._keys)}


class ConfigView:
    """The keys of a Config one stage declared, read-only."""

    def __init__(self, cfg: Config, keys: list[str], owner: str):
        self._cfg, self._owner, self._keys = cfg, owner, set(keys)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self._cfg, name)
        if dataclasses.is_dataclass(value):
            inside = {k.split(".", 1)[1] for k in self._keys if k.startswith(name + ".")}
            return _SectionView(self._owner, name, value, inside)
        if name not in self._keys:
            raise UndeclaredRead(f"stage {self._owner!r} reads {name} but does not declare it in reads()")
        return value

    def section(self, name: str) -> dict[str, Any]:
        return getattr(self, name).as_dict()

    def to_dict(self) -> dict[str, Any]:
        """The declared keys as a nested dict (what the stage's outputs depend on)."""
        tree: dict[str, Any] = {}
        for key in sorted(self._keys):
            *section, name = key.split(".")
            target = tree.setdefault(section[0], {}) if section else tree
            target[name] = get_key(self._cfg, key)
        return tree


@dataclass
class Context:
    """What a running stage may use. Stages exchange data only through files in `run`."""

    cfg: Config  # a ConfigView at run time: the declared keys of a Config, read-only
    run: RunDir
    data: Dataset
    device: torch.device
    quiet: bool = False
    warnings: list[str] = field(default_factory=list)
    shared_cache: Path | None = None  # a sweep shares one cache across its cells
    distributed: bool = False  # this stage trains on every torch.distributed rank (DDP)
    earlier_warnings: list[str] = field(default_factory=list)  # what the stages before this one warned

    @property
    def cache_dir(self) -> Path:
        """Where reusable intermediate results (teacher logits) live: the run's cache/ by default."""
        return self.shared_cache or self.run.root / "cache"

    def warn(self, message: str) -> None:
        """A loud, recorded warning: logged now, kept in the manifest and the report."""
        self.warnings.append(message)
        log.warning(message)

    def log(self, message: str) -> None:
        log.info(message)


class Stage:
    """One unit of the pipeline. Subclasses set `name` (= the module's name) and implement
    `outputs` and `run`; `reads` declares every config key the stage uses."""

    name: str = ""
    distributed: bool = False  # under torchrun every rank runs it (DDP training); else rank 0 alone

    def reads(self, cfg: Config) -> tuple[str, ...]:
        """Config sections ("data") and keys ("distill.arch") this stage's outputs depend on."""
        return ()

    def enabled(self, cfg: Config) -> bool:
        return True

    def check(self, cfg: Config, data: Dataset | None) -> None:
        """Reject bad settings or inputs with a CompressError, before any stage does work."""

    def keys(self, cfg: Config) -> list[str]:
        return expand(cfg, ("seed", *self.reads(cfg)))

    def view(self, cfg: Config) -> Config:
        """`cfg` restricted to the declared keys (typed as the Config it stands for)."""
        return cast(Config, ConfigView(cfg, self.keys(cfg), self.name))

    def inputs(self, cfg: Config) -> list[str]:
        """Artifacts in the run directory this stage reads."""
        return []

    def external_inputs(self, cfg: Config) -> list[str]:
        """Files outside the run directory this stage reads (a given checkpoint)."""
        return []

    def outputs(self, cfg: Config) -> list[str]:
        raise NotImplementedError

    def run(self, ctx: Context, key: str) -> dict[str, Any]:
        """Do the work, write `outputs` atomically, return a JSON-able summary for the manifest."""
        raise NotImplementedError
