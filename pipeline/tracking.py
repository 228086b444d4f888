"""Optional experiment tracking through MLflow (off by default): one MLflow run per pipeline run,
or per sweep cell and seed under one experiment.

Logged: params = the resolved config (flattened `section.key`); metrics = every per-epoch curve
(loss and val accuracy per training stage, step = epoch) and every report figure (accuracy and
its interval, latency, size, MACs, speed and size ratios); artifacts = report.md/.html/.json, the
model card and the deployable ONNX file. The store is `./mlruns` unless `tracking_uri` (or the
MLFLOW_TRACKING_URI variable) names another.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from compress.core.config import flatten
from compress.core.documents import Report
from compress.core.errors import CompressError
from compress.core.roster import DEPLOY_CARD, DEPLOY_ONNX, MANIFEST, REPORT_HTML, REPORT_JSON, REPORT_MD

INSTALL_HINT = "pip install 'compress-distill[mlflow]'"


def _mlflow(uri: str):
    try:
        import mlflow
    except ImportError:
        raise CompressError(f"tracking with MLflow needs the mlflow extra: {INSTALL_HINT}") from None
    target = uri or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
    if target.startswith("file:") or "://" not in target:
        # MLflow 3 keeps the plain-folder store only on request; it is what `--track mlflow` promises
        # by default (no server, no database), so ask for it
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(target)
    return mlflow


def check_available(track: str) -> None:
    """Fail before any work when tracking is asked for and MLflow is missing."""
    if track == "mlflow":
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise CompressError(f"--track mlflow needs MLflow: {INSTALL_HINT}") from None


def _params(config: dict) -> dict[str, str]:
    """The resolved config as MLflow params: `section.key` -> string (lists, booleans as JSON)."""
    return {k: json.dumps(v) if isinstance(v, list | bool) or v is None else str(v) for k, v in flatten(config).items()}


def _curves(mlflow, manifest: dict) -> None:
    for stage, record in manifest.get("stages", {}).items():
        for point in (record.get("summary") or {}).get("history") or []:
            for figure in ("loss", "val_accuracy"):
                if point.get(figure) is not None:
                    mlflow.log_metric(f"{stage}.{figure}", float(point[figure]), step=int(point["epoch"]))


def _report_figures(mlflow, report: Report) -> None:
    metrics = {}
    for name, m in report.models.items():
        metrics[f"{name}.accuracy"] = m.accuracy
        if m.accuracy_interval:
            metrics[f"{name}.accuracy_low"] = m.accuracy_interval.low
            metrics[f"{name}.accuracy_high"] = m.accuracy_interval.high
        metrics[f"{name}.onnx_bytes"] = m.onnx_bytes
        for key in ("params", "macs", "ece", "throughput_ips"):
            if getattr(m, key) is not None:
                metrics[f"{name}.{key}"] = getattr(m, key)
        for batch, stats in m.latency_ms_by_batch.items():
            metrics[f"{name}.p50_ms_batch{batch}"] = stats.p50
        for key, value in (vars(m.vs_reference) if m.vs_reference else {}).items():
            if value is not None:
                metrics[f"{name}.{key}"] = value
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})


def log_run(run_dir: Path, uri: str = "", experiment: str = "compress", run_name: str | None = None,
            tags: dict[str, str] | None = None) -> str:
    """Log one finished run directory; returns the MLflow run id."""
    mlflow = _mlflow(uri)
    manifest = json.loads((run_dir / MANIFEST).read_text())
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name or run_dir.name, tags=tags) as active:
        mlflow.log_params(_params(manifest["config"]))
        _curves(mlflow, manifest)
        if (run_dir / REPORT_JSON).is_file():
            _report_figures(mlflow, Report.read(run_dir / REPORT_JSON))
        for rel in (REPORT_MD, REPORT_HTML, REPORT_JSON, DEPLOY_CARD, DEPLOY_ONNX):
            if (run_dir / rel).is_file():
                mlflow.log_artifact(str(run_dir / rel), artifact_path=str(Path(rel).parent) if "/" in rel else None)
        return active.info.run_id


def log_sweep(summary: dict, records: list[dict], out: Path, uri: str = "") -> None:
    """One MLflow run per cell and seed, under the experiment `compress-sweep-<out folder>`."""
    for r in records:
        cell = summary["cells"][r["cell"]]
        run_id = log_run(Path(r["run"]), uri, experiment=f"compress-sweep-{out.resolve().name}",
                         run_name=f"{r['cell']}/seed-{r['seed']}", tags={"cell": r["cell"], "seed": str(r["seed"])})
        mlflow = _mlflow(uri)
        i = cell["seeds"].index(r["seed"])
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({"val_accuracy": cell["accuracy"][i], "baseline_val_accuracy": cell["baseline"][i],
                                "delta_vs_baseline": cell["accuracy"][i] - cell["baseline"][i]})
