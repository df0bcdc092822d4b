"""`himdsl simulate`: the compiled simulators against hand-written ones (two-sample
tests with fixed seeds) and the command's options."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

import himdsl
from himdsl.cli import app
from himdsl.simulation import simulate_dataset

runner = CliRunner()


def two_moons_by_hand(theta, n, rng):
    """The sbibm two_moons simulator, written directly from its definition."""
    a = rng.uniform(-math.pi / 2, math.pi / 2, n)
    r = rng.normal(0.1, 0.01, n)
    p = np.stack([r * np.cos(a) + 0.25, r * np.sin(a)], -1)
    shift = np.array([-abs(theta[0] + theta[1]) / math.sqrt(2), (-theta[0] + theta[1]) / math.sqrt(2)])
    return p + shift


def hier_gauss_by_hand(n, rng):
    beta = rng.normal(0, 1, 2)
    z = rng.normal(beta, 1, (n, 2))
    return z + 0.5 * rng.normal(0, 1, (n, 2))


def _ks_pvalues(a, b):
    return [stats.ks_2samp(a[:, k], b[:, k]).pvalue for k in range(a.shape[1])]


def test_two_moons_matches_hand_written_simulator():
    theta = [0.3, -0.6]
    data, _ = simulate_dataset(himdsl.load("examples/two_moons/model.him"), draws=4000,
                               given={"theta": theta}, seed=1)
    ours = data["x"]
    theirs = two_moons_by_hand(theta, 4000, np.random.default_rng(2))
    assert ours.shape == (4000, 2)
    assert min(_ks_pvalues(ours, theirs)) > 0.001
    # and the test has power: a different theta is told apart
    other = two_moons_by_hand([0.3, -0.5], 4000, np.random.default_rng(3))
    assert min(_ks_pvalues(ours, other)) < 1e-6


def test_hier_gauss_matches_hand_written_simulator():
    """One row from each of 4,000 data sets (iid draws of x, β's prior included),
    and the spread between rows of one data set."""
    model = himdsl.load("examples/hier_gauss/model.him")
    data, truth = simulate_dataset(model, rows=1, draws=4000, seed=4)
    rng = np.random.default_rng(5)
    theirs = np.concatenate([hier_gauss_by_hand(1, rng) for _ in range(4000)])
    assert min(_ks_pvalues(data["x"][:, 0], theirs)) > 0.001
    # within one data set rows share β: x_n - x_m ~ N(0, 2 * 1.25)
    data, truth = simulate_dataset(model, rows=2, draws=4000, seed=6)
    differences = data["x"][:, 0] - data["x"][:, 1]
    assert stats.kstest(differences[:, 0], "norm", args=(0, math.sqrt(2.5))).pvalue > 0.001
    assert truth["beta"].shape == (4000, 2) and truth["z"].shape == (4000, 2, 2)


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_cli_writes_data_and_truth_with_data_file_shapes(tmp_path):
    out = tmp_path / "d.npz"
    code, text = _run("simulate", "examples/hier_gauss/model.him", "-o", out, "--rows", 50, "--seed", 3)
    assert code == 0, text
    data, truth = np.load(out), np.load(tmp_path / "d.truth.npz")
    assert data["x"].shape == (50, 2) and truth["beta"].shape == (2,) and truth["z"].shape == (50, 2)


def test_cli_seed_reproduces_and_draws_add_a_leading_axis(tmp_path):
    first, second, many = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    for path in (first, second):
        assert _run("simulate", "examples/two_moons/model.him", "-o", path, "--seed", 7)[0] == 0
    np.testing.assert_array_equal(np.load(first)["x"], np.load(second)["x"])
    assert np.load(first)["x"].shape == (2,)
    assert _run("simulate", "examples/two_moons/model.him", "-o", many, "--draws", 5)[0] == 0
    thetas = np.load(tmp_path / "c.truth.npz")["theta"]
    assert np.load(many)["x"].shape == (5, 2) and thetas.shape == (5, 2)
    assert len(np.unique(thetas[:, 0])) == 5, "each data set has its own globals"


def test_cli_given_fixes_globals_for_every_draw(tmp_path):
    out = tmp_path / "g.npz"
    code, text = _run("simulate", "examples/hier_gauss/model.him", "-o", out, "--rows", 10,
                      "--draws", 3, "--given", "beta=[1.5, -2]")
    assert code == 0, text
    np.testing.assert_allclose(np.load(tmp_path / "g.truth.npz")["beta"], [[1.5, -2]] * 3)


def test_cli_data_supplies_covariates_and_rows(tmp_path):
    covariates = tmp_path / "f.npz"
    np.savez(covariates, f=np.random.default_rng(0).normal(size=(30, 3)))
    out = tmp_path / "y.npz"
    code, text = _run("simulate", "examples/linear_regression/model.him", "-o", out, "--data", covariates,
                      "--given", "w=[1, -0.5, 0.25]", "--seed", 0)
    assert code == 0, text
    data = np.load(out)
    assert data["y"].shape == (30,) and data["f"].shape == (30, 3)
    # the user's covariates come back as given (float64, every bit), not rounded to float32
    np.testing.assert_array_equal(data["f"], np.load(covariates)["f"])
    assert data["f"].dtype == np.float64
    residual = data["y"] - data["f"] @ np.array([1, -0.5, 0.25])
    assert abs(residual.std() - 0.5) < 0.2


@pytest.mark.parametrize("draws", [1, 3])
def test_a_rows_vector_at_a_global_vector_is_one_number_a_row(tmp_path, draws):
    """`x @ b` with x : real[2] per row and a global b [2]: a dot product per row
    (the product of two vectors once came out [rows, 1] and broadcast against the
    noise into [rows, rows])."""
    path = tmp_path / "dot.him"
    path.write_text("model dot\ndata x : real[2]\ndata t : real\nlatent b ~ Normal(0, 1) [2]\n"
                    "plate n over t {\n    noise e ~ Normal(0, 1)\n    observe t = x @ b + 0.01 * e\n}\n")
    x = np.random.default_rng(0).normal(size=(40, 2))
    data, _ = simulate_dataset(himdsl.load(str(path)), draws=draws, given={"b": [1.0, -2.0]},
                               covariates={"x": x}, seed=0)
    expected = x @ np.array([1.0, -2.0])
    assert data["t"].shape == ((40,) if draws == 1 else (draws, 40))
    assert np.abs(data["t"] - expected).max() < 0.06


def test_cli_params_set_point_estimates(tmp_path):
    truth_run = tmp_path / "a.npz"
    assert _run("simulate", "examples/deep_implicit/model.him", "-o", truth_run, "--rows", 4, "--seed", 1)[0] == 0
    weights = dict(np.load(tmp_path / "a.truth.npz"))
    params = tmp_path / "w.npz"
    np.savez(params, **{k: v for k, v in weights.items() if "." in k})
    again = tmp_path / "b.npz"
    assert _run("simulate", "examples/deep_implicit/model.him", "-o", again, "--rows", 4, "--seed", 1,
                "--params", params)[0] == 0
    np.testing.assert_allclose(np.load(again)["x"], np.load(truth_run)["x"], rtol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--given", "nope=1"], "`nope` is not a global latent"),
    (["--given", "beta=[1, 2, 3]"], "got shape [3], expected [2]"),
    (["--given", "beta=oops"], "expected a number or a JSON list"),
    ([], "--rows N"),
    (["--rows", 5, "--params", "missing.npz"], "no such file"),
])
def test_cli_bad_options_exit_2_with_a_message(tmp_path, args, message):
    code, text = _run("simulate", "examples/hier_gauss/model.him", "-o", tmp_path / "x.npz", *args)
    assert code == 2 and message in text, text


@pytest.mark.parametrize("given, message", [
    ("rho=1.5", "--given rho=1.5: outside the support of its prior Beta (values in (0, 1))"),
    ("tau=-1", "--given tau=-1.0: outside the support of its prior HalfNormal (values at or above 0)"),
    # torch counts 0 in a Gamma's support, where a Gamma(2, 1) has no density
    ("k=0", "--given k=0.0: its prior Gamma has zero density there"),
])
def test_cli_a_given_global_outside_its_priors_support_is_refused(tmp_path, given, message):
    model = tmp_path / "m.him"
    model.write_text("data x : real\nlatent rho ~ Beta(2, 2)\nlatent tau ~ HalfNormal(1)\n"
                     "latent k ~ Gamma(2, 1)\n"
                     "plate n over x {\n  noise e ~ Normal(0, 1)\n  observe x = rho + tau * e * k\n}\n")
    code, text = _run("simulate", model, "-o", tmp_path / "d.npz", "--rows", 5, "--given", given)
    assert code == 2 and message in text, text
    code, text = _run("simulate", model, "-o", tmp_path / "d.npz", "--rows", 5, "--given", "rho=0.3")
    assert code == 0, text


def test_cli_missing_covariates_are_named(tmp_path):
    code, text = _run("simulate", "examples/linear_regression/model.him", "-o", tmp_path / "x.npz", "--rows", 3)
    assert code == 2 and "covariates `f`" in text


def test_cli_warns_when_the_simulation_is_undefined(tmp_path):
    model = tmp_path / "m.him"
    model.write_text("data x : real[2]\nplate n over x {\n  noise e ~ Normal(0, 1) [2]\n  observe x = log(e)\n}\n")
    code, text = _run("simulate", model, "-o", tmp_path / "d.npz", "--rows", 50, "--seed", 0)
    assert code == 0 and "warning: simulated array `x` has" in text and "NaN or inf" in text
