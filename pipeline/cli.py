"""The `compress` command line. Bad input ends with one line on stderr and exit status 2.

Library code reports through the `compress` logger; this module decides where it goes: to
stderr, through tqdm so progress bars stay intact, at INFO (WARNING with --quiet).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import click

from compress.core.config import Config, valid_keys
from compress.core.errors import CompressError


class _ConsoleHandler(logging.Handler):
    """Log records on stderr, printed through tqdm so they do not tear a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm
        text = self.format(record)
        if record.levelno >= logging.WARNING:
            text = click.style(f"WARNING: {text}", fg="yellow")
        tqdm.write(text, file=sys.stderr)


def configure_logging(quiet: bool) -> None:
    logger = logging.getLogger("compress")
    logger.handlers[:] = [_ConsoleHandler()]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


FILESYSTEM_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class Group(click.Group):
    """Turns CompressError into `error: <message>` and exit 2 for every subcommand, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CompressError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        except OSError as exc:
            if exc.errno not in FILESYSTEM_ERRORS:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            what = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            click.secho(f"error: {what}{where}; earlier finished stages are kept, rerun to resume", fg="red", err=True)
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
@click.option("--track", type=click.Choice(["none", "mlflow"]), default=None,
              help="Log params, curves, figures and artifacts to MLflow (./mlruns unless tracking_uri is set).")
@click.option("--quiet", is_flag=True, help="No progress bars or per-stage messages.")
@click.option("--nproc", type=click.IntRange(min=1), default=1,
              help="Train on N processes (GPUs, or CPU processes with gloo) through torchrun's standalone mode.")
def run(data_path, out, config_file, overrides, device, seed, skip_bad_images, track, quiet, nproc) -> None:
    """Teacher -> distilled student (+ CE baseline) -> pruned -> ONNX -> int8 -> benchmark report."""
    from compress.core.documents import Report
    from compress.pipeline.runner import run_pipeline
    from compress.reporting.report import headline, markdown_table

    configure_logging(quiet)
    given = {"data.path": data_path, "device": device, "seed": seed, "track": track,
             "data.skip_bad_images": True if skip_bad_images else None}
    cfg = Config.from_toml(config_file, overrides).replace({k: v for k, v in given.items() if v is not None})
    from compress.pipeline import tracking
    tracking.check_available(cfg.track)
    out = out or str(Path("runs") / (Path(cfg.data.path).name or "run"))
    from compress.core import distributed
    if cfg.distill.archs and (nproc > 1 or distributed.requested()):
        raise CompressError("a search over students (distill.arch as a list) runs in one process; drop --nproc, or "
                            "search with one student per run")
    if nproc > 1 and not distributed.requested():
        from compress.core.auto_settings import resolve
        from compress.pipeline.runner import preflight
        preflight(resolve(cfg)[0])  # bad input is one line here, before torchrun starts (weights and disk cache once)
        sys.exit(launch_torchrun(nproc))
    if distributed.requested() and int(os.environ.get("RANK", "0")) > 0:
        configure_logging(True)  # one voice: rank 0 reports
        quiet = True
    if cfg.distill.archs:  # a search over students: one process, its own report
        from compress.pipeline.search import run_search
        manifest = run_search(cfg, out, quiet=quiet)
        _print_search(Path(out), manifest)
        return
    try:
        manifest = run_pipeline(cfg, out, quiet=quiet)
    finally:
        main_rank = distributed.is_main()
        distributed.stop()
    if not main_rank:
        return
    if cfg.track == "mlflow":
        run_id = tracking.log_run(Path(out), cfg.tracking_uri)
        click.echo(f"MLflow run {run_id} logged", err=True)
    report_file = Path(out) / "report.json"
    if report_file.is_file():
        report = Report.read(report_file)
        click.echo(markdown_table(report))
        for line in headline(report):
            click.echo(line.replace("**", ""))
        for warning in report.dataset.copy_warnings() if report.dataset else []:
            click.secho(f"WARNING: {warning}", fg="yellow")
        chosen = manifest["stages"].get("report", {}).get("summary", {}).get("deployable")
        if chosen in report.models:
            click.secho(f"deployable: {report.headline(chosen)} (report: {Path(out) / 'report.html'})", bold=True)
    ran = ", ".join(manifest["executed"]) or "nothing (all stages up to date)"
    click.echo(f"ran: {ran}; run directory: {out} ({manifest['seconds_total_this_invocation']:.0f} s)")


def _print_search(out: Path, manifest: dict) -> None:
    """The front, the rule and the choice; exit 1 when the budget was not met (nothing deployed)."""
    from compress.core.documents import Report
    from compress.reporting.report import pareto_blocks, to_markdown
    report = Report.read(out / "report.json")
    click.echo(to_markdown(pareto_blocks(report)[1:]).replace("**", "").rstrip())
    times = ", ".join(f"{k} {v:.0f} s" for k, v in manifest["seconds"].items())
    click.echo(f"search of {len(manifest['students'])} students: {times}; total "
               f"{manifest['seconds_total_this_invocation']:.0f} s; report: {out / 'report.html'}")
    refused = report.pareto.refused if report.pareto else None
    if refused:
        click.secho(f"error: {refused}", fg="red", err=True)
        sys.exit(1)
    click.secho(f"deployable: {report.headline(manifest['choice']['chosen'])} (deploy/ and report model `deployable`)",
                bold=True)


@main.command("losses")
def show_losses() -> None:
    """The distillation terms `distill.loss` can name and combine, e.g. "kl + 0.5*hint"."""
    from compress.methods.loss_catalog import CATALOG  # plain data: no torch import
    for name, info in sorted(CATALOG.items()):
        needs = "teacher " + ("logits+" + "+".join(info.features) if info.features else "logits") \
            if info.needs_teacher else "no teacher"
        temp = ", uses T" if info.uses_temperature else ""
        settings = "".join(f", distill.{k}" for k in info.settings)
        click.echo(f"{name:12s} {info.description}  [{needs}{temp}{settings}]")


@main.command()
@click.option("--data", "data_path", default=None, help="ImageFolder directory, or `digits` (default).")
@click.option("--config", "config_file", default=None, help="TOML file: the base settings of every cell.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a base key (repeatable).")
@click.option("--grid", "grid_items", multiple=True, metavar="SECTION.KEY=V1,V2",
              help="A swept key and its values (repeatable), e.g. --grid distill.alpha=0.1,0.5,0.9")
@click.option("--seeds", default="0,1,2", show_default=True, help="Student seeds (init and data order), comma-separated.")
@click.option("--out", default="runs/sweep", show_default=True, type=click.Path(file_okay=False),
              help="Sweep directory; rerunning with the same one skips finished cells.")
@click.option("--jobs", default=1, show_default=True, type=int, help="Cells run in this many processes at once.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Training device.")
@click.option("--track", type=click.Choice(["none", "mlflow"]), default=None,
              help="Log one MLflow run per cell and seed under one experiment.")
@click.option("--quiet", is_flag=True, help="Only the final table.")
def sweep(data_path, config_file, overrides, grid_items, seeds, out, jobs, device, track, quiet) -> None:
    """Grid x seeds of students against one teacher, each paired with the CE baseline at its seed."""
    from compress.pipeline.sweep import parse_grid, parse_seeds, run_sweep
    from compress.pipeline.sweep_report import markdown

    given = {"data.path": data_path, "device": device, "track": track}
    cfg = Config.from_toml(config_file, overrides).replace({k: v for k, v in given.items() if v is not None})
    from compress.pipeline import tracking
    tracking.check_available(cfg.track)
    grid = parse_grid(grid_items)
    configure_logging(quiet)
    summary = run_sweep(cfg, grid, parse_seeds(seeds), Path(out), jobs=jobs, quiet=quiet)
    click.echo(markdown(summary))
    click.echo(f"best cell: {summary['best_note']}; files: {Path(out) / 'sweep.md'}, sweep.json, sweep.png")


@main.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Baseline file to write.")
@click.option("--commit", default=None,
              help="The commit whose code made the REPORT.json runs: the reference CI rebuilds for the latency A/B.")
def baseline(reports, output, commit) -> None:
    """Write the figures the gate compares: the median of the REPORT.json files of one config."""
    from compress.core.rundir import atomic_path
    from compress.gate import baseline as files
    new = files.from_reports([files.read_report(r) for r in reports], list(reports), commit)
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(new.to_dict(), indent=2) + "\n")
    click.echo(f"baseline of {len(new.models)} models (median of {len(reports)} reports"
               + (f", reference commit {commit}" if commit else ", no reference commit") + f") written to {output}")


@main.command()
@click.argument("report", type=click.Path())
@click.option("--baseline", "baseline_file", required=True, type=click.Path(), help="Baseline from `compress baseline`.")
@click.option("--reference-run", type=click.Path(file_okay=False), default=None,
              help="Run directory of the reference commit, built on this runner: latency is timed A/B against its "
                   "files and accuracy compared with its report.")
@click.option("--max-accuracy-drop", default=1.0, show_default=True, help="Allowed top-1 drop, in points.")
@click.option("--max-latency-regression", default=0.10, show_default=True,
              help="Allowed relative p50 growth over the reference run (fails only when past it at 95% confidence).")
@click.option("--max-size-growth", default=0.05, show_default=True, help="Allowed relative growth of ONNX bytes.")
@click.option("--max-compute-growth", default=0.02, show_default=True,
              help="Allowed relative growth of MACs and params (exact, counted at export).")
@click.option("--models", default=None, help="Comma-separated models to check (default: all on either side).")
@click.option("--latency-batches", default=None, metavar="B[,B]",
              help="Gate latency only at these batch sizes (e.g. 8); the others are shown as INFO.")
@click.option("--ab-processes", default=12, show_default=True, type=click.IntRange(min=2),
              help="Fresh processes the A/B rounds are split over: the units its confidence interval is built from.")
def check(report, baseline_file, reference_run, max_accuracy_drop, max_latency_regression, max_size_growth,
          max_compute_growth, models, latency_batches, ab_processes) -> None:
    """Exit 0 if REPORT.json holds up against the baseline (and the reference run), 1 on a
    regression, 2 on unusable input."""
    from compress.gate import baseline as files
    from compress.gate.check import Limits, judge, time_both
    from compress.gate.verdict import render
    limits = Limits(max_accuracy_drop=max_accuracy_drop, max_latency_regression=max_latency_regression,
                    max_size_growth=max_size_growth, max_compute_growth=max_compute_growth)
    document = files.read_report(report)
    base = files.read(baseline_file, document.environment.cpu)
    chosen = [m.strip() for m in models.split(",")] if models else None
    reference = timing = None
    if reference_run:
        reference = files.read_report(Path(reference_run) / "report.json")
        judge(document, base, limits, chosen, reference)  # bad input is refused before minutes of timing
        click.echo(f"timing {len(document.models)} models of this run and the reference run interleaved ...", err=True)
        timing = time_both(document, Path(report).resolve().parent, reference, Path(reference_run), chosen,
                           ab_processes)
    batches = [int(b) for b in latency_batches.split(",")] if latency_batches else None
    outcome = judge(document, base, limits, chosen, reference, timing, batches)
    click.echo(render(outcome.rows))
    for w in outcome.warnings:
        click.secho(f"WARNING: {w}", fg="yellow", err=True)
    for note in outcome.notes:
        click.secho(note, fg="cyan")
    if outcome.inconclusive:
        click.secho(f"INCONCLUSIVE: {len(outcome.inconclusive)} latency figure(s) past the limit without confidence "
                    "(not a failure): " + ", ".join(f"{r.model} {r.label}" for r in outcome.inconclusive), fg="yellow")
    if outcome.failed:
        bad = sum(r.verdict.value in ("FAIL", "MISSING") for r in outcome.rows)
        click.secho(f"REGRESSION: {bad} of {outcome.gated} gated figures outside their limits", fg="red")
        sys.exit(1)
    against = "the baseline file" + (f" and the reference run {reference_run}" if reference_run else "")
    click.secho(f"OK: {outcome.gated} gated figures within limits (against {against})", fg="green")


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--data", "data_path", required=True, help="ImageFolder (val/ is used when present) or `digits`.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Write report.json and report.md here.")
@click.option("--reference", default=None, help="Model name (file stem) the ratios are taken against; default the first.")
@click.option("--set", "overrides", multiple=True, metavar="bench.KEY=VALUE", help="Override bench.* settings.")
def bench(models, data_path, out, reference, overrides) -> None:
    """Benchmark any compress-exported ONNX files on a dataset's val split, outside a pipeline run."""
    from compress.core.config import DataConfig
    from compress.core.data import load_dataset
    from compress.core.documents import Report
    from compress.exports.onnx import read_metadata
    from compress.measure.suite import benchmark_onnx
    from compress.reporting.report import markdown_report, markdown_table
    from compress.stages.benchmark import dataset_info
    cfg = Config.from_toml(None, overrides)
    paths = {Path(m).stem: Path(m) for m in models}
    if len(paths) != len(models):
        raise CompressError("two model files share a name; give each a distinct file name")
    metas = {n: read_metadata(p) for n, p in paths.items()}
    first = next(iter(metas.values()))
    preprocessing = {k: first[k] for k in ("resize", "crop", "mean", "std", "labels")}
    for name, meta in metas.items():
        if {k: meta[k] for k in preprocessing} != preprocessing:
            raise CompressError(f"{paths[name]} expects other preprocessing or labels than {models[0]}")
    dcfg = DataConfig(path=data_path, resize=int(first["resize"]), crop=int(first["crop"]),
                      mean=json.loads(first["mean"]), std=json.loads(first["std"]))
    data = load_dataset(dcfg, cfg.seed)
    if data.classes != json.loads(first["labels"]):
        raise CompressError(f"{data_path} has classes {data.classes}, the models {json.loads(first['labels'])}")
    split = data.report_split
    images = data.inputs(split, dcfg).numpy()
    measured = benchmark_onnx(paths, images, data.split(split).labels.numpy(), data.classes, cfg.bench,
                              reference=reference or next(iter(paths)))
    report = Report.from_dict({**measured, "dataset": dataset_info(data)}, "the benchmark")
    click.echo(markdown_table(report))
    if out:
        from compress.core.lock import RunLock
        from compress.core.roster import REPORT_JSON, REPORT_MD
        from compress.core.rundir import RunDir
        run = RunDir(out)
        with RunLock(out):
            run.write_json(REPORT_JSON, report.to_dict())
            run.write_text(REPORT_MD, markdown_report(report))
        click.echo(f"wrote {Path(out) / REPORT_JSON} and {Path(out) / REPORT_MD}")


