"""Amortised guides q(z_n | x_n, β) for the local latents.

Both take features of one data row (observations one-hot encoded where
categorical, and covariates) and the flattened globals:

    guide = GaussianLocalGuide(x_dim=2, g_dim=2, z_dim=2)
    z, log_q = guide.rsample(x, beta)      # x [S, M, 2], beta [S, 2] -> [S, M, 2], [S, M]

`GaussianLocalGuide` has an exact density; `ImplicitLocalGuide` pushes noise
through a network and has none (log_q is None).

The Gaussian guide works in the coordinates of the local's own prior when it has
one (`PriorCoordinates`): v ~ N(m, s²) and z = T(loc + scale · v), with loc and
scale the prior's location and scale at this draw of β and T its support's map.
At v ~ N(0, 1) q is (close to) the prior; a prior scale that shrinks towards zero
(a hierarchical model's funnel) shrinks q with it, as a non-centred
parameterisation does for HMC; and z never leaves the prior's support.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import distributions as D
from torch import nn

from ..runtime.distributions import HalfStudentT
from ..runtime.lib import ACTIVATIONS, UNARY
from .ratio import Standardizer, mlp, robust_moments

Tensor = torch.Tensor
_LOG_2PI = math.log(2 * math.pi)
# Once β is in q's units the guide reads it clipped to this many of them (q's
# interquartile spread / 1.349 about its median, a sd for a Gaussian q): a
# straight extrapolation of its slope to the prior's tails (the ratio's proposals)
# put a hierarchical logistic model's group effects where no data are (C2ST 0.97).
Q_BAND = 4.0
# location-scale families on the real line: z = loc + scale · v
_LOCATION_SCALE = (D.Normal, D.Laplace, D.StudentT, D.Gumbel, D.Cauchy)
# |X| of a zero-centred location-scale X: z = exp(log scale + v)
_HALF = (D.HalfNormal, D.HalfCauchy, HalfStudentT)


@dataclass
class PriorCoordinates:
    """z = T(loc + scale · v) per coordinate of the flat locals [S, M, Dz]; T is the
    identity, exp or an interval's sigmoid (`kind` per coordinate: 0, 1, 2)."""

    loc: Tensor
    scale: Tensor
    kind: Tensor          # [Dz] long
    low: Tensor           # interval bounds (kind 2), broadcast like loc
    high: Tensor

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """z and log |dz/dv| summed over coordinates [S, M]."""
        a = self.loc + self.scale * v
        exp_a = a.clamp(max=80).exp()
        sig = torch.sigmoid(a)
        width = self.high - self.low
        z = torch.where(self.kind == 1, exp_a, torch.where(self.kind == 2, self.low + width * sig, a))
        log_t = torch.where(self.kind == 1, a, torch.where(
            self.kind == 2, width.abs().clamp_min(1e-30).log() + torch.nn.functional.logsigmoid(a)
            + torch.nn.functional.logsigmoid(-a), torch.zeros_like(a)))
        return z, (log_t + self.scale.log()).sum(-1)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """v and log |dz/dv| [S, M] (for `forward(v) == z`)."""
        width = self.high - self.low
        frac = ((z - self.low) / width).clamp(1e-7, 1 - 1e-7)
        a = torch.where(self.kind == 1, z.clamp_min(1e-30).log(),
                        torch.where(self.kind == 2, torch.log(frac) - torch.log1p(-frac), z))
        v = (a - self.loc) / self.scale
        return v, self.forward(v)[1]


def prior_coordinates(dists: dict, blocks, standardised: tuple[str, ...], like: Tensor) -> PriorCoordinates:
    """The coordinates of each local block: from its prior distribution (batch
    [S, M], event its shape) when the block is `standardised`, else the identity."""
    parts = [_block_coordinates(dists.get(b.name) if b.name in standardised else None, b, like)
             for b in blocks]
    lead = like.shape[:-1]
    cat = [torch.cat([p[i].expand(*lead, p[i].shape[-1]) for p in parts], -1) for i in (0, 1, 3, 4)]
    kind = torch.cat([p[2] for p in parts])
    return PriorCoordinates(cat[0], cat[1], kind, cat[2], cat[3])


