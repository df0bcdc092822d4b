"""The runtime: distributions against torch.distributions, bijections to each
support (round trip, log-det against an autograd Jacobian), layers, data checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import distributions as D

import himdsl
from himdsl.runtime import distributions, lib
from himdsl.runtime.data import DataError, read_npz, validate_data

LIKE = torch.zeros((), dtype=torch.float64)
# (name, language arguments, the same distribution built directly with torch)
CASES = [
    ("Normal", {"loc": 0.5, "scale": 2.0}, lambda: D.Normal(0.5, 2.0)),
    ("Uniform", {"low": -3.0, "high": 3.0}, lambda: D.Uniform(-3.0, 3.0)),
    ("LogNormal", {"loc": 0.1, "scale": 0.5}, lambda: D.LogNormal(0.1, 0.5)),
    ("HalfNormal", {"scale": 1.5}, lambda: D.HalfNormal(1.5)),
    ("Exponential", {"rate": 2.0}, lambda: D.Exponential(2.0)),
    ("Gamma", {"concentration": 3.0, "rate": 2.0}, lambda: D.Gamma(3.0, 2.0)),
    ("Beta", {"a": 2.0, "b": 5.0}, lambda: D.Beta(2.0, 5.0)),
    ("Laplace", {"loc": -1.0, "scale": 0.5}, lambda: D.Laplace(-1.0, 0.5)),
    ("StudentT", {"df": 4.0, "loc": 0.0, "scale": 1.0}, lambda: D.StudentT(4.0, 0.0, 1.0)),
    ("Gumbel", {"loc": 1.0, "scale": 2.0}, lambda: D.Gumbel(1.0, 2.0)),
    ("Bernoulli", {"probs": 0.3}, lambda: D.Bernoulli(0.3)),
    ("Bernoulli", {"logits": -0.5}, lambda: D.Bernoulli(logits=-0.5)),
    ("Poisson", {"rate": 4.0}, lambda: D.Poisson(4.0)),
    ("Categorical", {"probs": [0.2, 0.5, 0.3]}, lambda: D.Categorical(torch.tensor([0.2, 0.5, 0.3]))),
    ("Categorical", {"logits": [0.0, 1.0, -1.0]}, lambda: D.Categorical(logits=torch.tensor([0.0, 1.0, -1.0]))),
]
IDS = [f"{name}-{'-'.join(args)}" for name, args, _ in CASES]


def _params(args):
    return {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else v for k, v in args.items()}


@pytest.mark.parametrize("name, args, reference", CASES, ids=IDS)
def test_log_prob_matches_torch(name, args, reference):
    dist = distributions.make(name, (4,), LIKE, **_params(args))
    ref = reference()
    values = ref.sample((7, 4)).double()
    expected = ref.log_prob(values.to(torch.float32)).double().sum(-1)
    torch.testing.assert_close(dist.log_prob(values), expected, rtol=1e-5, atol=1e-5)
    assert dist.event_shape == (4,)


@pytest.mark.parametrize("name, args, reference", CASES, ids=IDS)
def test_samples_match_torch_moments(name, args, reference):
    """Mean and variance of 40,000 draws within 5 standard errors of torch's."""
    draws = distributions.sample(distributions.make(name, (), LIKE, **_params(args)), (40_000,))
    ref = reference()
    mean, var = ref.mean.double(), ref.variance.double()
    if name == "Categorical":
        probs = ref.probs.double()
        k = torch.arange(3, dtype=torch.float64)
        mean, var = (probs * k).sum(), (probs * k ** 2).sum() - (probs * k).sum() ** 2
    if torch.isfinite(var):
        assert abs(draws.double().mean() - mean) < 5 * (var / len(draws)).sqrt()
        fourth = ((draws.double() - mean) ** 4).mean()
        assert abs(draws.double().var() - var) < 5 * ((fourth - var ** 2) / len(draws)).sqrt() + 1e-9


CONTINUOUS = [c for c in CASES if c[0] not in ("Bernoulli", "Poisson", "Categorical")]


