"""Distributions beyond the first set (HalfCauchy, Cauchy, HalfStudentT, Binomial,
NegativeBinomial, Weibull, Dirichlet, MultivariateNormal): densities and moments
against torch.distributions, supports and their bijections, the checker's shape
and placement rules, a compiled model that simulates each, and short fits that
take a HalfCauchy scale and a Dirichlet global."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import distributions as D

import himdsl
from himdsl.driver import run_frontend
from himdsl.infer import FitSettings, fit
from himdsl.infer.data import ModelView
from himdsl.infer.local_guide import coordinates_at
from himdsl.runtime import distributions
from himdsl.semantics import builtins as B

LIKE = torch.zeros((), dtype=torch.float64)
TRIL = [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.2, 0.5]]
N = 40_000


class _HalfT:
    """|T|, T ~ StudentT(df, 0, scale), from torch's StudentT alone."""

    def __init__(self, df, scale):
        self.t = D.StudentT(df, 0.0, scale)

    def sample(self, shape):
        return self.t.sample(shape).abs()

    def log_prob(self, x):
        return self.t.log_prob(x) + math.log(2)


# (name, language arguments, the same distribution built directly with torch)
CASES = [
    ("HalfCauchy", {"scale": 1.5}, lambda: D.HalfCauchy(1.5)),
    ("Cauchy", {"loc": -1.0, "scale": 0.5}, lambda: D.Cauchy(-1.0, 0.5)),
    ("HalfStudentT", {"df": 6.0, "scale": 2.0}, lambda: _HalfT(6.0, 2.0)),
    ("Weibull", {"scale": 2.0, "concentration": 1.5}, lambda: D.Weibull(2.0, 1.5)),
    ("Binomial", {"total_count": 10, "probs": 0.3}, lambda: D.Binomial(10, 0.3)),
    ("Binomial", {"total_count": 10, "logits": -0.5}, lambda: D.Binomial(10, logits=torch.tensor(-0.5))),
    ("NegativeBinomial", {"total_count": 4.0, "probs": 0.6}, lambda: D.NegativeBinomial(4.0, 0.6)),
    ("NegativeBinomial", {"total_count": 4.0, "logits": 0.5},
     lambda: D.NegativeBinomial(4.0, logits=torch.tensor(0.5))),
    ("Dirichlet", {"concentration": [2.0, 3.0, 5.0]}, lambda: D.Dirichlet(torch.tensor([2.0, 3.0, 5.0]))),
    ("MultivariateNormal", {"loc": [1.0, -1.0, 0.0], "scale_tril": TRIL},
     lambda: D.MultivariateNormal(torch.tensor([1.0, -1.0, 0.0]), scale_tril=torch.tensor(TRIL))),
]
IDS = [f"{name}-{'-'.join(args)}" for name, args, _ in CASES]
NEW = sorted({name for name, _, _ in CASES})


def _params(args):
    return {k: torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else v for k, v in args.items()}


def _event(name):
    return (3,) if B.DISTRIBUTIONS[name].event_rank else ()


@pytest.mark.parametrize("name, args, reference", CASES, ids=IDS)
def test_log_prob_matches_torch(name, args, reference):
    """Four draws per element (event axes after them): log_prob sums torch's."""
    dist = distributions.make(name, (4,) + _event(name), LIKE, **_params(args))
    ref = reference()
    values = ref.sample((7, 4)).double()
    expected = ref.log_prob(values.float()).double().sum(-1)
    torch.testing.assert_close(dist.log_prob(values), expected, rtol=1e-5, atol=1e-5)
    assert dist.event_shape == (4,) + _event(name)