@main.command()
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1),
              help="How many classes to print per image.")
def predict(model, images, top_k) -> None:
    """Print the top-k classes for each image, using only MODEL.onnx and its metadata. Hidden files
    (macOS's `._*` twins, .DS_Store) and anything under __MACOSX are not images and are skipped."""
    from compress.core.preprocess import is_data_name
    from compress.exports.client import predict as run_predict
    kept = [i for i in images if all(is_data_name(part) for part in Path(i).parts if part not in (".", ".."))]
    if len(kept) < len(images):
        click.echo(f"skipped {len(images) - len(kept)} hidden or __MACOSX files (not images)", err=True)
    if not kept:
        raise CompressError("no image files left to predict once hidden and __MACOSX files are skipped")
    for image, top in zip(kept, run_predict(model, kept, top_k)):
        click.echo(f"{image}: " + ", ".join(f"{label} {p:.3f}" for label, p in top))


@main.command()
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="ImageFolder: its val/ split when present, else its class folders.")
def evaluate(model, data_path) -> None:
    """Print MODEL.onnx's top-1 accuracy on a labelled image folder."""
    from compress.exports.client import evaluate as run_evaluate
    result = run_evaluate(model, data_path)
    per_class = ", ".join(f"{c} {a:.3f}" for c, a in result["per_class"].items())
    click.echo(f"accuracy {result['accuracy']:.4f} on {result['images']} images ({per_class})")


@main.command("config")
def show_config() -> None:
    """List every config key with its default and why that default."""
    from compress.core.config import Config, key_reasons
    cfg, reasons = Config(), key_reasons()
    for key in valid_keys():
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        click.echo(f"{key} = {json.dumps(obj)}  # {reasons.get(key, '')}")


def launch_torchrun(nproc: int) -> int:
    """Re-run this command under `torchrun --standalone --nproc-per-node nproc` (one machine;
    several machines: start torchrun yourself on each, see the README); returns its exit code."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if not arg.startswith("--nproc="):
            args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "compress.pipeline.cli", *args]
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    main()
