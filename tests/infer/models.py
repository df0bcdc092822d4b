"""Hand-written `HimModule`s of the known-answer models, shaped like compiler output,
with their data sets and exact posteriors.

    model = HierGauss()
    data, truth = hier_gauss_data(n=1000, seed=1)   # {"x": [1000, 2]}, exact moments
"""
from __future__ import annotations

import bz2
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributions import Independent, Normal, Uniform

from himdsl.runtime.model import HimModule, NodeInfo

SBIBM = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "sbibm"
if not SBIBM.exists():
    SBIBM = Path("/work/shared/benchmarks/sbibm")


class _Base(HimModule):
    """Priors from `_prior_dists`; `simulate` and the densities written by hand."""

    def _prior(self, name, globals):
        return self._prior_dists(globals)[name]

    def _prior_dists(self, globals):
        return {}

    def _zeros(self, *shape):
        return torch.zeros(shape, device=self._anchor.device)


class HierGauss(_Base):
    """β ~ N(0, I₂); z_n ~ N(β, I₂); x_n = z_n + 0.5 ε_n."""

    model_name = "hier_gauss"
    nodes = {"beta": NodeInfo("beta", "global", (2,)),
             "z": NodeInfo("z", "local", (2,), plate="n"),
             "x": NodeInfo("x", "observed", (2,), plate="n")}
    global_names, local_names, observed_names = ("beta",), ("z",), ("x",)
    plate, explicit = "n", True

    def _prior_dists(self, globals):
        return {"beta": Independent(Normal(self._zeros(2), 1.0), 1)}

    def simulate(self, globals, covariates=None, rows=None):
        beta = globals["beta"][:, None, :]
        z = beta + torch.randn(beta.shape[0], rows, 2, device=beta.device)
        return {"z": z, "x": z + 0.5 * torch.randn_like(z)}

    def log_local_prior(self, globals, locals, covariates=None):
        return Normal(globals["beta"][:, None, :], 1.0).log_prob(locals["z"]).sum(-1)

    def log_likelihood(self, globals, locals, data):
        return Normal(locals["z"], 0.5).log_prob(data["x"]).sum(-1)


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


class LinReg(_Base):
    """w ~ N(0, I₃); covariates f_n; y_n = f_n · w + 0.5 ε_n."""

    model_name = "linreg"
    nodes = {"w": NodeInfo("w", "global", (3,)),
             "f": NodeInfo("f", "covariate", (3,), plate="n"),
             "y": NodeInfo("y", "observed", (), plate="n")}
    global_names, observed_names, covariate_names = ("w",), ("y",), ("f",)
    plate, explicit = "n", True

    def _prior_dists(self, globals):
        return {"w": Independent(Normal(self._zeros(3), 1.0), 1)}

    def _mean(self, globals, f):
        return (f * globals["w"][:, None, :]).sum(-1)

    def simulate(self, globals, covariates=None, rows=None):
        mean = self._mean(globals, covariates["f"])
        return {"y": mean + 0.5 * torch.randn_like(mean)}

    def log_local_prior(self, globals, locals, covariates=None):
        return self._zeros(1, 1)

    def log_likelihood(self, globals, locals, data):
        return Normal(self._mean(globals, data["f"]), 0.5).log_prob(data["y"])


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


class TwoMoons(_Base):
    """sbibm two_moons: θ ~ U(−1, 1)²; x = moon + (−|θ0 + θ1|/√2, (−θ0 + θ1)/√2)."""

    model_name = "two_moons"
    nodes = {"theta": NodeInfo("theta", "global", (2,)),
             "x": NodeInfo("x", "observed", (2,))}
    global_names, observed_names = ("theta",), ("x",)

    def _prior_dists(self, globals):
        return {"theta": Independent(Uniform(self._zeros(2) - 1, self._zeros(2) + 1), 1)}

    def simulate(self, globals, covariates=None, rows=None):
        theta = globals["theta"]
        s = theta.shape[0]
        a = (torch.rand(s, device=theta.device) - 0.5) * math.pi
        r = 0.1 + 0.01 * torch.randn(s, device=theta.device)
        p = torch.stack([r * torch.cos(a) + 0.25, r * torch.sin(a)], -1)
        shift = torch.stack([-(theta[:, 0] + theta[:, 1]).abs() / math.sqrt(2),
                             (-theta[:, 0] + theta[:, 1]) / math.sqrt(2)], -1)
        return {"x": p + shift}


class GaussianLinear(_Base):
    """sbibm gaussian_linear: θ ~ N(0, 0.1 I₁₀); x ~ N(θ, 0.1 I₁₀)."""

    model_name = "gaussian_linear"
    nodes = {"theta": NodeInfo("theta", "global", (10,)),
             "x": NodeInfo("x", "observed", (10,))}
    global_names, observed_names = ("theta",), ("x",)
    explicit = True

    def _prior_dists(self, globals):
        return {"theta": Independent(Normal(self._zeros(10), math.sqrt(0.1)), 1)}

    def simulate(self, globals, covariates=None, rows=None):
        theta = globals["theta"]
        return {"x": theta + math.sqrt(0.1) * torch.randn_like(theta)}

    def log_local_prior(self, globals, locals, covariates=None):
        return self._zeros(1)

    def log_likelihood(self, globals, locals, data):
        return Normal(globals["theta"], math.sqrt(0.1)).log_prob(data["x"]).sum(-1)


class PointRegression(_Base):
    """No globals; point parameters a, b: y_n = a f_n + b + 0.5 ε_n."""

    model_name = "point_regression"
    nodes = {"f": NodeInfo("f", "covariate", (), plate="n"),
             "y": NodeInfo("y", "observed", (), plate="n"),
             "a": NodeInfo("a", "param", ()), "b": NodeInfo("b", "param", ())}
    observed_names, covariate_names = ("y",), ("f",)
    plate = "n"

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.zeros(()))

    def simulate(self, globals, covariates=None, rows=None):
        mean = self.a * covariates["f"] + self.b          # [M]: no globals, no S axis
        return {"y": mean + 0.5 * torch.randn_like(mean)}


def point_regression_data(n: int = 500, seed: int = 3, a: float = 1.5, b: float = -0.7):
    """Data with known parameters a, b."""
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(n, generator=gen)
    return {"f": f, "y": a * f + b + 0.5 * torch.randn(n, generator=gen)}


def sbibm_task(task: str) -> tuple[dict, np.ndarray]:
    """Observation 1 and the 10,000 reference posterior draws of an sbibm task."""
    folder = SBIBM / task
    obs = np.loadtxt(folder / "observation.csv", delimiter=",", skiprows=1, ndmin=1)
    with bz2.open(folder / "reference_posterior_samples.csv.bz2", "rt") as fh:
        ref = np.loadtxt(fh, delimiter=",", skiprows=1)
    return {"x": torch.tensor(obs, dtype=torch.float32)}, ref


def c2st(draws: np.ndarray, reference: np.ndarray, seed: int = 1, folds: int = 5) -> float:
    """Classifier two-sample test accuracy as sbibm computes it (0.5 is perfect)."""
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    mean, sd = reference.mean(0), reference.std(0, ddof=1)
    x = np.concatenate([(reference - mean) / sd, (draws - mean) / sd])
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(draws))])
    dim = x.shape[1]
    clf = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * dim, 10 * dim),
                        max_iter=10000, solver="adam", random_state=seed)
    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, x, y, cv=cv, scoring="accuracy").mean())


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
    import himdsl
    return himdsl.load("probit.him", source=PROBIT_SOURCE).module()


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
