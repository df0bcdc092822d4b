"""A group's intercept and slope with the covariate in [2, 3], against the exact
posterior (docs/accuracy.md, "A nearly collinear intercept and slope per group").

    python benchmarks/collinear_locals.py [--seeds 0,1] [--steps 3000] [--groups 100]

The model (below) has an explicit likelihood, so `fit` runs VI and the only
approximation is q; its exact posterior is Gaussian: μ | y from
y_g ~ N(X_g μ, X_g X_gᵀ + 0.25 I), and (a, b) | μ, y_g ~ N(C (X_gᵀ y_g / 0.25 + μ), C)
with C = (X_gᵀ X_g / 0.25 + I)⁻¹, which makes a and b nearly collinear
(ρ ≈ −0.97). One data set (generator seed 123); per fit seed one JSON line: the
locals' posterior-mean RMSE in marginal sds and sd ratio
(benchmarks/metrics.local_scores), what the verdict's "locals' means" line read,
the globals' mean errors in sds and sd ratios, seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.metrics import local_scores  # noqa: E402

SOURCE = """
model slopes
data x : real[5]
data y : real[5]
latent mu_a ~ Normal(0, 5)
latent mu_b ~ Normal(0, 5)
plate g over y {
    latent a ~ Normal(mu_a, 1)
    latent b ~ Normal(mu_b, 1)
    observe y ~ Normal(a + b * x, 0.5)
}
"""


def data(groups: int = 100, seed: int = 123) -> dict[str, torch.Tensor]:
    """x in [2, 3], a ~ N(1, 1), b ~ N(−1, 1), y = a + b x + 0.5 ε, 5 rows a group."""
    gen = torch.Generator().manual_seed(seed)
    x = 2 + torch.rand(groups, 5, generator=gen)
    a = 1 + torch.randn(groups, 1, generator=gen)
    b = -1 + torch.randn(groups, 1, generator=gen)
    return {"x": x, "y": a + b * x + 0.5 * torch.randn(groups, 5, generator=gen)}


def exact(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """μ's mean and sd [2]; the locals' means and marginal sds [G, 2] (float64)."""
    eye = torch.eye(2, dtype=torch.float64)
    design = torch.stack([torch.ones_like(x), x], -1).double()
    y = y.double().unsqueeze(-1)
    marginal = design @ design.transpose(1, 2) + 0.25 * torch.eye(x.shape[1], dtype=torch.float64)
    weighted = design.transpose(1, 2) @ torch.linalg.inv(marginal)
    mu_cov = torch.linalg.inv(eye / 25 + (weighted @ design).sum(0))
    mu_mean = mu_cov @ (weighted @ y).sum(0).squeeze(-1)
    local_cov = torch.linalg.inv(design.transpose(1, 2) @ design / 0.25 + eye)
    mean = local_cov @ ((design.transpose(1, 2) @ y).squeeze(-1) / 0.25 + mu_mean).unsqueeze(-1)
    cov = local_cov + local_cov @ mu_cov @ local_cov.transpose(1, 2)
    return {"mu_mean": mu_mean, "mu_sd": mu_cov.diagonal().sqrt(),
            "mean": mean.squeeze(-1), "sd": cov.diagonal(dim1=-2, dim2=-1).sqrt()}


def score(result, rows: dict[str, torch.Tensor]) -> dict:
    """The fit's locals and globals against `exact`."""
    truth = exact(rows["x"], rows["y"])
    moments = result.locals(rows, draws=2048)
    draws = result.posterior(20000)
    out = {}
    for j, name in enumerate("ab"):
        out[name] = local_scores(moments[f"{name}_mean"], moments[f"{name}_sd"],
                                 truth["mean"][:, j].numpy(), truth["sd"][:, j].numpy())
    check = {c.name: c for c in result.verdict.checks}.get("locals' means") if result.verdict else None
    out["locals_check"] = None if check is None else {"ok": check.ok, "value": check.value,
                                                      "message": check.message}
    for j, name in enumerate(("mu_a", "mu_b")):
        d = torch.as_tensor(draws[name]).double()
        out[name] = {"mean_error_in_sd": float((d.mean() - truth["mu_mean"][j]) / truth["mu_sd"][j]),
                     "sd_ratio": float(d.std() / truth["mu_sd"][j])}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=None, help="default: FitSettings' (3,000)")
    parser.add_argument("--groups", type=int, default=100)
    args = parser.parse_args(argv)
    import himdsl
    from himdsl.infer import FitSettings, fit
    torch.set_num_threads(1)
    rows = data(args.groups)
    for seed in (int(s) for s in args.seeds.split(",")):
        settings = FitSettings(seed=seed) if args.steps is None else FitSettings(seed=seed, steps=args.steps)
        start = time.time()
        result = fit(himdsl.load("slopes.him", source=SOURCE).module(), rows, settings)
        seconds = time.time() - start
        print(json.dumps({"seed": seed, "groups": args.groups, "steps": settings.steps,
                          "seconds": round(seconds, 1), **score(result, rows)}), flush=True)


if __name__ == "__main__":
    main()
