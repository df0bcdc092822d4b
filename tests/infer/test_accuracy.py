"""Accuracy against closed-form posteriors and sbibm reference draws (CI-sized:
fewer steps and draws than benchmarks/lfvi_accuracy.py, tolerances widened to match;
the full-size numbers are in docs/accuracy.md)."""
import numpy as np
import pytest
import torch

from himdsl.infer import FitSettings, fit
from tests.infer import models

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check_globals(draws, mean, sd, mean_tol, sd_range):
    err = (draws.mean(0) - mean) / sd
    ratio = draws.std(0) / sd
    assert np.all(np.abs(err) < mean_tol), f"mean errors in posterior sds: {err}"
    assert np.all((ratio > sd_range[0]) & (ratio < sd_range[1])), f"sd ratios: {ratio}"


def test_hier_gauss_globals_and_locals():
    data, truth = models.hier_gauss_data()
    result = fit(models.HierGauss(), data, FitSettings(steps=2000))
    _check_globals(result.posterior(4000)["beta"], truth["beta_mean"], truth["beta_sd"],
                   0.5, (0.65, 1.4))
    local = result.locals(data, draws=128)
    rmse = np.sqrt(((local["z_mean"] - truth["z_mean"]) ** 2).mean())
    assert rmse < 0.1
    assert np.allclose(local["z_sd"].mean(0), truth["z_sd"][0], rtol=0.15)


def test_linear_regression():
    data, truth = models.linreg_data()
    result = fit(models.LinReg(), data, FitSettings(steps=2000))
    _check_globals(result.posterior(4000)["w"], truth["w_mean"], truth["w_sd"], 0.6, (0.65, 1.4))


def test_point_parameters_recovered_by_generator_gradient():
    model = models.PointRegression()
    fit(model, models.point_regression_data(), FitSettings(steps=1500))
    assert abs(float(model.a) - 1.5) < 0.1 and abs(float(model.b) + 0.7) < 0.1


@pytest.mark.parametrize("task, model, bound", [
    ("gaussian_linear", models.GaussianLinear, 0.56),
    pytest.param("two_moons", models.TwoMoons, 0.62, marks=pytest.mark.xfail(
        reason="mode weights not yet balanced: C2ST 0.756 (docs/lfvi-notes.md)", strict=False)),
])
def test_sbibm_c2st(task, model, bound):
    data, reference = models.sbibm_task(task)
    result = fit(model(), data, FitSettings(steps=1500, simulations=256))
    assert result.mode == "contrastive"
    rng = np.random.default_rng(0)
    draws = result.posterior(2000)["theta"]
    assert models.c2st(draws, reference[rng.choice(len(reference), 2000, replace=False)]) < bound
