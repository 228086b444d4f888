"""What a stage is: a name, the config it depends on, the artifacts it reads and writes, run().

The runner derives a stage's cache key from exactly these declarations, so a stage cannot
forget to invalidate itself when its config or its inputs change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.config import Config
from pipeline.data import Dataset
from pipeline.rundir import RunDir


@dataclass
class Context:
    """What a running stage may use. Stages exchange data only through files in `run`."""

    cfg: Config
    run: RunDir
    data: Dataset
    device: torch.device
    quiet: bool = False
    warnings: list[str] = field(default_factory=list)
    shared_cache: Path | None = None  # a sweep shares one cache across its cells

    @property
    def cache_dir(self) -> Path:
        """Where reusable intermediate results (teacher logits) live: the run's cache/ by default."""
        return self.shared_cache or self.run.root / "cache"

    def warn(self, message: str) -> None:
        """A loud, recorded warning: printed now, kept in the manifest and the report."""
        import click
        self.warnings.append(message)
        click.secho(f"WARNING: {message}", fg="yellow", err=True)

    def log(self, message: str) -> None:
        if not self.quiet:
            import click
            click.echo(message, err=True)


def section_without_path(cfg: Config, name: str) -> dict[str, Any]:
    values = cfg.section(name)
    if name == "data":
        values.pop("path")
    return values


class Stage:
    """One unit of the pipeline. Subclasses set `name` and implement `outputs` and `run`."""

    name: str = ""
    version: int = 1  # bump when the stage's code changes what it writes: invalidates caches
    sections: tuple[str, ...] = ()  # config sections that change this stage's outputs

    def enabled(self, cfg: Config) -> bool:
        return True

    def key_config(self, cfg: Config) -> dict[str, Any]:
        """The config this stage's outputs depend on (the seed always counts). data.path is left
        out: the data fingerprint covers the content, so `../data` and `/abs/data` share a cache."""
        return {"seed": cfg.seed, **{s: section_without_path(cfg, s) for s in self.sections}}

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