def _within(draws: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    """Sample mean and variance (per coordinate) within 5 standard errors."""
    draws = draws.double().reshape(len(draws), -1)
    mean, var = mean.double().reshape(-1), var.double().reshape(-1)
    assert torch.all((draws.mean(0) - mean).abs() < 5 * (var / len(draws)).sqrt())
    fourth = ((draws - mean) ** 4).mean(0)
    assert torch.all((draws.var(0) - var).abs() < 5 * ((fourth - var ** 2) / len(draws)).sqrt() + 1e-9)


@pytest.mark.parametrize("name, args, reference", [c for c in CASES if "Cauchy" not in c[0]],
                         ids=[i for i in IDS if "Cauchy" not in i])
def test_samples_match_torch_moments(name, args, reference):
    draws = distributions.sample(distributions.make(name, _event(name), LIKE, **_params(args)), (N,))
    ref = reference()
    if name == "HalfStudentT":    # torch has no moments for |T|: integrate its density
        x = torch.linspace(0, 4000, 4_000_001, dtype=torch.float64)
        density = ref.log_prob(x).exp()
        mean = torch.trapezoid(x * density, x)
        mean_t, var_t = ref.t.mean.double(), ref.t.variance.double()
        var = mean_t ** 2 + var_t - mean ** 2
        made = distributions.make(name, (), LIKE, **_params(args))
        torch.testing.assert_close(made.mean, mean, rtol=1e-4, atol=0)
        torch.testing.assert_close(made.variance, var, rtol=1e-4, atol=0)
    else:
        mean, var = ref.mean, ref.variance
    _within(draws, mean, var)
    if name == "MultivariateNormal":
        cov = torch.cov(draws.T)
        torch.testing.assert_close(cov, ref.covariance_matrix.double(), atol=0.05, rtol=0)


@pytest.mark.parametrize("name, args, reference", [c for c in CASES if "Cauchy" in c[0]],
                         ids=[i for i in IDS if "Cauchy" in i])
def test_heavy_tailed_quartiles_match_torch(name, args, reference):
    """No mean: the share of draws below torch's quartiles is within 5 standard errors."""
    draws = distributions.sample(distributions.make(name, (), LIKE, **_params(args)), (N,))
    ref = reference()
    for p in (0.25, 0.5, 0.75):
        below = float((draws < ref.icdf(torch.tensor(p))).double().mean())
        assert abs(below - p) < 5 * math.sqrt(p * (1 - p) / N)


CONTINUOUS = [c for c in CASES if not B.DISTRIBUTIONS[c[0]].discrete]


@pytest.mark.parametrize("name, args, reference", CONTINUOUS, ids=[c[0] for c in CONTINUOUS])
def test_bijection_to_the_support_round_trips(name, args, reference):
    """What a global is inferred through: biject_to(support) lands in the support and
    inverts (Dirichlet: stick-breaking from K - 1 free coordinates)."""
    dist = distributions.make(name, (2,) + _event(name), LIKE, **_params(args))
    transform = D.biject_to(dist.support)
    free = transform.inverse_shape(dist.event_shape)
    assert free == ((2, 2) if name == "Dirichlet" else dist.event_shape)
    u = torch.randn((5,) + tuple(free), dtype=torch.float64)
    x = transform(u)
    assert bool(dist.support.check(x).all())
    torch.testing.assert_close(transform.inv(x), u, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(dist.log_prob(x)).all()


def test_supports_are_the_documented_ones():
    """Positive, simplex and count supports, as docs/language.md states them."""
    make = distributions.make
    assert make("HalfCauchy", (), LIKE, scale=1.0).support is D.constraints.nonnegative
    assert make("HalfStudentT", (), LIKE, df=3.0, scale=1.0).support is D.constraints.nonnegative
    assert make("Weibull", (), LIKE, scale=1.0, concentration=2.0).support is D.constraints.positive
    assert make("Dirichlet", (3,), LIKE, concentration=1.0).support is D.constraints.simplex
    counts = make("Binomial", (), LIKE, total_count=5, probs=0.5).sample((1000,))
    assert counts.min() >= 0 and counts.max() <= 5 and torch.equal(counts, counts.round())
    assert make("HalfStudentT", (), LIKE, df=3.0, scale=1.0).log_prob(torch.tensor(-1.0)) == -math.inf


def test_scalar_concentration_is_repeated_along_the_event_axis():
    dist = distributions.make("Dirichlet", (2, 4), LIKE, concentration=0.5)
    assert dist.event_shape == (2, 4)
    torch.testing.assert_close(dist.base_dist.concentration, torch.full((2, 4), 0.5, dtype=torch.float64))


def test_every_distribution_is_in_the_documented_table():
    text = (Path(__file__).resolve().parents[1] / "docs" / "language.md").read_text()
    section = text[text.index("## Distributions"):text.index("## Expressions")]
    rows = set(re.findall(r"^\| `(\w+)\(", section, re.M))
    assert rows == set(B.DISTRIBUTIONS)


# ------------------------------------------------------------------ the checker
def _diagnostics(source: str):
    return [d for d in run_frontend(source, path="model.him").diagnostics if d.severity == "error"]


def _errors(source: str) -> list[str]:
    return [f"{d.code} {d.span.line}: {d.message}" for d in _diagnostics(source)]


@pytest.mark.parametrize("lines, expected", [
    ("latent p ~ Dirichlet(1)", r"E0130 3: `Dirichlet` draws a vector"),
    ("latent v ~ MultivariateNormal(0, [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])",
     r"E0130 3: `scale_tril` of `MultivariateNormal` must be a square \[D, D\] matrix"),
    ("latent v ~ MultivariateNormal([0.0, 0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])",
     r"E0130 3: arguments of `MultivariateNormal` do not broadcast"),
    ("latent v ~ MultivariateNormal(0, 1)",
     r"E0130 3: `scale_tril` of `MultivariateNormal` needs a last axis"),
    ("latent k ~ Binomial(10, 0.5)", r"E0111 3: global latent `k` has a discrete prior `Binomial`"),
    ("latent w ~ Normal(0, 1)\nlet h = dense(x, 2, prior = Dirichlet([1.0, 1.0]))",
     r"E0111 4: a layer's weights need a prior of one weight at a time"),
])
def test_checker_rejects_misused_distributions(lines, expected):
    source = f"data x : real\ndata k2 : int\n{lines}\nplate n over x {{\n    observe x ~ Normal(0, 1)\n" \
             "    observe k2 ~ Poisson(1)\n}\n"
    errors = _errors(source)
    assert errors and re.match(expected, errors[0]), errors


def test_dirichlet_local_is_rejected_where_it_is_declared():
    source = """data y : cat(3)
plate n over y {
    latent p ~ Dirichlet([1.0, 1.0, 1.0])
    observe y ~ Categorical(probs = p)
}
"""
    diags = _diagnostics(source)
    assert [(d.code, d.span.line, d.span.column) for d in diags] == [("E0111", 3, 16)]
    assert "simplex" in diags[0].message and "softmax" in diags[0].hint


# ------------------------------------------------------------------ compiled models
EVERY = """
model every
data y : real
data k : int
latent s ~ HalfCauchy(1)
latent m ~ Cauchy(0, 1)
latent t ~ HalfStudentT(3, 1)
latent w ~ Weibull(1, 2)
latent p ~ Dirichlet([1.0, 2.0, 3.0])
latent v ~ MultivariateNormal(0, [[1.0, 0.0], [0.5, 1.0]])
plate n over y {
    latent z ~ MultivariateNormal(v, [[1.0, 0.0], [0.3, 0.5]])
    latent h ~ HalfCauchy(s)
    latent g ~ HalfStudentT(4, t)
    latent r ~ Weibull(w, 1.5)
    noise d ~ Dirichlet(p * 10 + 0.1) [2, 3]
    noise b ~ Binomial(10, p[0])
    noise q ~ NegativeBinomial(2, logits = m / 10)
    observe k = b + q
    observe y ~ Normal(m + sum(z) + h + g + r + sum(d[0]), 1)
}
"""


def test_model_with_every_new_distribution_compiles_and_simulates():
    model = himdsl.load("every.him", source=EVERY)
    data, truth = model.simulate(rows=50, draws=1, seed=1)
    for name in ("s", "t", "w"):
        assert truth[name] > 0
    assert truth["p"].shape == (3,) and abs(truth["p"].sum() - 1) < 1e-5 and truth["p"].min() > 0
    assert truth["v"].shape == (2,) and truth["z"].shape == (50, 2)
    assert (truth["h"] > 0).all() and (truth["g"] >= 0).all() and (truth["r"] > 0).all()
    k = data["k"]
    assert k.shape == (50,) and (k >= 0).all() and np.array_equal(k, np.round(k))
    assert np.isfinite(data["y"]).all()
    module = model.module()
    globals_ = module.sample_globals(8)
    assert torch.isfinite(module.log_prior(globals_)).all()
    assert all(torch.isfinite(module.bijector(n, globals_).inv(globals_[n])).all() for n in globals_)


def test_dirichlet_noise_draws_rows_on_the_simplex():
    model = himdsl.load("every.him", source=EVERY)
    module = model.module()
    out = module.simulate(module.sample_globals(4), rows=6)
    d = out["d"]
    assert d.shape == (4, 6, 2, 3) and torch.allclose(d.sum(-1), torch.ones(4, 6, 2)) and (d > 0).all()
    assert set(out["b"].unique().tolist()) <= set(range(11))


def test_local_guide_coordinates_keep_each_local_in_its_support():
    """The Gaussian local guide works in each prior's coordinates: any v maps into the
    support (positive for HalfCauchy, HalfStudentT, Weibull) and back; an MVN local is
    centred on its prior's mean and scaled by its sds."""
    model = himdsl.load("every.him", source=EVERY)
    data, _ = model.simulate(rows=30, seed=2)
    module = model.module()
    view = ModelView(module, data)
    globals_ = module.sample_globals(4)
    rows = view.rows(torch.arange(30))
    coords = coordinates_at(view, ("z", "h", "g", "r"), globals_, rows)
    v = 3 * torch.randn(4, 30, view.z_dim)
    z, _ = coords.forward(v)
    locals_ = view.z_unflat(z)
    assert all((locals_[n] > 0).all() for n in ("h", "g", "r"))
    torch.testing.assert_close(coords.inverse(z)[0], v, rtol=1e-4, atol=1e-4)
    prior = view.local_priors(globals_, rows)["z"]
    zero, _ = coords.forward(torch.zeros_like(v))
    torch.testing.assert_close(view.z_unflat(zero)["z"], prior.mean.expand(4, 30, 2))


# ------------------------------------------------------------------ short fits
HALF_CAUCHY = """
model halfcauchy
data y : real
latent mu ~ Normal(0, 5)
latent tau ~ HalfCauchy(1)
plate n over y {
    latent z ~ Normal(mu, tau)
    latent e ~ HalfCauchy(1)
    observe y ~ Normal(z, 0.5 + e)
}
"""

DIRICHLET = """
model dirichlet
data c : cat(3)
latent p ~ Dirichlet([1.0, 1.0, 1.0])
plate n over c {
    observe c ~ Categorical(probs = p)
}
"""


def test_fit_takes_a_half_cauchy_scale_global_and_local():
    rng = np.random.default_rng(0)
    y = (2.0 + 0.8 * rng.standard_normal(100) + 0.5 * rng.standard_normal(100)).astype(np.float32)
    module = himdsl.load("halfcauchy.him", source=HALF_CAUCHY).module()
    result = fit(module, {"y": y}, FitSettings(steps=600, batch=50, particles=4, lr=0.05, seed=0))
    assert result.plan.method == "vi"
    draws = result.posterior(500)
    assert all(np.isfinite(v).all() for v in draws.values())
    assert (draws["tau"] > 0).all()
    assert abs(draws["mu"].mean() - y.mean()) < 0.5
    locals_ = result.locals({"y": torch.as_tensor(y)}, draws=16)
    assert all(np.isfinite(v).all() for v in locals_.values())
    assert (locals_["e_mean"] > 0).all()


def test_fit_takes_a_dirichlet_global_and_finds_the_exact_posterior():
    """Dirichlet(1, 1, 1) prior, 200 labels: the posterior is Dirichlet(1 + counts)."""
    rng = np.random.default_rng(1)
    c = rng.choice(3, size=200, p=[0.2, 0.3, 0.5])
    module = himdsl.load("dirichlet.him", source=DIRICHLET).module()
    result = fit(module, {"c": c}, FitSettings(steps=300, particles=8, lr=0.05, seed=0))
    assert result.plan.method == "vi"
    p = result.posterior(2000)["p"]
    assert p.shape == (2000, 3) and np.isfinite(p).all() and (p > 0).all()
    assert np.allclose(p.sum(-1), 1, atol=1e-5)
    exact = D.Dirichlet(torch.tensor(1.0 + np.bincount(c, minlength=3), dtype=torch.float64))
    assert np.all(np.abs(p.mean(0) - exact.mean.numpy()) < 0.02)
    assert np.all(np.abs(p.std(0) - exact.stddev.numpy()) < 0.5 * exact.stddev.numpy())


def test_samplers_at_a_priors_extremes_fail_per_element_or_stay_right():
    """torch's Poisson sampler raises on a NaN rate and returns -9.2e18 above ~1e19;
    a NaN Bernoulli probability raises. Such elements come back NaN (a failed
    simulation), huge rates draw round(rate + √rate ε), valid ones are untouched."""
    rate = torch.tensor([float("nan"), -1.0, 3.0, 1e30])
    draw = distributions.sample(D.Poisson(rate, validate_args=False), (4,))
    assert torch.isnan(draw[:2]).all() and draw[2] >= 0 and draw[2] == draw[2].round()
    assert draw[3] == pytest.approx(1e30, rel=1e-6)
    big = distributions.sample(D.Poisson(torch.full((N,), 1e14, dtype=torch.float64),
                                         validate_args=False), (N,))
    assert (big.mean().item() - 1e14) / 1e7 == pytest.approx(0.0, abs=0.02)   # the mean's sd: 0.005
    assert big.std().item() / 1e7 == pytest.approx(1.0, rel=0.05)
    p = torch.tensor([float("nan"), 0.5, 1.5])
    flips = distributions.sample(D.Bernoulli(probs=p, validate_args=False), (3,))
    assert torch.isnan(flips[[0, 2]]).all() and flips[1] in (0.0, 1.0)


def test_continuous_samplers_fail_an_element_whose_parameter_breaks_its_constraint():
    """A Student-t df of 0 (a Gamma prior's draw underflowed) made torch's inner Chi2
    raise and stopped a robust regression's fit; a zero or negative scale drew a
    value of a distribution that does not exist. Those elements come back NaN (a
    failed simulation); valid parameters draw exactly what torch draws."""
    like = torch.zeros(())
    df = torch.tensor([0.0, -1.0, float("nan"), 3.0])
    torch.manual_seed(0)
    draw = distributions.sample(distributions.make("StudentT", (4,), like, df=df, loc=0.0, scale=1.0), ())
    assert torch.isnan(draw[:3]).all() and torch.isfinite(draw[3])
    torch.manual_seed(0)
    before = D.StudentT(torch.full((4,), 3.0), 0.0, 1.0, validate_args=False).rsample()
    torch.manual_seed(0)
    valid = distributions.sample(distributions.make("StudentT", (4,), like, df=torch.full((4,), 3.0),
                                                    loc=0.0, scale=1.0), ())
    assert torch.equal(valid, before)
    scale = torch.tensor([1.0, 0.0, -2.0])
    for name, params in (("Normal", {"loc": 0.0}), ("HalfStudentT", {"df": 2.0}), ("LogNormal", {"loc": 0.0})):
        draw = distributions.sample(distributions.make(name, (3,), like, scale=scale, **params), (5,))
        assert torch.isfinite(draw[:, 0]).all() and torch.isnan(draw[:, 1:]).all(), name
    beta = distributions.sample(distributions.make("Beta", (2,), like, a=torch.tensor([0.0, 2.0]), b=1.0), ())
    assert torch.isnan(beta[0]) and 0 < beta[1] < 1
    probs = torch.tensor([float("nan"), 1.5, 0.3])
    for name in ("Binomial", "NegativeBinomial"):         # torch's raised on 1.5: "invalid Poisson rate"
        counts = distributions.sample(distributions.make(name, (3,), like, total_count=5.0, probs=probs), ())
        assert torch.isnan(counts[:2]).all() and counts[2] >= 0 and counts[2] == counts[2].round(), name
