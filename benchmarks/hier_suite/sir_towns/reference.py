"""Exact posterior of sir_towns' (R0, gamma) on a grid: reference.npz and reference.json.

    python benchmarks/hier_suite/sir_towns/reference.py

The chain-binomial SIR's likelihood is tractable although the model writes it as a
simulator: given a town's daily new infections, its susceptibles are known each
day, and the only hidden state is how many have recovered, a Markov chain whose
steps are binomial. The forward algorithm over that count (per town, states more
than KEEP nats below the day's best dropped) gives the exact log-likelihood; a
grid over (R0, gamma), first coarse over the prior's bulk, then zooming in to ±6
posterior sds, times the priors, gives the posterior. Draws: grid cells by weight,
uniform within the cell.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

HERE = Path(__file__).resolve().parent
POP, I0 = 1000, 5          # as sir.py
KEEP = 30.0                # nats below a town's best state at which a state is dropped
DRAWS = 10_000
ZOOM_POINTS, ZOOMS = 15, 3     # grids that find the posterior ...
FINAL_POINTS = 36              # ... and the one the draws come from (a third of a sd a cell)
LOG_FACTORIAL = torch.lgamma(torch.arange(POP + 2, dtype=torch.float64) + 1)


def log_binomial(k: torch.Tensor, n: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """log Binom(k; n, p) broadcast over k and n, 0 < p < 1; -inf outside 0..n."""
    inside = (k >= 0) & (k <= n)
    k_ = k.clamp(min=0)
    n_ = torch.maximum(n, k_).clamp(max=POP)
    f = LOG_FACTORIAL
    lp = f[n_.long()] - f[k_.long()] - f[(n_ - k_).long()] + k_ * torch.log(p) + (n_ - k_) * torch.log1p(-p)
    return torch.where(inside, lp, -torch.inf)


def log_likelihood(cases: np.ndarray, r0: float, gamma: float) -> float:
    """Σ over towns of log p(a town's daily new infections | R0, gamma)."""
    cases = torch.as_tensor(cases, dtype=torch.float64)
    towns, days = cases.shape
    infected_before = torch.cat([torch.zeros(towns, 1, dtype=torch.float64), cases.cumsum(1)], 1)
    susceptible = POP - I0 - infected_before
    p_recover = torch.tensor(1 - np.exp(-gamma))
    first = torch.zeros(towns, 1, dtype=torch.float64)            # each town's lowest recovered count kept
    log_alpha = torch.zeros(towns, 1, dtype=torch.float64)
    total = torch.zeros(towns, dtype=torch.float64)
    for t in range(days):
        infected = I0 + infected_before[:, t:t + 1] - (first + torch.arange(log_alpha.shape[1]))
        p_infect = (1 - torch.exp(-r0 * gamma * infected.clamp(min=0) / POP)).clamp(1e-300, 1 - 1e-16)
        log_alpha = (log_alpha + log_binomial(cases[:, t:t + 1], susceptible[:, t:t + 1], p_infect)
                     + torch.where(infected >= 0, 0.0, -torch.inf))
        best = log_alpha.max(1, keepdim=True).values
        if not torch.isfinite(best).all():
            return -np.inf
        total += best[:, 0]
        log_alpha, first = _window(log_alpha - best, first)
        log_alpha = _recover(log_alpha, I0 + infected_before[:, t:t + 1] - (first + torch.arange(log_alpha.shape[1])),
                             p_recover)
    return float(total.sum() + torch.logsumexp(log_alpha, 1).sum())


def _window(log_alpha: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each town's states within KEEP nats of its best, in one window as wide as the widest."""
    kept = log_alpha > -KEEP
    lo = kept.double().argmax(1)
    hi = log_alpha.shape[1] - 1 - kept.flip(1).double().argmax(1)
    index = lo[:, None] + torch.arange(int((hi - lo).max()) + 1)
    window = log_alpha.gather(1, index.clamp(max=log_alpha.shape[1] - 1))
    return torch.where(index <= hi[:, None], window, -torch.inf), first + lo[:, None]


def _recover(log_alpha: torch.Tensor, infected: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """One day's recoveries: state s moves to s + r, r ~ Binom(infected, p)."""
    towns, width = log_alpha.shape
    top, q = float(infected.max()), float(p)
    most = int(min(top, top * q + 12 * np.sqrt(top * q * (1 - q)) + 2))
    r = torch.arange(most + 1, dtype=torch.float64)
    mass = torch.exp(log_alpha[:, :, None] + log_binomial(r, infected[:, :, None], p))
    target = (torch.arange(width)[:, None] + r.long()[None, :]).reshape(-1).expand(towns, -1)
    return torch.log(torch.zeros(towns, width + most, dtype=torch.float64).scatter_add_(1, target, mass.reshape(towns, -1)))


def grid_posterior(cases: np.ndarray, r0s: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    """Normalised posterior weights on the grid [len(r0s), len(gammas)]."""
    log_lik = np.array([[log_likelihood(cases, r, g) for g in gammas] for r in r0s])
    log_post = (log_lik + stats.lognorm(0.5, scale=np.exp(0.7)).logpdf(r0s)[:, None]
                + stats.beta(2, 6).logpdf(gammas)[None, :])
    w = np.exp(log_post - log_post.max())
    return w / w.sum()


def moments(w: np.ndarray, r0s: np.ndarray, gammas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grid = np.stack(np.meshgrid(r0s, gammas, indexing="ij"), -1)
    mean = (w[..., None] * grid).sum((0, 1))
    sd = np.sqrt((w[..., None] * (grid - mean) ** 2).sum((0, 1)))
    return mean, sd


def main() -> None:
    start = time.perf_counter()
    cases = np.load(HERE / "data.npz")["cases"]
    # zoom in: each grid spans the last one's mean ± 6 sds; a coarse grid's cells
    # can be wider than the posterior, whose sd is then floored at half a cell
    r0s, gammas = np.linspace(1.0, 4.0, ZOOM_POINTS), np.linspace(0.05, 0.6, ZOOM_POINTS)
    for _ in range(ZOOMS):
        mean, sd = moments(grid_posterior(cases, r0s, gammas), r0s, gammas)
        sd = np.maximum(sd, [(r0s[1] - r0s[0]) / 2, (gammas[1] - gammas[0]) / 2])
        r0s = np.linspace(mean[0] - 6 * sd[0], mean[0] + 6 * sd[0], ZOOM_POINTS)
        gammas = np.linspace(mean[1] - 6 * sd[1], mean[1] + 6 * sd[1], ZOOM_POINTS)
    r0s = np.linspace(r0s[0], r0s[-1], FINAL_POINTS)
    gammas = np.linspace(gammas[0], gammas[-1], FINAL_POINTS)
    w = grid_posterior(cases, r0s, gammas)
    mean, sd = moments(w, r0s, gammas)
    edge = w[0].sum() + w[-1].sum() + w[:, 0].sum() + w[:, -1].sum()
    rng = np.random.default_rng(0)
    cell = rng.choice(w.size, DRAWS, p=w.reshape(-1))
    step = np.array([r0s[1] - r0s[0], gammas[1] - gammas[0]])
    draws = np.stack([r0s[cell // len(gammas)], gammas[cell % len(gammas)]], -1)
    draws += (rng.random(draws.shape) - 0.5) * step
    np.savez(HERE / "reference.npz", R0=draws[:, 0], gamma=draws[:, 1])
    record = {"model": "sir_towns", "method": "exact likelihood (forward algorithm) on a grid",
              "grid": {"R0": [float(r0s[0]), float(r0s[-1]), len(r0s)],
                       "gamma": [float(gammas[0]), float(gammas[-1]), len(gammas)]},
              "mean": {"R0": float(mean[0]), "gamma": float(mean[1])},
              "sd": {"R0": float(sd[0]), "gamma": float(sd[1])},
              "edge_mass": float(edge), "seconds": round(time.perf_counter() - start, 1),
              "torch": torch.__version__, "numpy": np.__version__}
    (HERE / "reference.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
