"""Globals far from the prior's centre, against exact posteriors (docs/accuracy.md).

    python benchmarks/prior_tails.py [--json out.json]

Two known-answer cases that no suite model has, each fitted with the defaults
(`FitSettings(seed=...)`, `steps` where named):

* wide_prior (tests/infer/models.py): mu ~ N(0, 100²), s ~ HalfNormal(20), 200
  values around 170 with sd 10, an explicit likelihood (VI); a grid posterior.
* hier_gauss_tail: examples/hier_gauss with beta = (-0.11, -2.93), 2.9 prior sds
  out in its second coordinate, 100 rows (simulated with the model's own
  process), fitted by LFVI at the CI tests' 1,000 steps and at the default
  3,000; the conjugate posterior.

Prints, per case and global coordinate, the mean error in posterior sds and the
sd ratio, the fit's trust verdict (a fit that has not reached the posterior must
fail its "q settled" check) and the seconds.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from himdsl.infer import FitSettings, fit  # noqa: E402
from tests.infer import models  # noqa: E402

TAIL_BETA = (-0.11, -2.93)
TAIL_ROWS = 100


def hier_gauss_tail(seed: int = 502) -> tuple[dict, dict]:
    """x_n = z_n + 0.5 eps_n, z_n ~ N(beta, I) at TAIL_BETA; the exact posterior of beta."""
    gen = torch.Generator().manual_seed(seed)
    beta = torch.tensor(TAIL_BETA)
    x = beta + torch.randn(TAIL_ROWS, 2, generator=gen) + 0.5 * torch.randn(TAIL_ROWS, 2, generator=gen)
    mean = (x.sum(0) / (1.25 + TAIL_ROWS)).numpy()
    sd = np.full(2, math.sqrt(1.25 / (1.25 + TAIL_ROWS)))
    return {"x": x}, {"beta": (mean, sd)}


def score(case: str, model, data: dict, exact: dict, settings: FitSettings) -> dict:
    start = time.perf_counter()
    result = fit(model, data, settings)
    seconds = time.perf_counter() - start
    draws = result.posterior(10_000)
    rows = {}
    for name, (mean, sd) in exact.items():
        d = np.asarray(draws[name]).reshape(len(draws[name]), -1)
        rows[name] = {"mean_error_in_sd": np.round((d.mean(0) - mean) / sd, 3).tolist(),
                      "sd_ratio": np.round(d.std(0) / sd, 3).tolist()}
    failed = [c.name for c in result.verdict.checks if not c.ok and not c.advisory]
    return {"case": case, "steps": settings.steps, "method": result.plan.method, "scores": rows,
            "verdict_ok": result.verdict.ok, "failed_checks": failed, "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data, grid = models.wide_prior_data()
    exact = {name: (np.array([m]), np.array([s])) for name, (m, s) in grid.items()}
    rows = [score("wide_prior", models.wide_prior(), data, exact, FitSettings(seed=0))]
    data, exact = hier_gauss_tail()
    for steps in (1000, 3000):
        rows.append(score("hier_gauss_tail", models.hier_gauss(), data, exact, FitSettings(steps=steps, seed=2)))
    for row in rows:
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