def coordinates_at(view, names: tuple[str, ...], globals: dict, rows: dict, per_row: bool = False):
    """The prior coordinates of the locals `names` at these globals and data rows
    (batch [S, M], or with `per_row` row k at draw k, [K, 1]); None without any."""
    if not names:
        return None
    dists = view.local_priors(globals, rows, per_row)
    s = next(iter(globals.values())).shape[0] if globals else view.rows_in(rows)
    like = torch.zeros(s, 1 if per_row else view.rows_in(rows), view.z_dim, device=view.device)
    return prior_coordinates(dists, view.z_blocks, names, like)


def _block_coordinates(dist, block, like: Tensor):
    """(loc, scale, kind, low, high) of one block, each [.., width] (kind [width])."""
    width = block.width
    lead = like.shape[:-1]
    zeros = like.new_zeros(*lead, width)
    if dist is None:
        return zeros, zeros + 1, torch.zeros(width, dtype=torch.long, device=like.device), zeros, zeros + 1
    base = dist.base_dist if isinstance(dist, D.Independent) else dist
    elements = tuple(block.shape)[:len(block.shape) - len(base.event_shape)]
    base = base.expand(torch.Size(tuple(lead) + elements))

    def flat(t):
        return t.reshape(*lead, width).to(like.dtype)
    kind = 0
    low, high = zeros, zeros + 1
    if isinstance(base, _LOCATION_SCALE):
        loc, scale = flat(base.loc), flat(base.scale)
    elif isinstance(base, D.LogNormal):
        loc, scale, kind = flat(base.loc), flat(base.scale), 1
    elif isinstance(base, D.MultivariateNormal):
        loc, scale = flat(base.mean), flat(base.stddev)
    elif isinstance(base, _HALF):
        loc, scale, kind = flat(base.scale).log(), zeros + 1, 1
    elif isinstance(base, D.Weibull):     # log z = log scale + Gumbel-min / concentration
        loc, scale, kind = flat(base.scale).log(), flat(base.concentration).reciprocal().clamp(max=1.0), 1
    elif isinstance(base, D.Exponential):
        loc, scale, kind = -flat(base.rate).log(), zeros + 1, 1
    elif isinstance(base, D.Gamma):
        c, r = flat(base.concentration), flat(base.rate)
        loc, scale, kind = (c / r).log(), c.rsqrt().clamp(max=1.0), 1
    elif isinstance(base, D.Uniform):
        loc, scale, kind, low, high = zeros, zeros + 1.7, 2, flat(base.low), flat(base.high)
    elif isinstance(base, D.Beta):
        a, b = flat(base.concentration1), flat(base.concentration0)
        loc, scale, kind = (a / b).log(), zeros + 1, 2
    else:
        loc, scale = zeros, zeros + 1
    return loc, scale, torch.full((width,), kind, dtype=torch.long, device=like.device), low, high


