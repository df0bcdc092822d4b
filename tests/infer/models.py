"""The known-answer models, compiled from `.him` sources, with their data sets and
exact (or reference) posteriors.

    model = hier_gauss()                              # the compiled examples/hier_gauss
    data, truth = hier_gauss_data(n=1000, seed=1)     # {"x": [1000, 2]}, exact moments
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.distributions import Normal

import himdsl

ROOT = Path(__file__).resolve().parents[2]
SBIBM = ROOT / "benchmarks" / "sbibm"
HIER_SUITE = ROOT / "benchmarks" / "hier_suite"


# x_n = mu + s ε_n: a plate whose two globals the ratio reads (test_identity, test_centring)
LOCATION_SCALE = """
model location_scale
data x : real
latent mu ~ Normal(0, 1)
latent s ~ LogNormal(0, 0.3)
plate n over x {
    noise e ~ Normal(0, 1)
    observe x = mu + s * e
}
"""


def compiled(path_or_name: str, source: str | None = None):
    """A fresh module compiled from an example (`hier_gauss`) or from `source`."""
    if source is not None:
        return himdsl.load(path_or_name, source=source).module()
    return himdsl.load(str(ROOT / "examples" / path_or_name / "model.him")).module()


def hier_gauss():
    """β ~ N(0, I₂); z_n ~ N(β, I₂); x_n = z_n + 0.5 ε_n (examples/hier_gauss)."""
    return compiled("hier_gauss")


def linear_regression():
    """w ~ N(0, I₃); covariates f_n; y_n = f_n · w + 0.5 ε_n (examples/linear_regression)."""
    return compiled("linear_regression")


EXPLICIT_LINREG = """
model linreg_explicit
data f : real[3]
data y : real
latent w ~ Normal(0, 1) [3]
plate n over y {
    observe y ~ Normal(sum(f * w), 0.5)
}
"""


def explicit_linear_regression():
    """The linear regression with its likelihood written explicitly: exact VI."""
    return compiled("linreg_explicit.him", EXPLICIT_LINREG)


def two_moons():
    return compiled("two_moons")


def gaussian_linear():
    return compiled("gaussian_linear")


def hier_gauss_data(n: int = 1000, seed: int = 1) -> tuple[dict, dict]:
    """Data and the exact posterior: beta mean/sd, z mean/sd per row."""
    gen = torch.Generator().manual_seed(seed)
    beta = torch.randn(2, generator=gen)
    x = beta + torch.randn(n, 2, generator=gen) + 0.5 * torch.randn(n, 2, generator=gen)
    post_var = 1.25 / (1.25 + n)
    beta_mean = x.sum(0) / (1.25 + n)
    z_mean = (beta_mean + 4 * x) / 5
    z_sd = math.sqrt(0.2 + post_var / 25) * torch.ones(n, 2)
    return {"x": x}, {"beta_mean": beta_mean.numpy(), "beta_sd": np.full(2, math.sqrt(post_var)),
                      "z_mean": z_mean.numpy(), "z_sd": z_sd.numpy()}


def linreg_data(n: int = 500, seed: int = 2) -> tuple[dict, dict]:
    """Data (true w = (1, −0.5, 0.25)) and the exact posterior mean/sd of w."""
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    w = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    y = f @ w + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    cov = torch.linalg.inv(torch.eye(3, dtype=torch.float64) + f.T @ f / 0.25)
    mean = cov @ f.T @ y / 0.25
    return ({"f": f.float(), "y": y.float()},
            {"w_mean": mean.numpy(), "w_sd": cov.diagonal().sqrt().numpy(), "w_cov": cov.numpy()})


def sbibm_task(task: str, observation: int = 1) -> tuple[dict, np.ndarray]:
    """An sbibm observation and its 10,000 reference posterior draws (benchmarks/sbibm)."""
    with np.load(SBIBM / task / f"obs{observation}.npz") as files:
        return {"x": torch.tensor(files["x"], dtype=torch.float32)}, files["reference"].astype(np.float64)


def hier_model(name: str):
    """A model of the hierarchical suite (benchmarks/hier_suite/NAME/model.him)."""
    return himdsl.load(str(HIER_SUITE / name / "model.him")).module()


def hier_case(name: str) -> tuple[dict, dict]:
    """Its data and NUTS reference (globals' draws, locals' means and sds)."""
    return dict(np.load(HIER_SUITE / name / "data.npz")), dict(np.load(HIER_SUITE / name / "reference.npz"))


# ---------------------------------------------------------------- point parameters
# A likelihood 0.1 wide under a prior 20 wide: a sliver of the prior's units.
NARROW = """
model narrow
data x : real[2]
latent theta ~ Uniform(-10, 10) [2]
noise eps ~ Normal(0, 1) [2]
observe x = theta + 0.1 * eps
"""


POINT_SOURCE = """
model point_regression
data f : real
data y : real
param a : real
param b : real
plate n over y {
    noise e ~ Normal(0, 1)
    observe y = a * f + b + 0.5 * e
}
"""


def point_regression():
    """No globals; point parameters a, b: y_n = a f_n + b + 0.5 ε_n."""
    return compiled("point_regression.him", POINT_SOURCE)


def point_regression_data(n: int = 500, seed: int = 3, a: float = 1.5, b: float = -0.7):
    """Data with known parameters a, b."""
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(n, generator=gen)
    return {"f": f, "y": a * f + b + 0.5 * torch.randn(n, generator=gen)}


# ---------------------------------------------------------------- probit via noise
PROBIT_SOURCE = """
model probit
data x : real
data y : cat(2)
latent a ~ Normal(0, 2)
latent b ~ Normal(0, 2)
plate n over y {
    noise e ~ Normal(0, 1)
    let f = a * x + b + e
    observe y = argmax(stack(0.0, f))
}
"""


def probit_module():
    """y_n = [a x_n + b + e_n > 0], e_n ~ N(0, 1): probit regression written as a
    simulator (compiled from `PROBIT_SOURCE`; its prediction is f at e = 0)."""
    return compiled("probit.him", PROBIT_SOURCE)


def probit_data(n: int = 500, seed: int = 0, a: float = 1.5, b: float = -0.5):
    """Data and the exact posterior moments of (a, b), by quadrature on a 400 × 400
    grid spanning ±6 posterior sds (p(y = 1 | x) = Φ(a x + b))."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).astype(np.float32)
    y = (a * x + b + rng.normal(size=n) > 0).astype(np.int64)
    ga, gb = torch.meshgrid(torch.linspace(0.5, 2.8, 400, dtype=torch.float64),
                            torch.linspace(-1.4, 0.4, 400, dtype=torch.float64), indexing="ij")
    f = ga[..., None] * torch.as_tensor(x, dtype=torch.float64) + gb[..., None]
    sign = torch.as_tensor(2 * y - 1, dtype=torch.float64)
    log_post = torch.special.log_ndtr(sign * f).sum(-1) + Normal(0.0, 2.0).log_prob(ga) + \
        Normal(0.0, 2.0).log_prob(gb)
    w = torch.softmax(log_post.flatten(), 0).reshape(log_post.shape)
    mean = torch.stack([(w * ga).sum(), (w * gb).sum()])
    sd = torch.stack([(w * (ga - mean[0]) ** 2).sum().sqrt(), (w * (gb - mean[1]) ** 2).sum().sqrt()])
    return {"x": x, "y": y}, {"mean": mean.numpy(), "sd": sd.numpy()}