@pytest.mark.parametrize("name, args, reference", CONTINUOUS, ids=[c[0] for c in CONTINUOUS])
def test_bijection_round_trip_and_log_det(name, args, reference):
    dist = distributions.make(name, (3,), LIKE, **_params(args))
    transform = D.biject_to(dist.support)
    u = torch.randn(5, 3, dtype=torch.float64)
    x = transform(u)
    assert bool(dist.support.check(x).all()), "draws must lie in the support"
    torch.testing.assert_close(transform.inv(x), u, rtol=1e-6, atol=1e-6)
    for row in range(5):
        jac = torch.autograd.functional.jacobian(transform, u[row])
        expected = torch.logdet(jac) if jac.dim() == 2 else torch.log(jac.abs()).sum()
        got = transform.log_abs_det_jacobian(u[row], x[row]).sum()
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_model_bijector_keeps_uniform_global_inside_its_interval():
    module = himdsl.load("examples/two_moons/model.him").module()
    transform = module.bijector("theta")
    x = transform(torch.randn(1000, 2) * 3)
    assert float(x.min()) > -1 and float(x.max()) < 1


def test_lift_and_matmul_follow_numpy_on_element_axes():
    v = torch.randn(4, 5, 3)  # 4 draws × 5 rows of 3-vectors
    m = torch.randn(3, 2)
    out = lib.matmul(v, m, 1, 2)
    torch.testing.assert_close(out, torch.einsum("drk,kj->drj", v, m))
    torch.testing.assert_close(lib.matmul(m.T, v, 2, 1), torch.einsum("jk,drk->drj", m.T, v))
    assert lib.lift(torch.zeros(4, 5), 0, 1).shape == (4, 5, 1)


def test_matmul_of_two_vectors_is_one_number_per_row_and_draw():
    """A row's covariate vector @ a global vector (lifted to [S, 1, D]): one dot
    product per draw and row, [S, M], as numpy gives a scalar for [D] @ [D]."""
    x = torch.randn(5, 3)                  # 5 rows, no draw axis (a covariate)
    w = torch.randn(4, 1, 3)               # 4 draws of a global, lifted over rows
    out = lib.matmul(x, w, 1, 1)
    assert out.shape == (4, 5)
    torch.testing.assert_close(out, torch.einsum("rk,dk->dr", x, w[:, 0]))
    assert lib.matmul(torch.randn(3), torch.randn(3), 1, 1).shape == ()


def test_dense_layer_stores_weights_in_out_and_applies_activation():
    layer = lib.Dense(3, 2, "relu")
    x = torch.randn(6, 3)
    torch.testing.assert_close(layer(x), torch.relu(x @ layer.weight + layer.bias))
    assert tuple(layer.weight.shape) == (3, 2)


def _module():
    return himdsl.load("examples/bayes_gan/model.him").module()


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 5))}, r"missing array `y` \(model declares `data y : cat\(2\)`\)"),
    ({"x": np.zeros((4, 3)), "y": np.zeros(4)}, r"array `x` has shape \[4, 3\]; expected \[N, 5\]"),
    ({"x": np.zeros((4, 5)), "y": np.array([0, 1, 2, 1])}, r"array `y` holds label 2; `cat\(2\)` labels"),
    ({"x": np.zeros((4, 5)), "y": np.zeros(3)}, r"same number of rows; `y` has 3, `x` has 4"),
    ({"x": np.full((4, 5), np.nan), "y": np.zeros(4)}, r"array `x` contains nan at index \[0, 0\]"),
    ({"x": np.zeros((4, 5)), "y": np.array([0, 0.5, 1, 1])}, r"`y` holds 0.5 at index \[1\]"),
])
def test_data_validation_names_the_array(arrays, message):
    with pytest.raises(DataError, match=message):
        validate_data(_module(), arrays, "d.npz")


def test_read_npz_reports_unreadable_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(DataError, match="not a readable .npz archive"):
        read_npz(bad)
    with pytest.raises(DataError, match="no such file"):
        read_npz(tmp_path / "missing.npz")
