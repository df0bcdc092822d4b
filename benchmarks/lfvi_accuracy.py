"""Full-size accuracy of himdsl.infer on the known-answer models (docs/accuracy.md).

    python benchmarks/lfvi_accuracy.py [hier_gauss linreg point] [--seed N] [--steps N --simulations M] [--batch B]

Prints one JSON line per model: the errors the targets are stated in, and seconds.
The sbibm tasks (two_moons, gaussian_linear, ...) are benchmarks/sbibm_suite.py's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.metrics import local_scores  # noqa: E402
from himdsl.infer import FitSettings, fit  # noqa: E402
from tests.infer import models  # noqa: E402


def _globals_errors(draws: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> dict:
    return {"mean_error_in_sd": np.round((draws.mean(0) - mean) / sd, 3).tolist(),
            "sd_ratio": np.round(draws.std(0) / sd, 3).tolist()}


def hier_gauss(settings: FitSettings) -> dict:
    """Conjugate hierarchical Gaussian (examples/hier_gauss), N = 1,000: globals and
    locals against the exact posterior."""
    data, truth = models.hier_gauss_data()
    result = fit(models.hier_gauss(), data, settings)
    out = {"plan": f"{result.plan.method}, {result.plan.ratio}", "verdict_ok": result.verdict.ok}
    out.update(_globals_errors(result.posterior(10_000)["beta"], truth["beta_mean"], truth["beta_sd"]))
    local = result.locals(data)
    scores = local_scores(local["z_mean"], local["z_sd"], truth["z_mean"], truth["z_sd"])
    out["z_rmse_in_sd"], out["z_sd_ratio"] = round(scores["rmse_in_sd"], 4), round(scores["sd_ratio"], 3)
    return out


def linreg(settings: FitSettings) -> dict:
    """Bayesian linear regression (examples/linear_regression), N = 500: the fit's
    draws, and where they are resampled the same fit's q beside them."""
    data, truth = models.linreg_data()
    result = fit(models.linear_regression(), data, settings)
    out = {"plan": f"{result.plan.method}, {result.plan.ratio}", "verdict_ok": result.verdict.ok,
           **_globals_errors(result.posterior(10_000)["w"], truth["w_mean"], truth["w_sd"])}
    if result.resampling is not None:
        with torch.no_grad():
            q = result.global_guide.rsample(10_000)[0]["w"].numpy()
        out["q"] = _globals_errors(q, truth["w_mean"], truth["w_sd"])
        out["khat"] = round(result.resampling.khat, 3)
    return out


def point(settings: FitSettings) -> dict:
    """Point parameters a = 1.5, b = −0.7 learnt by the generator gradient."""
    model = models.point_regression()
    fit(model, models.point_regression_data(), settings)
    return {"a": round(float(model.a.detach()), 4), "b": round(float(model.b.detach()), 4)}


BENCHMARKS = {f.__name__: f for f in (hier_gauss, linreg, point)}


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="optimisation steps (the default's unless given)")
    parser.add_argument("--simulations", type=int, help="ratio simulations an update")
    parser.add_argument("--batch", type=int, help="data rows a step (a comparison with the default's 64)")
    args = parser.parse_args(argv)
    unknown = set(args.models) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    sizes = {k: v for k, v in (("steps", args.steps), ("simulations", args.simulations), ("batch", args.batch))
             if v is not None}
    for name in args.models or list(BENCHMARKS):
        start = time.perf_counter()
        out = BENCHMARKS[name](FitSettings(seed=args.seed, **sizes))
        out = {"model": name, "seed": args.seed, **sizes, **out,
               "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
