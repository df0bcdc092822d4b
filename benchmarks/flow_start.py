"""A flow fitted by the ELBO from q's narrow start: shaped from the first step, or
moments first (the plan's `flow_shape_from`, the default), side by side.

    python benchmarks/flow_start.py [--steps 1200] [--seeds 0,1]

The model is the linear regression of examples/linear_regression with its
likelihood written explicitly (`observe y ~ Normal(sum(f * w), 0.5)`), so the fit is
exact VI and any error is q's fitting, not a ratio's: 500 rows, every step reads
all of them, q(w) a flow. Prints each run's sds and mean errors against the exact
posterior (docs/accuracy.md, "A flow fitted moments first").
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from himdsl.infer import FitSettings  # noqa: E402
from himdsl.infer.trainer import Trainer  # noqa: E402
from tests.infer.models import explicit_linear_regression, linreg_data  # noqa: E402

def run(shape_from_start: bool, steps: int, seed: int) -> dict:
    data, truth = linreg_data(n=500)
    trainer = Trainer(explicit_linear_regression(), data, FitSettings(steps=steps, seed=seed))
    if shape_from_start:
        trainer.plan = replace(trainer.plan, flow_shape_from=0)
    start = time.perf_counter()
    w = trainer.run().posterior(8000)["w"]
    return {"flow": "shaped from the first step" if shape_from_start else "moments first",
            "seed": seed, "family": trainer.plan.global_families[0][1],
            "sd_ratio": np.round(w.std(0) / truth["w_sd"], 3).tolist(),
            "mean_error_in_sd": np.round((w.mean(0) - truth["w_mean"]) / truth["w_sd"], 2).tolist(),
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args(argv)
    for seed in (int(s) for s in args.seeds.split(",")):
        for from_start in (True, False):
            print(json.dumps(run(from_start, args.steps, seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
