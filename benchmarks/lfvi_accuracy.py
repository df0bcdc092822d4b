"""Full-size accuracy of himdsl.infer on the known-answer models (docs/accuracy.md).

    python benchmarks/lfvi_accuracy.py [hier_gauss linreg two_moons gaussian_linear point] [--seed N]

Prints one JSON line per model: the errors the targets are stated in, and seconds.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from himdsl.infer import FitSettings, fit  # noqa: E402
from tests.infer import models  # noqa: E402


def _globals_errors(draws: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> dict:
    return {"mean_error_in_sd": np.round((draws.mean(0) - mean) / sd, 3).tolist(),
            "sd_ratio": np.round(draws.std(0) / sd, 3).tolist()}


def hier_gauss(settings: FitSettings) -> dict:
    """Conjugate hierarchical Gaussian, N = 1,000: globals and locals vs exact."""
    data, truth = models.hier_gauss_data()
    result = fit(models.HierGauss(), data, settings)
    out = _globals_errors(result.posterior(10_000)["beta"], truth["beta_mean"], truth["beta_sd"])
    local = result.locals(data)
    out["z_mean_rmse"] = round(float(np.sqrt(((local["z_mean"] - truth["z_mean"]) ** 2).mean())), 4)
    out["z_sd_ratio"] = np.round(local["z_sd"].mean(0) / truth["z_sd"][0], 3).tolist()
    return out


def linreg(settings: FitSettings) -> dict:
    """Bayesian linear regression, N = 500, w = (1, −0.5, 0.25)."""
    data, truth = models.linreg_data()
    result = fit(models.LinReg(), data, settings)
    return _globals_errors(result.posterior(10_000)["w"], truth["w_mean"], truth["w_sd"])


def _sbibm(task: str, model, settings: FitSettings) -> dict:
    data, reference = models.sbibm_task(task)
    result = fit(model, data, settings)
    draws = result.posterior(10_000)["theta"]
    return {"c2st": round(models.c2st(draws, reference), 4), "mode": result.mode}


def two_moons(settings: FitSettings) -> dict:
    """sbibm two_moons, observation 1: C2ST of 10,000 draws (0.5 is perfect)."""
    return _sbibm("two_moons", models.TwoMoons(), settings)


def gaussian_linear(settings: FitSettings) -> dict:
    """sbibm gaussian_linear, observation 1: C2ST of 10,000 draws."""
    return _sbibm("gaussian_linear", models.GaussianLinear(), settings)


def point(settings: FitSettings) -> dict:
    """Point parameters a = 1.5, b = −0.7 learnt by the generator gradient."""
    model = models.PointRegression()
    fit(model, models.point_regression_data(), settings)
    return {"a": round(float(model.a.detach()), 4), "b": round(float(model.b.detach()), 4)}


BENCHMARKS = {f.__name__: f for f in (hier_gauss, linreg, two_moons, gaussian_linear, point)}


def main(args: list[str]) -> None:
    torch.set_num_threads(1)
    seed = 0
    if "--seed" in args:
        at = args.index("--seed")
        seed, args = int(args[at + 1]), args[:at] + args[at + 2:]
    for name in args or list(BENCHMARKS):
        start = time.perf_counter()
        out = BENCHMARKS[name](FitSettings(seed=seed))
        out = {"model": name, "seed": seed, **out, "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
