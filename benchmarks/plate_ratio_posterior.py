"""q against the ratio's own posterior on a plate: one default fit of a suite model
with no locals, scored against NUTS twice, as q's draws and as q's draws
importance-resampled to the posterior the ratio defines (the prior times
exp(Σ_n r(x_n, β)), which on a plate the fit weighs for its check but does not
draw from), with the weights' Pareto k̂.

    python benchmarks/plate_ratio_posterior.py dose_response [--seed 0] [--weighed 40000]

Which of the two is nearer NUTS says whether q (its family, its fitting) or the
ratio is what a missed target comes from.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import hier_suite  # noqa: E402


def resampled_draws(trainer, result, weighed: int, num: int) -> tuple[dict, float]:
    """`num` draws resampled from `weighed` of q's by their PSIS weights to the
    ratio's posterior, whatever k̂ (reported beside them)."""
    from himdsl.infer.covering import ratio_posterior
    from himdsl.infer.importance import weigh

    guide = result.global_guide
    _, log_posterior_u = ratio_posterior(trainer.model, guide, trainer.ratio)
    with torch.no_grad():
        u, weights, report = weigh(guide, log_posterior_u, weighed)
        index = np.random.default_rng(0).choice(len(weights), num, p=weights)
        globals, _ = guide.constrain(u[torch.as_tensor(index)])
    return {name: value.numpy() for name, value in globals.items()}, report.khat


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=hier_suite.available_models())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weighed", type=int, default=40_000, help="q's draws weighed")
    args = parser.parse_args(argv)
    import himdsl
    from himdsl.infer import FitSettings
    from himdsl.infer.trainer import Trainer

    data, reference = hier_suite.load_case(args.model)
    module = himdsl.load(str(hier_suite.SUITE / args.model / "model.him")).module()
    trainer = Trainer(module, data, FitSettings(seed=args.seed))
    if trainer.view.z_blocks or trainer.plan.ratio != "contrastive":
        parser.error(f"{args.model} has locals or no contrastive ratio: its ratio defines no posterior of the globals")
    result = trainer.run()
    keys = ("c2st", "mean_error_in_sd", "sd_ratio")
    # q's draws first, as the suite draws them (the weighing below moves the random stream)
    q_scores = hier_suite.score_globals(result.posterior(hier_suite.GLOBAL_DRAWS), reference)
    draws, khat = resampled_draws(trainer, result, args.weighed, hier_suite.GLOBAL_DRAWS)
    for label, scores in (("q", q_scores), ("resampled", hier_suite.score_globals(draws, reference))):
        print(label, json.dumps({k: scores.get(k) for k in keys}))
    print(f"khat {khat:.3f} over {args.weighed:,} draws; checks ok: {result.verdict.ok}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