# K values per row, each mu + its own noise around the row's theta:
# theta_n ~ N(mu, 1), y_nk = theta_n + e_nk, e ~ N(0, 1), mu ~ N(0, 1).
REPEATED = """
model repeated
const K = 8
data y : real[K]
latent mu ~ Normal(0, 1)
plate n over y {
    latent theta ~ Normal(mu, 1)
    noise e ~ Normal(0, 1) [K]
    observe y = theta + e
}
"""


def repeated():
    """Rows of K = 8 values, independent given the row's theta (the ratio's values)."""
    return compiled("repeated.him", REPEATED)


def repeated_data(n: int = 100, k: int = 8, seed: int = 2) -> tuple[dict, dict]:
    """Data and the exact posterior. The row means ȳ_n ~ N(mu, v), v = 1 + 1/K, so
    mu | y ~ N((Σ ȳ / v) / (1 + N / v), 1 / (1 + N / v)); theta_n | mu, y ~
    N((mu + K ȳ_n) / (1 + K), 1 / (1 + K)), whose marginal adds mu's variance / (1 + K)²."""
    gen = np.random.default_rng(seed)
    mu = gen.normal()
    theta = mu + gen.normal(size=n)
    y = (theta[:, None] + gen.normal(size=(n, k))).astype(np.float32)
    ybar, v = y.astype(np.float64).mean(1), 1 + 1 / k
    precision = 1 + n / v
    mu_mean, mu_var = (ybar.sum() / v) / precision, 1 / precision
    theta_mean = (mu_mean + k * ybar) / (1 + k)
    theta_sd = np.sqrt(1 / (1 + k) + mu_var / (1 + k) ** 2) * np.ones(n)
    return {"y": y}, {"mu_mean": mu_mean, "mu_sd": math.sqrt(mu_var),
                      "theta_mean": theta_mean, "theta_sd": theta_sd}