class LocalGuide(nn.Module):
    """Shared input handling: standardised [x features, globals]."""

    has_density = True

    def __init__(self, x_dim: int, g_dim: int, z_dim: int):
        super().__init__()
        self.x_dim, self.g_dim, self.z_dim = x_dim, g_dim, z_dim
        self.scale = Standardizer(x_dim + g_dim)
        # |standardised β| is clipped here once β is in q's units (0: not yet)
        self.register_buffer("g_band", torch.zeros(()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint from before β in q's units has no band
        state_dict.setdefault(prefix + "g_band", torch.zeros(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit_scaling(self, x: Tensor, g: Tensor) -> None:
        """Standardise inputs by moments of data features [.., x_dim] and globals [S, g_dim]."""
        self.scale.fit_blocks([x, g])

    def inputs(self, x: Tensor, g: Tensor) -> Tensor:
        """[S, M, x_dim] and [S, g_dim] (or [S, M, g_dim]) -> [S, M, x_dim + g_dim] standardised."""
        if g.dim() == 2:
            g = g[:, None, :].expand(*x.shape[:2], self.g_dim)
        v = self.scale(torch.cat([x, g], -1))
        if not self.g_band:
            return v
        band = self.g_band
        return torch.cat([v[..., :self.x_dim], v[..., self.x_dim:].clamp(-band, band)], -1)

    def first_layers(self) -> list[nn.Linear]:
        """The linear layers that read the standardised inputs (as their first columns)."""
        return [self.net[0], self.linear]

    @torch.no_grad()
    def rescale_globals(self, g: Tensor, optimiser: torch.optim.Optimizer | None = None) -> None:
        """Standardise the globals' inputs by q's draws g [S, g_dim], keeping the guide's
        function: the first layers absorb the change, and Adam's moments of their
        columns are rescaled to match.

        The guide must learn how a row's posterior moves with β across q's range.
        Standardised by the prior's spread, that range is a sliver of each input, and
        the slope learns about spread / sd_q times slower than the rest: q(β) then
        feels a guide that cannot follow it, and narrows (docs/lfvi.md). Beyond
        `Q_BAND` sds of q, where it never trains, the guide answers as at the band's
        edge: the ratio's proposals ask it at widened and prior draws of β.

        q's units are its draws' median and interquartile spread, not their mean and
        sd: a positive global's q is heavy-tailed in its own units (log-normal), and
        a few far draws would otherwise set a unit thousands of times the bulk's,
        which the first layers' weights absorb and carry back multiplied."""
        if self.g_dim == 0:
            return
        cols = slice(self.x_dim, self.x_dim + self.g_dim)
        centre, spread = robust_moments(g)
        self.scale.move(cols, centre, spread, self.first_layers(), optimiser)
        self.g_band.fill_(Q_BAND)

    def rsample(self, x: Tensor, g: Tensor, coords: PriorCoordinates | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """z [S, M, z_dim] and log q(z | x, β) [S, M] (None when implicit)."""
        raise NotImplementedError

    def log_prob(self, z: Tensor, x: Tensor, g: Tensor, coords: PriorCoordinates | None = None) -> Tensor:
        """log q(z | x, β): [S, M]."""
        raise NotImplementedError


class GaussianLocalGuide(LocalGuide):
    """v ~ N(μ(x, β), Σ(x, β)), z = T(loc + scale · v) in the prior's coordinates (the
    identity without them); μ has a linear skip connection.

    With `correlated`, Σ = S C Cᵀ S: S the diagonal of σ(x, β), C unit lower
    triangular, its lower part from the network (zero at the start: q starts
    diagonal). A row's locals read the same data, so their posterior is correlated
    (an intercept and a slope of one group: ρ = −x̄ / rms(x)), and a diagonal q,
    fitted by the ELBO, takes each local's sd given the others, √(1 − ρ²) of its
    marginal one. det C = 1, so
    log q is the diagonal guide's in ε = C⁻¹ S⁻¹ (v − μ)."""

    def __init__(self, x_dim, g_dim, z_dim, hidden: tuple[int, ...] = (64, 64), correlated: bool = False):
        super().__init__(x_dim, g_dim, z_dim)
        self.pairs = z_dim * (z_dim - 1) // 2 if correlated else 0
        self.net = mlp(x_dim + g_dim, hidden, 2 * z_dim + self.pairs)
        self.linear = nn.Linear(x_dim + g_dim, z_dim)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("below", torch.tril_indices(z_dim, z_dim, -1), persistent=False)
        self._kept: list | None = None

    def factors(self, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Mean and log σ of v [S, M, z_dim], and C [S, M, z_dim, z_dim] (None: diagonal)."""
        v = self.inputs(x, g)
        out = self.net(v)
        mean = self.linear(v) + out[..., :self.z_dim]
        log_sd = out[..., self.z_dim:2 * self.z_dim].clamp(-12, 6)
        mix = None
        if self.pairs:
            lower = torch.zeros(*out.shape[:-1], self.z_dim, self.z_dim, dtype=out.dtype, device=out.device)
            lower[..., self.below[0], self.below[1]] = out[..., 2 * self.z_dim:]
            mix = lower + torch.eye(self.z_dim, dtype=out.dtype, device=out.device)
        if self._kept is not None:
            mean = mean.detach().requires_grad_()
            self._kept.append((mean, log_sd.detach(), None if mix is None else mix.detach()))
        return mean, log_sd, mix

    @contextmanager
    def mean_as_input(self):
        """Inside the block every mean the guide computes is a fresh tensor that
        requires grad, kept with its log σ and C in the yielded list: the gradient
        of an objective in q's mean (advice.py's check of the locals' means)."""
        self._kept = []
        try:
            yield self._kept
        finally:
            self._kept = None

    def moments(self, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log of the marginal sd of v: [S, M, z_dim] each."""
        mean, log_sd, mix = self.factors(x, g)
        if mix is None:
            return mean, log_sd
        return mean, log_sd + 0.5 * mix.pow(2).sum(-1).log()

    def rsample(self, x, g, coords=None, widen: float = 1.0):
        """`widen` multiplies q's sd (a broader proposal for the ratio's training)."""
        mean, log_sd, mix = self.factors(x, g)
        eps = torch.randn_like(mean)
        log_q = -0.5 * (eps.pow(2) + _LOG_2PI).sum(-1) - log_sd.sum(-1) - self.z_dim * math.log(widen)
        noise = eps if mix is None else (mix @ eps.unsqueeze(-1)).squeeze(-1)
        v = mean + widen * log_sd.exp() * noise
        if coords is None:
            return v, log_q
        z, logdet = coords.forward(v)
        return z, log_q - logdet

    def log_prob(self, z, x, g, coords=None):
        logdet = 0.0
        if coords is not None:
            z, logdet = coords.inverse(z)
        mean, log_sd, mix = self.factors(x, g)
        eps = (z - mean) / log_sd.exp()
        if mix is not None:
            eps = torch.linalg.solve_triangular(mix, eps.unsqueeze(-1), upper=False, unitriangular=True).squeeze(-1)
        return -0.5 * (eps.pow(2) + _LOG_2PI).sum(-1) - log_sd.sum(-1) - logdet


class ImplicitLocalGuide(LocalGuide):
    """z = f(T(δ, x, β)), δ ~ N(0, I_noise): no density (Tran et al. 2017, Sec. 3).

    `activations`: (start, stop, name) slices of z passed through the function that
    defines the latent in the model (`latent z = dense(.., relu)`), so q(z | x) has the
    model's support: a relu unit is ≥ 0 with an atom at 0, which no Gaussian has, and a
    ratio separates p from q on that alone (examples/deep_implicit/README.md)."""

    has_density = False

    def __init__(self, x_dim, g_dim, z_dim, hidden: tuple[int, ...] = (64, 64), noise: int = 16,
                 activations: tuple[tuple[int, int, str], ...] = ()):
        super().__init__(x_dim, g_dim, z_dim)
        self.noise = noise
        self.activations = tuple(activations)
        self._functions = [(start, stop, ACTIVATIONS.get(name) or UNARY[name])
                           for start, stop, name in self.activations]
        self.net = mlp(x_dim + g_dim + noise, hidden, z_dim)
        self.linear = nn.Linear(x_dim + g_dim, z_dim)

    def rsample(self, x, g, coords=None, widen: float = 1.0):
        v = self.inputs(x, g)
        delta = widen * torch.randn(*v.shape[:-1], self.noise, device=v.device)
        return self._support(self.linear(v) + self.net(torch.cat([v, delta], -1))), None

    def _support(self, z: Tensor) -> Tensor:
        if not self._functions:
            return z
        parts, last = [], 0
        for start, stop, function in self._functions:
            parts += [z[..., last:start], function(z[..., start:stop])]
            last = stop
        return torch.cat(parts + [z[..., last:]], -1)

    def log_prob(self, z, x, g, coords=None):
        raise TypeError("an implicit local guide has no density")


LOCAL_FAMILIES = {"gaussian": GaussianLocalGuide, "implicit": ImplicitLocalGuide}
