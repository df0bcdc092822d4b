"""The ratio estimator r(x, z, β): a classifier logit estimating a log density ratio.

    ratio = RatioEstimator(in_dim=6, hidden=(128, 128))
    ratio.fit_scaling(features)          # standardise inputs from simulations
    logit = ratio(features)              # [..., 6] -> [...]
    loss, acc = classifier_loss(logit_p, logit_q, "log")

The network is an MLP plus a low-rank quadratic form of the standardised input:
log ratios of Gaussian-like models are close to quadratic, and the quadratic part
lets the MLP only carry the residual.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

LOSSES = ("log", "hinge")
MAX_QUADRATIC_RANK = 32
# Product units of the ratio network: None = as many as inputs (at most 32), 0 = none.
PRODUCT_UNITS: int | None = None
# Hidden activation of the ratio and local-guide networks (smooth, so that ∂r/∂β is).
ACTIVATION = nn.SiLU


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int, act=None) -> nn.Sequential:
    """A plain MLP with `act` (default `ACTIVATION`) between layers."""
    act = act or ACTIVATION
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), act()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


# Standardised inputs are clipped here (in robust sds): simulations from the prior's
# tails reach values no data set has, and must not blow up the networks.
INPUT_CLIP = 20.0


class Standardizer(nn.Module):
    """Affine input scaling (x − centre) / spread, fitted once from samples, then
    clipped to ±INPUT_CLIP. Centre and spread are the median and the interquartile
    range (as a normal sd; the sd where that is zero): a few simulations from a
    prior's tail do not set the scale of every input."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("sd", torch.ones(dim))

    def fit(self, samples: Tensor) -> None:
        """Set centre and spread from samples [n, dim] (non-finite values ignored);
        constant features keep spread 1."""
        if samples.shape[-1] == 0:  # e.g. the globals of a model that has none
            return
        flat = samples.reshape(-1, samples.shape[-1]).float()
        centre, spread = _robust_moments(flat)
        self.mean.copy_(centre)
        self.sd.copy_(torch.where(spread > 1e-6, spread, torch.ones_like(spread)))

    def fit_blocks(self, blocks: list[Tensor]) -> None:
        """Fit consecutive feature blocks, each from its own samples [..., d_i]."""
        start = 0
        for block in blocks:
            width = block.shape[-1]
            part = Standardizer(width).to(self.mean.device)
            part.fit(block)
            self.mean[start:start + width] = part.mean
            self.sd[start:start + width] = part.sd
            start += width

    def forward(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / self.sd).clamp(-INPUT_CLIP, INPUT_CLIP)


def _robust_moments(flat: Tensor) -> tuple[Tensor, Tensor]:
    """Per-column median and spread of finite values: IQR / 1.349, or the sd where
    the IQR is zero (e.g. mostly-zero counts)."""
    finite = torch.isfinite(flat)
    values = torch.where(finite, flat, torch.nan)
    centre = torch.nanmedian(values, 0).values
    q25, q75 = torch.nanquantile(values, 0.25, 0), torch.nanquantile(values, 0.75, 0)
    iqr = (q75 - q25) / 1.349
    mean = torch.nanmean(values, 0)
    sd = torch.nanmean((values - mean) ** 2, 0).sqrt()
    spread = torch.where(iqr > 1e-6, iqr, sd)
    return torch.nan_to_num(centre), torch.nan_to_num(spread, nan=1.0)


