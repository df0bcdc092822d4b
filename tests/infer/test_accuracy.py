"""Accuracy against closed-form posteriors and sbibm reference draws, CI-sized.

These runs use fewer steps (and, for the sbibm tasks, fewer simulations and draws)
than the full benchmark (benchmarks/lfvi_accuracy.py, default settings), so each
tolerance below is the CI-sized measurement (docs/accuracy.md, "CI-sized runs") plus
a margin, not the issue's target; the full-size numbers against the targets are in
docs/accuracy.md. Every fit is seeded (FitSettings.seed = 0, one thread), so a run
is deterministic on a given platform (one thread: tests/infer/conftest.py); the margins cover BLAS differences between
machines. Budget: the whole file is sized to about 4 CPU minutes.
"""
import numpy as np
import pytest

from himdsl.infer import FitSettings, RatioSettings, fit
from tests.infer import models

pytestmark = pytest.mark.slow


def _errors(draws, mean, sd):
    """Mean error in exact posterior sds and the sd ratio, per dimension."""
    return (draws.mean(0) - mean) / sd, draws.std(0) / sd


def test_hier_gauss_globals_and_locals():
    """Conjugate hierarchical Gaussian (N = 1,000), 1,500 steps (half the default).

    Measured at this size: β mean error −0.84, −0.58 sd, sd ratio 0.66, 0.84; local
    means RMSE 0.043, local sd ratio 1.01, 1.02 (−0.49, −0.85; 1.01, 0.87 before the q
    step's rows were reshuffled). The bounds (|error| < 1.2 sd, sd
    ratio 0.55–1.45) still catch every failure LFVI.md lists (a mean 8–10 sd off, q 3×
    too wide, locals collapsed to 0.1–0.25 of their variance); the locals are held to
    the issue's own targets (RMSE < 0.1, sd within 15 %)."""
    data, truth = models.hier_gauss_data()
    result = fit(models.HierGauss(), data, FitSettings(steps=1500))
    err, ratio = _errors(result.posterior(4000)["beta"], truth["beta_mean"], truth["beta_sd"])
    print(f"hier_gauss: mean err {err}, sd ratio {ratio}")
    assert np.all(np.abs(err) < 1.2), f"mean errors in posterior sds: {err}"
    assert np.all((ratio > 0.55) & (ratio < 1.45)), f"sd ratios: {ratio}"
    local = result.locals(data, draws=128)
    rmse = np.sqrt(((local["z_mean"] - truth["z_mean"]) ** 2).mean())
    z_ratio = local["z_sd"].mean(0) / truth["z_sd"][0]
    print(f"hier_gauss: z RMSE {rmse}, z sd ratio {z_ratio}")
    assert rmse < 0.1
    assert np.all(np.abs(z_ratio - 1) < 0.15), f"local sd ratios: {z_ratio}"


def test_linear_regression():
    """Bayesian linear regression (N = 500), 2,000 steps; `auto` picks the
    contrastive pair ratio (no locals, no point parameters).

    Measured at this size: mean error 0.01, −0.01, −0.03 sd, sd ratio 0.92, 1.02, 1.13
    (−0.47, 0.39, −0.38 before session 3's ratio optimiser and reshuffled q rows;
    1.51, 0.52, −0.45 with the empirical ratio). Full size over three seeds: max
    |error| 0.21 sd (docs/accuracy.md). Bounds: mean within 0.4 posterior sd (measured
    0.03 + a margin for run-to-run noise, ≈ 0.1 sd RMS at full size and larger at this
    size; LFVI.md's naive algorithm is off by up to 10), spread within the issue's
    0.75–1.33×."""
    data, truth = models.linreg_data()
    result = fit(models.LinReg(), data, FitSettings(steps=2000))
    assert result.mode == "contrastive"
    err, ratio = _errors(result.posterior(4000)["w"], truth["w_mean"], truth["w_sd"])
    print(f"linreg: mean err {err}, sd ratio {ratio}")
    assert np.all(np.abs(err) < 0.4), f"mean errors in posterior sds: {err}"
    assert np.all((ratio > 0.75) & (ratio < 1.33)), f"sd ratios: {ratio}"


