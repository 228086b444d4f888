"""The `compress` command line. Bad input ends with one line on stderr and exit status 2."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.config import load_config, set_key, valid_keys
from pipeline.errors import CompressError


class Group(click.Group):
    """Turns CompressError into `error: <message>` and exit 2 for every subcommand, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CompressError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; rerun the same command to resume from the last finished epoch", err=True)
            sys.exit(130)


@click.group(cls=Group)
def main() -> None:
    """compress: distil a big image classifier into small, deployable ONNX students."""


@main.command()
@click.option("--data", "data_path", default=None,
              help="ImageFolder directory (train/ and val/, or class folders to split), or `digits` (default).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run directory; default runs/<dataset name>. Rerunning with the same one skips finished stages.")
@click.option("--config", "config_file", default=None, help="TOML file overriding the defaults.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config key (repeatable), e.g. --set distill.alpha=0.7")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Training device.")
@click.option("--seed", type=int, default=None, help="Seed for init, splits, data order and augmentation.")
@click.option("--skip-bad-images", is_flag=True, help="Skip unreadable images with a warning instead of failing.")
@click.option("--quiet", is_flag=True, help="No progress bars or per-stage messages.")
def run(data_path, out, config_file, overrides, device, seed, skip_bad_images, quiet) -> None:
    """Teacher -> distilled student (+ CE baseline) -> pruned -> ONNX -> int8 -> benchmark report."""
    from pipeline.runner import run_pipeline
    from benchmarks.report import markdown_table

    cfg = load_config(config_file, overrides)
    for key, value in (("data.path", data_path), ("device", device), ("seed", seed)):
        if value is not None:
            set_key(cfg, key, value)
    if skip_bad_images:
        cfg.data.skip_bad_images = True
    out = out or str(Path("runs") / (Path(cfg.data.path).name or "run"))
    manifest = run_pipeline(cfg, out, quiet=quiet)
    report = Path(out) / "report.json"
    if report.is_file():
        click.echo(markdown_table(json.loads(report.read_text())))
    ran = ", ".join(manifest["executed"]) or "nothing (all stages up to date)"
    click.echo(f"ran: {ran}; run directory: {out} ({manifest['seconds_total_this_invocation']:.0f} s)")


@main.command("config")
def show_config() -> None:
    """List every config key with its default and why that default."""
    from pipeline.config import Config, key_reasons
    cfg, reasons = Config(), key_reasons()
    for key in valid_keys():
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        click.echo(f"{key} = {json.dumps(obj)}  # {reasons.get(key, '')}")


if __name__ == "__main__":
    main()
