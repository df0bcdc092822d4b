"""The contrastive ratio's score calibration, in the coordinates q moves in.

For the true likelihood the score has mean zero under its own simulations; the
learnt ratio's does not quite, and the q step's sum over N rows multiplies a
systematic error by N (contrastive.py). The mean score c over the local pairs is
tracked and the q step reads r(x, θ) − c · u(θ).

u is each coordinate of θ in its support's unconstrained form, the coordinates q
moves in: θ on the real line, log(θ − a) above a bound a, the logit of an interval.
There a constant c is a tilt exp(c · u) of q's density, which moves a Gaussian q by
σ² c and no further. The same constant applied to a positive θ's own value is a
force c · e^u on q's coordinate, growing without limit in q's tail: fitted that way,
a count model's dispersion ran to 1e12 when c was measured where the ratio's score
was steep (small dispersions) and applied where the likelihood is flat (large ones).

    calibration = ScoreCalibration(dim)
    calibration.set_supports([torch.distributions.constraints.positive] * dim)
    calibration.update(step, score_theta, theta)      # mean score in u, folded in
    logit - calibration.correction(theta)             # what the q step reads
"""
from __future__ import annotations

import torch
from torch.distributions import constraints

Tensor = torch.Tensor
# θ's distance from a bound is held at least this far from zero before its log.
_TINY = 1e-30


class ScoreCalibration(torch.nn.Module):
    """The tracked mean score c in u (a buffer, so checkpoints keep it), and each
    coordinate's map u(θ): 0 the identity, 1 log above `low`, 2 the logit of
    (`low`, `high`)."""

    DECAY = 0.99

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("score", torch.zeros(dim))
        self.kind = torch.zeros(dim, dtype=torch.long)
        self.low = torch.zeros(dim)
        self.high = torch.ones(dim)
        self.mapped = False         # some coordinate is not θ itself

    def set_supports(self, supports: list) -> None:
        """One support (a torch constraint) per coordinate of θ."""
        maps = [support_map(s) for s in supports]
        device = self.score.device
        self.kind = torch.tensor([m[0] for m in maps], dtype=torch.long, device=device)
        self.low = torch.tensor([m[1] for m in maps], dtype=self.score.dtype, device=device)
        self.high = torch.tensor([m[2] for m in maps], dtype=self.score.dtype, device=device)
        self.mapped = any(m[0] for m in maps)

    def coordinates(self, theta: Tensor) -> Tensor:
        """u(θ) [..., dim]."""
        if not self.mapped:
            return theta
        above = (theta - self.low).clamp_min(_TINY)
        unit = (above / (self.high - self.low)).clamp(_TINY, 1 - 1e-7)
        return torch.where(self.kind == 1, above.log(),
                           torch.where(self.kind == 2, torch.logit(unit), theta))

    def jacobian(self, theta: Tensor) -> Tensor:
        """dθ/du per coordinate [..., dim]."""
        above = theta - self.low
        return torch.where(self.kind == 1, above,
                           torch.where(self.kind == 2, above * (self.high - theta) / (self.high - self.low),
                                       torch.ones_like(theta)))

    def correction(self, theta: Tensor) -> Tensor:
        """c · u(θ) [...]: what the q step subtracts from the ratio."""
        return (self.coordinates(theta) * self.score).sum(-1)

    @torch.no_grad()
    def update(self, k: int, score: Tensor, theta: Tensor) -> None:
        """Fold in one batch's scores ∂r/∂θ [n, dim] measured at θ [n, dim]."""
        decay = min(self.DECAY, (1 + k) / (10 + k))
        if self.mapped:
            score = score * self.jacobian(theta)
        self.score.lerp_(score.mean(0), 1 - decay)


def support_map(support) -> tuple[int, float, float]:
    """(kind, low, high) of u(θ) for one coordinate's support; the identity where the
    support is the real line or its bounds are not one fixed number."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if isinstance(support, (constraints.greater_than, constraints.greater_than_eq)):
        low = _fixed(support.lower_bound)
        return (1, low, low + 1.0) if low is not None else (0, 0.0, 1.0)
    if isinstance(support, (constraints.interval, constraints.half_open_interval)):
        low, high = _fixed(support.lower_bound), _fixed(support.upper_bound)
        return (2, low, high) if low is not None and high is not None and high > low else (0, 0.0, 1.0)
    return 0, 0.0, 1.0


def _fixed(bound) -> float | None:
    """A bound as one number, or None when it varies (a bound read from a latent)."""
    if not torch.is_tensor(bound):
        return float(bound)
    values = bound.reshape(-1)
    return float(values[0]) if values.numel() and bool((values == values[0]).all()) else None