class RatioEstimator(nn.Module):
    """r(u) = MLP([ũ, π]) + a low-rank quadratic form of [ũ, π], where ũ is the
    standardised input and π = (Aũ) ⊙ (Bũ) are learnt pairwise products.

    The quadratic form makes Gaussian log ratios exact; the product units give it
    the cubic and quartic terms of e.g. a regression likelihood (y − f·w)²."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...] = (128, 128), quadratic: bool = True,
                 products: int | None = None):
        super().__init__()
        self.scale = Standardizer(in_dim)
        products = PRODUCT_UNITS if products is None else products
        n_prod = min(in_dim, MAX_QUADRATIC_RANK) if products is None else products
        self.prod_a = nn.Linear(in_dim, n_prod, bias=False)
        self.prod_b = nn.Linear(in_dim, n_prod, bias=False)
        width = in_dim + n_prod
        self.net = mlp(width, tuple(hidden), 1)
        rank = min(width, MAX_QUADRATIC_RANK) if quadratic else 0
        self.left = nn.Linear(width, rank, bias=False)
        self.right = nn.Linear(width, rank, bias=False)
        nn.init.zeros_(self.right.weight)

    def fit_scaling(self, blocks: list[Tensor]) -> None:
        """Standardise each input block by the moments of its samples [..., d_i]."""
        self.scale.fit_blocks(blocks)

    def forward(self, u: Tensor) -> Tensor:
        v = self.scale(u)
        v = torch.cat([v, self.prod_a(v) * self.prod_b(v)], -1)
        quad = (self.left(v) * self.right(v)).sum(-1)
        return self.net(v)[..., 0] + quad


def _margin_loss(loss: str):
    """The per-sample penalty of a margin m (a logit that should be positive):
    `log` softplus(−m), `hinge` relu(1 − m)."""
    if loss == "log":
        return lambda m: F.softplus(-m)
    if loss == "hinge":
        return lambda m: F.relu(1 - m)
    raise ValueError(f"unknown ratio loss {loss!r}; expected one of {', '.join(LOSSES)}")


def _mean(values: Tensor, weight: Tensor | None) -> Tensor:
    return values.mean() if weight is None else (values * weight).sum()


def pair_loss(logit_true: Tensor, logit_other: Tensor, loss: str = "log",
              weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Loss of telling which of two globals generated x, from r(x, β_true) −
    r(x, β_other), and accuracy. With `log` it is minimised by r(x, β) =
    log p(x | β) + c(x) for any c: the ratio never has to learn the marginal of x.
    `weight`: per-sample weights summing to 1 (0 drops a sample)."""
    diff = logit_true - logit_other
    return _mean(_margin_loss(loss)(diff), weight), _mean((diff > 0).float(), weight)


def classifier_loss(logit_p: Tensor, logit_q: Tensor, loss: str = "log",
                    weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Loss of telling p-samples (label 1) from q-samples (label 0), and accuracy.

    `log`: −log σ(r_p) − log(1 − σ(r_q)), minimised by r = log p − log q.
    `hinge`: relu(1 − r_p) + relu(1 + r_q), minimised by sign(log p − log q)."""
    penalty = _margin_loss(loss)
    value = _mean(penalty(logit_p), weight) + _mean(penalty(-logit_q), weight)
    acc = 0.5 * (_mean((logit_p > 0).float(), weight) + _mean((logit_q <= 0).float(), weight))
    return value, acc


# Gradient-norm clip of the ratio's updates (guards the rare blow-up on far draws).
RATIO_GRAD_CLIP = 10.0


class RatioLearner:
    """A ratio network with its optimiser and moving average (schedule.RatioAverage);
    the two training strategies (contrastive.py, empirical.py) build on it."""

    def __init__(self, in_dim: int, settings, ema: float, device):
        from .schedule import RatioAverage

        self.settings = settings
        self.net = RatioEstimator(in_dim, settings.ratio.hidden).to(device)
        self.average = RatioAverage(self.net, ema)
        # plain Adam, no weight decay: a decaying MLP flattens the log ratio wherever
        # only the MLP can carry it, e.g. a noise scale's 1/σ² on a squared residual
        self.opt = torch.optim.Adam(self.net.parameters(), lr=settings.ratio_lr, fused=True)

    def fit_input_scaling(self, blocks: list[Tensor]) -> None:
        """Standardise the network's input blocks; the average starts from it."""
        self.net.fit_scaling(blocks)
        self.average.restart()

    def apply(self, features: Tensor, averaged: bool = True) -> Tensor:
        """The logit of features [..., F]: the moving average's (what q reads) or the
        network's own (what trains)."""
        return (self.average.average if averaged else self.net)(features)

    def learn(self, k: int, loss: Tensor, acc: Tensor) -> tuple[Tensor, Tensor]:
        """One optimiser step on `loss`; returns (loss, accuracy) detached."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), RATIO_GRAD_CLIP)
        self.opt.step()
        self.average.update(k)
        return loss.detach(), acc

    def modules(self) -> dict[str, nn.Module]:
        """What a checkpoint holds."""
        mods = {"ratio": self.net}
        if self.average.average is not self.net:
            mods["ratio_avg"] = self.average.average
        return mods
