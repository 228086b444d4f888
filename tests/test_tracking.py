"""Experiment tracking through MLflow: a sweep logs one run per cell and seed under one
experiment, readable with MLflow's own Python API; a missing extra is one clear line."""
from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner
from helpers import tiny_overrides

from compress.pipeline.cli import main


@pytest.mark.slow
def test_sweep_runs_land_in_an_mlflow_store(digits_folder, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    store = (tmp_path / "mlruns").as_uri()
    args = ["sweep", "--data", str(digits_folder), "--out", str(tmp_path / "sweep"), "--seeds", "0,1", "--quiet",
            "--grid", "distill.alpha=0.3,0.7", "--track", "mlflow", "--set", f"tracking_uri={store}"]
    for item in tiny_overrides(distill__augment="none"):
        args += ["--set", item]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("compress-sweep-sweep")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["alpha-0.3/seed-0", "alpha-0.3/seed-1",
                                                     "alpha-0.7/seed-0", "alpha-0.7/seed-1"]
    for run in runs:
        assert run.data.params["distill.alpha"] in ("0.3", "0.7") and run.data.params["data.crop"] == "16"
        metrics = run.data.metrics
        assert metrics["delta_vs_baseline"] == pytest.approx(metrics["val_accuracy"] - metrics["baseline_val_accuracy"])
        curve = client.get_metric_history(run.info.run_id, "distill.loss")
        assert [m.step for m in curve] == [1]  # one point per epoch


def test_missing_mlflow_is_one_line(digits_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    args = ["run", "--data", str(digits_folder), "--out", str(tmp_path / "run"), "--track", "mlflow"]
    result = CliRunner().invoke(main, args)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "compress-distill[mlflow]" in lines[0]
    assert not (tmp_path / "run").exists()
