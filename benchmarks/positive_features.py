"""Positive observations on the log or as they are: two models with a closed-form
posterior, fitted with the defaults and with `log_positive = False`.

    python benchmarks/positive_features.py [--seeds 1,2] [--steps 500]

Both models observe five positive values spanning two orders of magnitude given
two globals θ ~ Normal(0, 1):

* `lognormal`: x_k = exp(a_k + θ_0 + b_k θ_1 + 0.1 ε_k), a multiplicative noise;
* `softplus`: x_k = softplus(a_k + θ_0 + b_k θ_1 + 0.3 ε_k), values near zero whose
  noise acts inside the softplus.

An invertible map of each x_k takes either model to y = A θ + σ ε, so the exact
posterior is Gaussian (for the data each seed draws at a θ from the prior). The
plan puts either model's x on the log (every value is positive); the script
scores both encodings: each global's mean error in exact posterior sds and sd
ratio, per seed, one fit at a time, torch on one thread.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import himdsl  # noqa: E402
from benchmarks.metrics import marginal_scores  # noqa: E402
from himdsl.infer import FitSettings, fit  # noqa: E402

OFFSETS = np.array([-2.0, -1.0, 0.0, 2.0, 3.5])
SLOPES = np.array([0.0, 0.5, 1.0, -0.5, 0.3])
# name: (the function of the linear predictor, its inverse, the noise sd)
MODELS = {
    "lognormal": ("exp", np.exp, np.log, 0.1),
    "softplus": ("softplus", lambda v: np.logaddexp(0.0, v), lambda x: np.log(np.expm1(x)), 0.3),
}
DRAWS = 8000


def source(name: str) -> str:
    function, _, _, sd = MODELS[name]
    return (f"model {name}_noise\ndata x : real[5]\nlatent theta ~ Normal(0, 1) [2]\n"
            f"noise eps ~ Normal(0, 1) [5]\n"
            f"observe x = {function}({OFFSETS.tolist()} + theta[0] + {SLOPES.tolist()} * theta[1] + {sd} * eps)\n")


def data_and_posterior(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Data drawn at a θ from the prior, and the exact posterior's mean and covariance."""
    _, forward, inverse, sd = MODELS[name]
    rng = np.random.default_rng(seed)
    design = np.stack([np.ones(5), SLOPES], 1)
    x = forward(OFFSETS + design @ rng.normal(size=2) + sd * rng.normal(size=5))
    cov = np.linalg.inv(np.eye(2) + design.T @ design / sd ** 2)
    return x, cov @ (design.T @ (inverse(x) - OFFSETS) / sd ** 2), cov


def run(name: str, seed: int, steps: int, log_positive: bool) -> dict:
    x, mean, cov = data_and_posterior(name, seed)
    module = himdsl.load(f"{name}.him", source=source(name)).module()
    start = time.perf_counter()
    result = fit(module, {"x": x}, FitSettings(steps=steps, seed=seed, log_positive=log_positive))
    draws = np.asarray(result.posterior(DRAWS)["theta"])
    reference = np.random.default_rng(seed).multivariate_normal(mean, cov, DRAWS)
    error = (draws.mean(0) - mean) / np.sqrt(np.diag(cov))
    _, ratio = marginal_scores(draws, reference)
    return {"model": name, "seed": seed, "log": log_positive, "error": error, "sd_ratio": ratio,
            "encoding": dict(result.plan.encodings)["x"], "seconds": time.perf_counter() - start,
            "checks_ok": result.verdict.ok if result.verdict else None}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--steps", type=int, default=500)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("| model | seed | x reaches the networks | mean error (sd) | sd ratio | checks | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name in MODELS:
        for seed in (int(s) for s in args.seeds.split(",")):
            for log_positive in (True, False):
                r = run(name, seed, args.steps, log_positive)
                print(f"| {name} | {seed} | {'on the log' if r['encoding'] == 'log' else 'as it is'} | "
                      f"{', '.join(f'{v:+.3f}' for v in r['error'])} | "
                      f"{', '.join(f'{v:.3f}' for v in r['sd_ratio'])} | "
                      f"{'passed' if r['checks_ok'] else 'failed'} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