def test_point_parameters_recovered_by_generator_gradient():
    """Point parameters a = 1.5, b = −0.7 (N = 500, noise sd 0.5) learnt through the
    simulation by ∇_w E[−exp(−r)] (docs/lfvi.md). Measured at 1,000 steps: a = 1.425,
    b = −0.734 (1.429, −0.745 before the q step's rows were reshuffled; 1.489, −0.738 before the input scaling simulated fewer rows: the
    spread is run-to-run noise of a 1,000-step fit); the maximum-likelihood estimates themselves have sd ≈ 0.022, so
    0.1 is about 4 of their sds."""
    model = models.PointRegression()
    fit(model, models.point_regression_data(), FitSettings(steps=1000))
    a, b = float(model.a.detach()), float(model.b.detach())
    print(f"point: a {a}, b {b}")
    assert abs(a - 1.5) < 0.1 and abs(b + 0.7) < 0.1


def _sbibm_fit(task, model, steps=400):
    """A CI-sized contrastive fit (400 steps × 128 simulations; default 3,000 × 512)."""
    data, reference = models.sbibm_task(task)
    result = fit(model, data, FitSettings(steps=steps, simulations=128))
    assert result.mode == "contrastive"
    return data["x"].numpy(), result.posterior(4000)["theta"], reference


def test_gaussian_linear_against_closed_form():
    """sbibm gaussian_linear (10-D, θ ~ N(0, 0.1 I), x ~ N(θ, 0.1 I)), contrastive
    mode. Its posterior is N(x / 2, 0.05 I) exactly, which is a sharper and much
    cheaper check than a C2ST (the C2ST's MLP takes minutes on 2 cores; the full
    benchmark computes it). Measured at this size: mean error −0.09 … 0.10 sd, sd ratio
    0.98–1.05 (full size: −0.03 … 0.04 sd, 0.99–1.02). Bounds: |error| < 0.6 sd, sd
    ratio 0.85–1.3."""
    x, draws, _ = _sbibm_fit("gaussian_linear", models.GaussianLinear())
    err, ratio = _errors(draws, x / 2, np.sqrt(0.05))
    print(f"gaussian_linear: mean err {err}, sd ratio {ratio}")
    assert np.all(np.abs(err) < 0.6), f"mean errors in posterior sds: {err}"
    assert np.all((ratio > 0.85) & (ratio < 1.3)), f"sd ratios: {ratio}"


def test_two_moons_finds_both_crescents():
    """sbibm two_moons, contrastive mode with the particle covering term.

    The exact posterior puts 50 % on each crescent (the sign of θ0 + θ1): measured
    54.2 % at this size (51.7 % in session 3, 52.8 % with the importance-sampled term
    of session 2); asserted 35–65 % (reverse KL alone puts 100 % on one side).
    Closeness to the crescents: the median distance from a q draw to the nearest of
    the 10,000 reference draws is 0.014 at this size (0.114 in session 3 before
    `cover` = 1000 and five ratio updates, 0.21 in session 2, 0.64 for prior draws,
    0.001 between reference draws); asserted < 0.05. The full-size C2ST is in
    docs/accuracy.md."""
    from scipy.spatial import cKDTree

    _, draws, reference = _sbibm_fit("two_moons", models.TwoMoons())
    frac = float((draws.sum(1) > 0).mean())
    dist = float(np.median(cKDTree(reference).query(draws)[0]))
    print(f"two_moons: fraction with θ0 + θ1 > 0 {frac}, median distance {dist}")
    assert 0.35 < frac < 0.65
    assert dist < 0.05


def test_probit_simulator_with_prediction_inputs():
    """Probit regression written as a simulator (y = [a x + b + e > 0], N = 500),
    the ratio reading the prediction f = a x + b instead of (a, b); empirical
    ratio, 1,000 steps. Exact posterior by quadrature.

    Measured at this size: mean error +1.34, −0.31 sd, sd ratio 1.04, 1.01. The
    same fit with the ratio reading (a, b) itself ran away (a = 2.6e4 after 1,000
    steps in contrastive mode; a 4.5 ± 0.3 with the likelihood annealed), the failure
    this guards against (docs/lfvi-notes.md, "ratio inputs")."""
    data, truth = models.probit_data()
    result = fit(models.probit_module(), data,
                 FitSettings(steps=1000, ratio_inputs="prediction", ratio=RatioSettings(mode="empirical")))
    draws = result.posterior(4000)
    err, ratio = _errors(np.stack([draws["a"], draws["b"]], -1), truth["mean"], truth["sd"])
    print(f"probit: mean err {err}, sd ratio {ratio}")
    assert np.all(np.abs(err) < 2.2), f"mean errors in posterior sds: {err}"
    assert np.all((ratio > 0.7) & (ratio < 1.4)), f"sd ratios: {ratio}"
