"""`himdsl fit --log tensorboard|mlflow`: the trace reaches the tracker as trace.csv
has it; a tracker that cannot start stops the fit before training; one that
breaks during the fit is dropped with a note, never costing the fit."""
from __future__ import annotations

import csv
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import himdsl
from himdsl.cli import app
from himdsl.tracking import TraceLog

runner = CliRunner()
HIER = "examples/hier_gauss/model.him"
SHORT = ["--steps", "100", "--samples", "200", "--batch", "16", "--particles", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.npz"
    arrays, _ = himdsl.load(HIER).simulate(rows=40, seed=3)
    np.savez(path, **arrays)
    return path


def _trace(folder) -> list[dict]:
    return list(csv.DictReader(open(folder / "trace.csv")))


def test_tensorboard_receives_the_trace(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "fit"
    result = runner.invoke(app, ["fit", HIER, str(data), "--out", str(out), "--log", "tensorboard", *SHORT])
    assert result.exit_code == 0, result.output
    assert f"tensorboard --logdir {out / 'tensorboard'}" in result.output
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    trace = _trace(out)
    logged = events.Scalars("ratio/accuracy")
    assert [e.step for e in logged] == [int(r["step"]) for r in trace]
    assert [e.value for e in logged] == pytest.approx([float(r["ratio_accuracy"]) for r in trace], abs=1e-5)
    elbo = {e.step: e.value for e in events.Scalars("elbo")}
    assert elbo and all(elbo[int(r["step"])] == pytest.approx(float(r["elbo"]), abs=1e-4)
                        for r in trace if r["elbo"] != "nan")
    texts = set(events.Tags()["tensors"])
    assert {"plan/text_summary", "verdict/text_summary", "settings/text_summary"} <= texts


def test_mlflow_receives_the_trace_settings_and_files(data, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")     # a local store, no server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    out = tmp_path / "fit"
    result = runner.invoke(app, ["fit", HIER, str(data), "--out", str(out), "--log", "mlflow", *SHORT])
    assert result.exit_code == 0, result.output
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("himdsl")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "fit"
    assert run.data.params["steps"] == "100" and run.data.params["batch"] == "16"
    history = client.get_metric_history(run.info.run_id, "ratio_loss")
    trace = _trace(out)
    assert [m.step for m in history] == [int(r["step"]) for r in trace]
    assert [m.value for m in history] == pytest.approx([float(r["ratio_loss"]) for r in trace], rel=1e-5)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.csv", "fit.json", "trace.csv", "plan.txt", "verdict.txt"} <= artifacts
    assert "checkpoint.pt" not in artifacts


def test_a_tracker_that_cannot_start_costs_no_training(data, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    out = tmp_path / "fit"
    result = runner.invoke(app, ["fit", HIER, str(data), "--out", str(out), "--log", "mlflow", *SHORT])
    assert result.exit_code == 2 and "--log mlflow: MLflow cannot start a run" in result.output
    assert "Traceback" not in result.output and not (out / "trace.csv").exists()


def test_a_missing_package_is_named(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)    # import fails
    result = runner.invoke(app, ["fit", HIER, str(data), "--out", str(tmp_path / "f"), "--log", "tensorboard"])
    assert result.exit_code == 2 and "pip install tensorboard" in result.output
    result = runner.invoke(app, ["fit", HIER, str(data), "--log", "wandb"])
    assert result.exit_code == 2 and "--log must be tensorboard or mlflow" in result.output


def test_a_tracker_that_breaks_is_dropped_with_a_note():
    class Flaky(TraceLog):
        calls = 0

        def _row(self, row):
            self.calls += 1
            raise ConnectionError("server went away")

    log = Flaky("mlflow")
    log.row(None)
    log.row(None)
    log.finish([], {})
    assert log.calls == 1 and log.broken
    assert log.notes == ["--log mlflow stopped logging (ConnectionError: server went away); "
                         "the trace is in trace.csv"]
