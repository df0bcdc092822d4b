"""Pareto-smoothed importance sampling, and q's draws resampled to the posterior the
ratio defines.

    smoothed, khat = psis(log_w)                       # as ArviZ's psislw computes them
    u, report = resample(guide, log_target, 10_000)    # [10_000, D] and a Resampling

Where the contrastive ratio reads the globals alone (no locals), the posterior it
implies is known up to a constant: π(u) ∝ p(β(u)) |∂β/∂u| exp(Σ_n r(x_n, β(u)))
(covering.py). q is a fitted approximation of it: a flow fitted by maximum
likelihood to a population of particles, which leaves it broader than π where the
population is thin. A q broader than π is what an importance proposal should be, so
on data of one row (plan.py says why not on a plate) the fit's posterior draws are
drawn from q, POOL times as many as asked, weighted by π / q, Pareto-smoothed and
resampled systematically (each draw kept in proportion to its weight, with the
least added noise). Where k̂ exceeds min(1 − 1 / log10 S, 0.7)
the weights' tail is too heavy for the estimate to be trusted (Vehtari et al. 2024):
q's own draws are kept, and the fit fails its check "q matches the ratio" (checks.py).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

Tensor = torch.Tensor

# q draws weighed per posterior draw returned
POOL = 4
# log weights within this of each other are equal (q is π up to float rounding)
EQUAL_WEIGHTS = 1e-3
# draws per evaluation of the target (Σ_n r over every row for each)
CHUNK = 2048


@dataclass(frozen=True)
class Resampling:
    """How the posterior draws were made from q."""

    pool: int           # q draws weighed
    khat: float         # Pareto k̂ of their weights
    threshold: float    # k̂ above it: the weights are not trusted
    ess: float          # effective sample size of the smoothed weights

    @property
    def used(self) -> bool:
        return self.khat <= self.threshold


def khat_threshold(draws: int) -> float:
    """PSIS's reliability bound for S draws (Vehtari et al. 2024)."""
    return min(1 - 1 / math.log10(draws), 0.7)


def psis(log_w: np.ndarray) -> tuple[np.ndarray, float]:
    """(Pareto-smoothed normalised log weights, k̂), as ArviZ computes them. Weights
    equal to within EQUAL_WEIGHTS (q is the exact posterior up to float rounding) have
    no tail to fit: k̂ = 0 (ArviZ's fit to the rounding noise may say inf)."""
    if np.ptp(log_w) < EQUAL_WEIGHTS:
        return np.full_like(log_w, -math.log(len(log_w))), 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # arviz's notices (its 1.0 refactor, k̂ > 0.7)
        import arviz

        smoothed, khat = arviz.psislw(log_w.copy(), reff=1.0)
    return np.asarray(smoothed), float(np.asarray(khat))


@torch.no_grad()
def resample(guide, log_target, num: int) -> tuple[Tensor, Resampling]:
    """`num` draws of u: q's draws resampled to exp(log_target) where the weights
    are trusted, else q's own (module docstring); with the report."""
    u, weights, report = weigh(guide, log_target, POOL * num)
    if not report.used:
        return u[:num], report
    index = torch.as_tensor(_systematic(weights, num), device=u.device)
    return u[index[torch.randperm(num, device=u.device)]], report


@torch.no_grad()
def weigh(guide, log_target, pool: int) -> tuple[Tensor, np.ndarray | None, Resampling]:
    """`pool` draws of q's u, their Pareto-smoothed normalised weights to
    exp(log_target) (None where some weight is NaN or +inf, or fewer than two are
    finite: k̂ is then inf), and the report."""
    u = torch.cat([guide.rsample(min(CHUNK, pool - i))[2] for i in range(0, pool, CHUNK)])
    log_w = torch.cat([log_target(part) - guide.log_prob_u(part) for part in u.split(CHUNK)])
    log_w = log_w.double().cpu().numpy()
    kept = np.isfinite(log_w)                 # a target of zero (−inf) weighs nothing
    threshold = khat_threshold(pool)
    if np.isnan(log_w).any() or np.isposinf(log_w).any() or kept.sum() < 2:
        return u, None, Resampling(pool, math.inf, threshold, 0.0)
    smoothed, khat = psis(log_w[kept])
    weights = np.zeros(pool)
    weights[kept] = np.exp(smoothed - smoothed.max())
    weights /= weights.sum()
    return u, weights, Resampling(pool, khat, threshold, float(1 / np.square(weights).sum()))


def _systematic(weights: np.ndarray, num: int) -> np.ndarray:
    """Indices of `num` draws, each index about weight · num times (one uniform)."""
    positions = (torch.rand(()).item() + np.arange(num)) / num
    return np.minimum(np.searchsorted(np.cumsum(weights), positions), len(weights) - 1)
