"""posterior.nc: a fit as ArviZ InferenceData, opened and used by arviz itself with no
glue, and holding the same numbers as posterior.npz, the data and fit.json."""
from __future__ import annotations

import csv
import json
import warnings

import matplotlib
import numpy as np
import pytest
from typer.testing import CliRunner

import himdsl
from himdsl import inference_data
from himdsl.cli import app
from himdsl.fitting import run_fit

matplotlib.use("Agg")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)   # arviz's notice of its 1.0 refactor
    az = pytest.importorskip("arviz")

runner = CliRunner()
HIER = "examples/hier_gauss/model.him"
LINREG = "examples/linear_regression/model.him"
SHORT = ["--samples", "300", "--batch", "16", "--particles", "4", "--seed", "1"]


def _fit(model, data, out, steps=20):
    result = runner.invoke(app, ["fit", model, str(data), "--out", str(out), *SHORT, "--steps", str(steps)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def hier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hier")
    data, _ = himdsl.load(HIER).simulate(rows=60, seed=3)
    np.savez(folder / "data.npz", **data)
    _fit(HIER, folder / "data.npz", folder / "out")
    return folder / "out", data


@pytest.fixture(scope="module")
def linreg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("linreg")
    f = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    data, _ = himdsl.load(LINREG).simulate(covariates={"f": f}, seed=2)
    np.savez(folder / "data.npz", **data)
    # globals only: its q is weighed against the ratio's posterior, which 20 steps miss
    _fit(LINREG, folder / "data.npz", folder / "out", steps=300)
    return folder / "out", data


def test_posterior_nc_holds_the_draws_the_data_and_replicated_data(hier):
    out, data = hier
    idata = az.from_netcdf(out / "posterior.nc")
    assert set(idata.groups()) == {"posterior", "observed_data", "posterior_predictive"}
    beta = idata.posterior["beta"]
    assert beta.dims == ("chain", "draw", "beta_dim_0") and beta.shape == (1, 300, 2)
    np.testing.assert_array_equal(beta.values[0], np.load(out / "posterior.npz")["beta"])
    x = idata.observed_data["x"]
    assert x.dims == ("n", "x_dim_0")                  # the plate's rows are named after it
    np.testing.assert_array_equal(x.values, data["x"])
    replicated = idata.posterior_predictive["x"]
    assert replicated.dims == ("chain", "draw", "n", "x_dim_0") and replicated.shape == (1, 100, 60, 2)
    assert np.isfinite(replicated.values).all() and replicated.values.std() > 0.5   # x = z + noise
    record = json.loads((out / "fit.json").read_text())
    for key in ("settings", "plan", "verdict"):
        assert json.loads(idata.attrs[key]) == json.loads(json.dumps(record[key], sort_keys=True))
    assert idata.attrs["inference_library"] == "himdsl"
    assert idata.attrs["model_sha256"] == record["model"]["sha256"]


def test_arviz_summarises_and_plots_it_with_no_glue(hier):
    out, _ = hier
    idata = az.from_netcdf(out / "posterior.nc")
    table = az.summary(idata, kind="stats", stat_focus="mean")
    table_lines = [line for line in open(out / "summary.csv") if not line.startswith("#")]
    rows = {r["name"]: r for r in csv.DictReader(table_lines)}
    assert list(table.index) == list(rows) == ["beta[0]", "beta[1]"]
    for name in rows:
        assert table.loc[name, "mean"] == pytest.approx(float(rows[name]["Mean"]), abs=1e-3)
        assert table.loc[name, "sd"] == pytest.approx(float(rows[name]["StdDev"]), rel=0.01)
    assert az.plot_posterior(idata).size == 2
    assert az.plot_ppc(idata, num_pp_samples=20) is not None


def test_covariates_are_constant_data(linreg):
    out, data = linreg
    idata = az.from_netcdf(out / "posterior.nc")
    assert set(idata.groups()) == {"posterior", "observed_data", "constant_data", "posterior_predictive"}
    np.testing.assert_array_equal(idata.constant_data["f"].values, data["f"])
    assert idata.constant_data["f"].dims == ("n", "f_dim_0")
    assert idata.posterior["w"].shape == (1, 300, 3)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "n")
    assert idata.posterior_predictive["y"].shape == (1, 100, 40)


def test_replicated_data_are_capped_and_skipped_with_a_note(monkeypatch, tmp_path):
    model = himdsl.load(HIER)
    data, _ = model.simulate(rows=50, seed=1)
    fit = run_fit(model, data, {"steps": 3, "samples": 200, "batch": 16, "particles": 2, "seed": 4,
                                "checks": False})
    full, note = inference_data.replicated_data(fit)
    assert full["x"].shape == (100, 50, 2) and note is None
    again, _ = inference_data.replicated_data(fit)      # the fit's seed: the same replicates
    np.testing.assert_array_equal(full["x"], again["x"])
    assert inference_data.replicated_data(fit, draws=5)[0]["x"].shape == (5, 50, 2)

    monkeypatch.setattr(inference_data, "PREDICTIVE_VALUES", 30 * 50 * 2)
    few, note = inference_data.replicated_data(fit)
    assert few["x"].shape == (30, 50, 2) and "30 replicated data sets, not 100" in note

    none, note = inference_data.replicated_data(fit, seconds=1e-9)     # a slow simulator
    assert none == {} and "no posterior_predictive group" in note and "to simulate" in note
    monkeypatch.setattr(inference_data, "PREDICTIVE_SECONDS", 1e-9)
    inference_data.write_inference_data(fit, str(tmp_path / "posterior.nc"))
    idata = az.from_netcdf(tmp_path / "posterior.nc")
    assert "posterior_predictive" not in idata.groups() and "no posterior_predictive" in fit.notes[-1]
    assert idata.attrs["posterior_predictive_note"] == fit.notes[-1]
    in_memory = inference_data.to_inference_data(fit)
    np.testing.assert_array_equal(in_memory.posterior["beta"].values, idata.posterior["beta"].values)

    def broken(*args):
        raise RuntimeError("the extern crashed")
    monkeypatch.setattr(inference_data, "_simulate", broken)    # a failing simulator costs only the group
    groups, _, notes = inference_data.inference_groups(fit)
    assert "posterior_predictive" not in groups and "posterior" in groups
    assert "the extern crashed" in notes[0]


def test_a_model_without_a_plate(tmp_path):
    path = tmp_path / "shift.him"
    path.write_text("model shift\ndata x : real[3]\nlatent mu ~ Normal(0, 1)\n"
                    "noise e ~ Normal(0, 1) [3]\nobserve x = mu + e\n")
    model = himdsl.load(str(path))
    fit = run_fit(model, {"x": np.array([0.5, 1.0, 1.5], np.float32)},
                  {"steps": 3, "samples": 200, "particles": 2, "seed": 0, "checks": False})
    groups, attrs, notes = inference_data.inference_groups(fit)
    assert groups["posterior"]["mu"].dims == ("chain", "draw") and notes == []
    assert groups["observed_data"]["x"].dims == ("x_dim_0",)
    assert groups["posterior_predictive"]["x"].shape == (1, 100, 3)
    assert json.loads(attrs["settings"])["seed"] == 0