# benchmarks/hier_suite/student_t with its likelihood written as a density, so that
# VI with the exact likelihood fits it (the suite's NUTS reference is for this model)
STUDENT_T_EXPLICIT = """
model student_t_explicit
const M = 5
data y : real[M]
latent mu ~ Normal(0, 5)
latent tau ~ HalfNormal(5)
latent s ~ HalfNormal(2)
plate g over y {
    latent theta ~ Normal(mu, tau)
    observe y ~ StudentT(4, theta, s) [M]
}
"""


def student_t_explicit():
    return compiled("student_t_explicit.him", STUDENT_T_EXPLICIT)


WIDE_PRIOR = """
model wide_prior
data y : real
latent mu ~ Normal(0, 100)
latent s ~ HalfNormal(20)
plate n over y {
    observe y ~ Normal(mu, s)
}
"""


def wide_prior():
    """A location 1.7 prior sds from the prior's centre, a scale 2 sds below it."""
    return compiled("wide_prior.him", WIDE_PRIOR)


def wide_prior_data(n: int = 200, seed: int = 0) -> tuple[dict, dict]:
    """y ~ N(170, 10²) and the exact posterior moments of mu and s, from a 2-D grid."""
    y = 170.0 + 10.0 * np.random.default_rng(seed).standard_normal(n)
    mu = np.linspace(y.mean() - 8, y.mean() + 8, 801)[:, None]
    s = np.linspace(6.0, 16.0, 801)[None, :]
    resid = ((y[:, None, None] - mu[None]) ** 2).sum(0)
    log_post = (-0.5 * (mu / 100) ** 2 - 0.5 * (s / 20) ** 2
                - n * np.log(s) - 0.5 * resid / s ** 2)
    w = np.exp(log_post - log_post.max())
    w /= w.sum()
    moments = {}
    for name, grid in (("mu", mu), ("s", s)):
        mean = float((w * grid).sum())
        moments[name] = (mean, float(np.sqrt((w * (grid - mean) ** 2).sum())))
    return {"y": y.astype(np.float32)}, moments


# y_n ~ N(mu, 1), mu ~ N(0, 1): p(mu | y) = N(sum y / (N + 1), 1 / (N + 1)), and
# y ~ N(0, I + 1 1^T) marginally; every density known (method vi).
NORMAL_MEAN = """
model normal_mean
data y : real
latent mu ~ Normal(0, 1)
plate n over y {
    observe y ~ Normal(mu, 1)
}
"""
