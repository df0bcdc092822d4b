"""A population of posterior draws of the globals, tracked by sequential Monte Carlo
while the contrastive ratio trains.

In contrastive mode the ratio gives the posterior of the globals up to a constant,
π(u) ∝ p(β(u)) |∂β/∂u| exp(Σ_n r(x_n, β(u))), and π changes a little every step
as the ratio learns. The population follows it: each step reweights the particles
by the change of log π, resamples when the effective sample size falls below half,
and moves them by random-walk Metropolis steps that leave the current π invariant,
then by one independence Metropolis-Hastings step proposing from q (which carries
particles between modes that random walks cannot cross).
Started from the prior while the ratio is still flat, it reaches every mode in
proportion to its mass (a tempering path the training itself provides), which a
reverse-KL fit of q does not.

    pop = ParticlePosterior(u_prior)            # [K, D] unconstrained prior draws
    pop.track(log_target, (draw, log_density))   # log_target(u [K, D]) -> [K]
    loss = pop.forward_kl(log_q)                 # −Σ w̄_k log q(u_k), q's covering term

No host synchronisation: the resampling decision and the step-size adaptation are
tensor operations.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Tensor = torch.Tensor
LogDensity = Callable[[Tensor], Tensor]
# A global proposal: (draw(K) -> u [K, D], its log density u -> [K]).
Proposal = tuple[Callable[[int], Tensor], LogDensity]

# Random-walk Metropolis steps per training step.
MOVES = 2
# Acceptance rate the random-walk scale is adapted to (Roberts & Rosenthal's ~0.234
# for many dimensions; a little higher suits the low-dimensional case).
TARGET_ACCEPT = 0.3
# Local pairs are this fraction of the Metropolis scale apart:
PAIR_SCALE = 0.25
# Resample when the effective sample size drops below this fraction of K.
RESAMPLE_BELOW = 0.5


class ParticlePosterior:
    """K weighted particles u [K, D] approximating π, with their log π values."""

    def __init__(self, u: Tensor):
        self.u = u.detach().clone()
        self.log_w = torch.zeros(u.shape[0], device=u.device)
        self.log_target: Tensor | None = None
        # random-walk scale, in units of the population's per-coordinate sd
        self.log_step = torch.full((), math.log(2.38 / math.sqrt(max(u.shape[1], 1))),
                                   device=u.device)

    @property
    def weights(self) -> Tensor:
        """Normalised weights [K]."""
        return torch.softmax(self.log_w, 0)

    @torch.no_grad()
    def track(self, log_target: LogDensity, proposal: Proposal | None = None) -> None:
        """Follow π to its current form: reweight, resample if degenerate, move
        (random walk, then one independence move from `proposal` if given)."""
        new = log_target(self.u)
        if self.log_target is not None:
            self.log_w = self.log_w + torch.nan_to_num(new - self.log_target, nan=-math.inf)
        self.log_target = new
        self._resample_if_degenerate()
        for _ in range(MOVES):
            self._metropolis(log_target)
        if proposal is not None:
            self._independence_move(log_target, *proposal)

    def _resample_if_degenerate(self) -> None:
        w = self.weights
        ess = 1.0 / (w * w).sum()
        k = self.u.shape[0]
        idx = _systematic(w)
        resample = ess < RESAMPLE_BELOW * k
        keep = torch.arange(k, device=self.u.device)
        idx = torch.where(resample, idx, keep)
        self.u, self.log_target = self.u[idx], self.log_target[idx]
        self.log_w = torch.where(resample, torch.zeros_like(self.log_w), self.log_w[idx])

    def _metropolis(self, log_target: LogDensity) -> None:
        proposal = self.u + self._scale() * torch.randn_like(self.u)
        new = log_target(proposal)
        rate = self._accept(proposal, new, new - self.log_target).float().mean()
        self.log_step = (self.log_step + 0.5 * (rate - TARGET_ACCEPT)).clamp(-12.0, 2.0)

    def _independence_move(self, log_target: LogDensity, draw, log_density: LogDensity) -> None:
        """Independence Metropolis-Hastings from a global proposal (q): the move that
        carries particles between modes. Random-walk moves cannot cross between
        separated modes, so without it the mode weights drift with every resampling
        (by ~√(p(1 − p)/K) each time) and nothing pulls them back."""
        proposal = draw(self.u.shape[0])
        new = log_target(proposal)
        self._accept(proposal, new, new - self.log_target + log_density(self.u) - log_density(proposal))

    def _accept(self, proposal: Tensor, new: Tensor, log_alpha: Tensor) -> Tensor:
        """Metropolis-Hastings acceptance of each particle's proposal (log ratio
        `log_alpha`; NaN rejects); returns which were accepted [K]."""
        accept = torch.rand_like(log_alpha).log() < torch.nan_to_num(log_alpha, nan=-math.inf)
        self.u = torch.where(accept[:, None], proposal, self.u)
        self.log_target = torch.where(accept, new, self.log_target)
        return accept

    @torch.no_grad()
    def local_pairs(self, num: int) -> Tensor:
        """2·num draws [c + δ; c − δ] around particles c resampled by weight, δ a
        fraction of the Metropolis scale: exchangeable pairs a likelihood step apart."""
        c = self.u[torch.multinomial(self.weights, num, replacement=True)]
        delta = PAIR_SCALE * self._scale() * torch.randn_like(c)
        return torch.cat([c + delta, c - delta])

    def _scale(self) -> Tensor:
        """The random-walk scale per coordinate [D]."""
        return self.log_step.exp() * _weighted_sd(self.u, self.weights)

    def forward_kl(self, log_q: LogDensity) -> Tensor:
        """KL(π ‖ q) up to a constant, −Σ w̄_k log q(u_k): differentiable in q."""
        return -(self.weights * log_q(self.u)).sum()

    def state_dict(self) -> dict[str, Tensor | None]:
        """Tensors to checkpoint."""
        return {"u": self.u, "log_w": self.log_w, "log_target": self.log_target,
                "log_step": self.log_step}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`."""
        self.u, self.log_w = state["u"], state["log_w"]
        self.log_target, self.log_step = state["log_target"], state["log_step"]


def _systematic(w: Tensor) -> Tensor:
    """Systematic resampling: K indices drawn from weights w [K]."""
    k = w.shape[0]
    points = (torch.rand((), device=w.device) + torch.arange(k, device=w.device)) / k
    return torch.searchsorted(torch.cumsum(w, 0), points).clamp(max=k - 1)


def _weighted_sd(u: Tensor, w: Tensor) -> Tensor:
    """Per-coordinate sd of weighted particles, floored so a collapsed population
    can still move."""
    mean = (w[:, None] * u).sum(0)
    var = (w[:, None] * (u - mean) ** 2).sum(0)
    return var.clamp_min(1e-12).sqrt()
