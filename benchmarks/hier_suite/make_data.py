"""Data sets of the hierarchical suite: `<name>/data.npz` and `<name>/truth.json`.

    python benchmarks/hier_suite/make_data.py [names...]

Written in numpy (not `himdsl simulate`) so that the data do not move when the
compiler's or runtime's random streams change; each generator draws from the
model's own generative process at fixed true globals, with its own seed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SUITE = Path(__file__).resolve().parent


def eight_schools(rng: np.random.Generator) -> tuple[dict, dict]:
    """Rubin's (1981) observed effects: real data, so there are no true values."""
    data = {"y": np.array([28, 8, -3, 7, -1, 1, 18, 12], dtype=np.float64),
            "sigma": np.array([15, 10, 16, 11, 9, 11, 10, 18], dtype=np.float64)}
    return data, {}


def schools_1000(rng: np.random.Generator, n: int = 1000, mu: float = 3.0, tau: float = 4.0):
    """Standard errors above tau, so each school is weakly informed."""
    sigma = rng.uniform(5.0, 20.0, n)
    theta = rng.normal(mu, tau, n)
    return {"y": theta + sigma * rng.normal(size=n), "sigma": sigma}, {"mu": mu, "tau": tau}


def schools_covariate(rng: np.random.Generator, n: int = 500, pupils: int = 8,
                      mu: float = 3.3, b: float = 1.5, tau: float = 2.0, sigma: float = 1.2):
    """Standard normal school covariate; pupils scatter around the school mean."""
    ses = rng.normal(size=n)
    theta = rng.normal(mu + b * ses, tau)
    y = theta[:, None] + sigma * rng.normal(size=(n, pupils))
    return {"ses": ses, "y": y}, {"mu": mu, "b": b, "tau": tau, "sigma": sigma}


def hier_logistic(rng: np.random.Generator, groups: int = 50, trials: int = 20,
                  mu: float = 0.5, sigma: float = 0.8, b: float = 1.2):
    """Bernoulli outcomes stored as 0.0/1.0 reals, the dtype of the model's comparison."""
    x = rng.normal(size=(groups, trials))
    a = rng.normal(mu, sigma, groups)
    y = (rng.uniform(size=(groups, trials)) < _sigmoid(a[:, None] + b * x)).astype(np.float64)
    return {"x": x, "y": y}, {"mu": mu, "sigma": sigma, "b": b}


def poisson_re(rng: np.random.Generator, groups: int = 100, mu: float = 1.0, sigma: float = 0.6):
    """Exposures in [0.5, 2]: counts of a few units up to a few dozen."""
    exposure = rng.uniform(0.5, 2.0, groups)
    v = rng.normal(size=groups)
    y = rng.poisson(exposure * np.exp(mu + sigma * v)).astype(np.int64)
    return {"exposure": exposure, "y": y}, {"mu": mu, "sigma": sigma}


def student_t(rng: np.random.Generator, groups: int = 100, per_group: int = 5,
              mu: float = 2.0, tau: float = 1.5, s: float = 1.0):
    """Student-t(4) measurement noise: occasional outliers in every group."""
    theta = rng.normal(mu, tau, groups)
    y = theta[:, None] + s * rng.standard_t(4, size=(groups, per_group))
    return {"y": y}, {"mu": mu, "tau": tau, "s": s}


def extern_plate(rng: np.random.Generator, groups: int = 100, mu: float = -0.5, sigma: float = 0.8):
    """10 to 40 trials per group; the same Binomial law as sim.binomial_count."""
    n = rng.integers(10, 41, groups).astype(np.int64)
    a = rng.normal(mu, sigma, groups)
    y = rng.binomial(n, _sigmoid(a)).astype(np.int64)
    return {"n": n, "y": y}, {"mu": mu, "sigma": sigma}


def site_counts(rng: np.random.Generator, sites: int = 200, visits: int = 4,
                mu: float = 1.5, tau: float = 0.6, phi: float = 5.0):
    """Gamma-Poisson counts: a frailty per visit, Gamma(phi, phi) with mean 1."""
    a = rng.normal(mu, tau, sites)
    frailty = rng.gamma(phi, 1.0 / phi, size=(sites, visits))
    y = rng.poisson(np.exp(a)[:, None] * frailty).astype(np.int64)
    return {"y": y}, {"mu": mu, "tau": tau, "phi": phi}


def hier_linreg(rng: np.random.Generator, groups: int = 100, rows: int = 8, mu_a: float = 2.0,
                mu_b: float = -1.0, tau_a: float = 1.0, tau_b: float = 0.5, sigma: float = 0.3):
    """A standard normal covariate per row; an intercept and a slope per group."""
    x = rng.normal(size=(groups, rows))
    a = rng.normal(mu_a, tau_a, groups)
    b = rng.normal(mu_b, tau_b, groups)
    y = a[:, None] + b[:, None] * x + sigma * rng.normal(size=(groups, rows))
    return {"x": x, "y": y}, {"mu_a": mu_a, "mu_b": mu_b, "tau_a": tau_a, "tau_b": tau_b, "sigma": sigma}


def location_scale(rng: np.random.Generator, n: int = 150, mu: float = 1.3, sigma: float = 2.1):
    """Normal rows around a location: the first model many users write."""
    return {"y": mu + sigma * rng.normal(size=n)}, {"mu": mu, "sigma": sigma}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# name -> (generator, seed); a seed per model keeps one data set independent of the others.
GENERATORS = {f.__name__: (f, seed) for seed, f in enumerate(
    (eight_schools, schools_1000, schools_covariate, hier_logistic, poisson_re, student_t,
     extern_plate, site_counts, hier_linreg, location_scale), start=20261)}


def write(name: str) -> None:
    """Write one model's data.npz and truth.json."""
    generator, seed = GENERATORS[name]
    data, truth = generator(np.random.default_rng(seed))
    folder = SUITE / name
    np.savez(folder / "data.npz", **data)
    rows = len(next(iter(data.values())))
    record = {"N": rows, "seed": seed, "generator": f"make_data.py:{name}", "true_globals": truth or None}
    if not truth:
        record["note"] = "observed data (Rubin 1981); no true values"
    (folder / "truth.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{name}: N = {rows}, {', '.join(f'{k} {v.shape}' for k, v in data.items())}")


if __name__ == "__main__":
    for model in sys.argv[1:] or GENERATORS:
        write(model)
