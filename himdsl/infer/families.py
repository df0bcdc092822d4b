"""Variational families q(β) for the globals, in unconstrained space.

Each family is a distribution over a flat vector u of D unconstrained values with
a reparameterised sampler and a density:

    q = NormalizingFlow(2)
    u, log_q = q.rsample(16)          # [16, 2], [16]
    q.log_prob(u)                     # [16], equal to log_q

`GlobalGuide` groups globals into blocks (one family each) and maps u to the
constrained globals through the model's bijectors, adding the log-determinant.
Its families live in standardised coordinates v = (u − the prior's median) / the
prior's spread, so that an optimiser's step (≈ its learning rate in the
parameters' units) is the same fraction of the prior whatever the prior's scale.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .ratio import robust_moments

Tensor = torch.Tensor

# A joint flow over every `auto` global up to this many unconstrained dimensions,
# a mean-field normal beyond.
AUTO_FLOW_MAX_DIMS = 16
# q's start is at most this wide in unconstrained units (and at least START_SD_MIN),
# whatever the prior's spread: a Cauchy or a wide prior would start q in far tails.
START_SD_MIN, START_SD_MAX = 1e-2, 10.0
SPREAD_MIN = 1e-6     # a prior with no spread in a coordinate is standardised by 1 there
_LOG_2PI = math.log(2 * math.pi)


def _std_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)


class Family(nn.Module):
    """A distribution over [D] unconstrained vectors."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def rsample(self, num: int) -> tuple[Tensor, Tensor]:
        """Reparameterised draws and their log density: ([num, D], [num])."""
        raise NotImplementedError

    def log_prob(self, u: Tensor) -> Tensor:
        """log q(u): [num]."""
        raise NotImplementedError

    def init_moments(self, mean: Tensor, sd: Tensor) -> None:
        """Start near a distribution with these moments (e.g. the prior's)."""
        raise NotImplementedError

    def _noise(self, num: int) -> Tensor:
        return torch.randn(num, self.dim, device=self.loc.device, dtype=self.loc.dtype)


class MeanFieldNormal(Family):
    """q(u) = N(loc, diag(scale²))."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def init_moments(self, mean, sd):
        with torch.no_grad():
            self.loc.copy_(mean)
            self.log_scale.copy_(sd.log())

    def rsample(self, num):
        eps = self._noise(num)
        return self.loc + self.log_scale.exp() * eps, _std_normal_log_prob(eps) - self.log_scale.sum()

    def log_prob(self, u):
        eps = (u - self.loc) / self.log_scale.exp()
        return _std_normal_log_prob(eps) - self.log_scale.sum()


class FullRankNormal(Family):
    """q(u) = N(loc, L Lᵀ) with L lower triangular, positive diagonal."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.off_diag = nn.Parameter(torch.zeros(dim, dim))

    def init_moments(self, mean, sd):
        with torch.no_grad():
            self.loc.copy_(mean)
            self.log_diag.copy_(sd.log())

    def scale_tril(self) -> Tensor:
        """The Cholesky factor L."""
        return torch.tril(self.off_diag, -1) + torch.diag(self.log_diag.exp())

    def rsample(self, num):
        eps = self._noise(num)
        return self.loc + eps @ self.scale_tril().T, _std_normal_log_prob(eps) - self.log_diag.sum()

    def log_prob(self, u):
        eps = torch.linalg.solve_triangular(self.scale_tril(), (u - self.loc).T, upper=False).T
        return _std_normal_log_prob(eps) - self.log_diag.sum()


class PointMass(Family):
    """q(u) = δ(u − loc): MAP estimation; the entropy term is dropped (log q = 0)."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.loc = nn.Parameter(torch.zeros(dim))

    def init_moments(self, mean, sd):
        with torch.no_grad():
            self.loc.copy_(mean)

    def rsample(self, num):
        return self.loc.expand(num, self.dim), torch.zeros(num, device=self.loc.device)

    def log_prob(self, u):
        return torch.zeros(u.shape[0], device=u.device)


# ---------------------------------------------------------------- spline flow
def _bins(raw: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor]:
    """Bin sizes and knot positions on [-bound, bound] from unnormalised sizes."""
    k = raw.shape[-1]
    sizes = min_size + (1 - min_size * k) * torch.softmax(raw, -1)
    knots = F.pad(torch.cumsum(sizes, -1), (1, 0))
    knots = 2 * bound * knots - bound
    knots = torch.cat([knots[..., :1] * 0 - bound, knots[..., 1:-1], knots[..., -1:] * 0 + bound], -1)
    return knots[..., 1:] - knots[..., :-1], knots


def _gather(values: Tensor, idx: Tensor) -> Tensor:
    return values.gather(-1, idx[..., None])[..., 0]


def rq_spline(x: Tensor, raw_w: Tensor, raw_h: Tensor, raw_d: Tensor,
              bound: float = 5.0, inverse: bool = False,
              min_size: float = 1e-3, min_deriv: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Monotone rational-quadratic spline on [-bound, bound], identity outside
    (Durkan et al. 2019). Returns the output and log |dy/dx| elementwise."""
    inside = (x > -bound) & (x < bound)
    xc = x.clamp(-bound + 1e-6, bound - 1e-6)
    widths, xk = _bins(raw_w, bound, min_size)
    heights, yk = _bins(raw_h, bound, min_size)
    derivs = F.pad(min_deriv + F.softplus(raw_d), (1, 1), value=1.0)
    knots = yk if inverse else xk
    idx = (torch.sum(xc[..., None] >= knots[..., :-1], -1) - 1).clamp(0, widths.shape[-1] - 1)
    x0, w, y0, h = _gather(xk, idx), _gather(widths, idx), _gather(yk, idx), _gather(heights, idx)
    d0, d1 = _gather(derivs, idx), _gather(derivs[..., 1:], idx)
    s = h / w
    if inverse:
        dy = xc - y0
        a = dy * (d0 + d1 - 2 * s) + h * (s - d0)
        b = h * d0 - dy * (d0 + d1 - 2 * s)
        c = -s * dy
        # Floor the discriminant above 0: sqrt's derivative at 0 is inf, and autograd's
        # 0 · inf gives NaN gradients even for inputs outside the window (unused
        # torch.where branch); two_moons diverged from this.
        root = -b - torch.sqrt((b.pow(2) - 4 * a * c).clamp_min(1e-12))
        # In float32, a knot's own value (c = 0) can meet root = 0, and rounding can
        # put t just outside its bin, where the log-determinant's logs turn NaN (a
        # flow with sharp bins stopped a fit): t is a position within the bin, [0, 1].
        t = torch.where(root != 0, 2 * c / torch.where(root != 0, root, 1.0), 0.0).clamp(0.0, 1.0)
        out = t * w + x0
    else:
        t = (xc - x0) / w
        out = y0 + h * (s * t.pow(2) + d0 * t * (1 - t)) / (s + (d0 + d1 - 2 * s) * t * (1 - t))
    denom = s + (d0 + d1 - 2 * s) * t * (1 - t)
    logdet = 2 * torch.log(s) + torch.log(d1 * t.pow(2) + 2 * s * t * (1 - t) + d0 * (1 - t).pow(2)) \
        - 2 * torch.log(denom)
    logdet = -logdet if inverse else logdet
    return torch.where(inside, out, x), torch.where(inside, logdet, torch.zeros_like(logdet))


def _conditioner(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    """The MLP (GELU) that maps a coupling's kept coordinates to spline knots."""
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.GELU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, n_out))


class SplineCoupling(nn.Module):
    """Transforms the coordinates `moved` by a spline whose knots depend on the rest."""

    def __init__(self, dim: int, moved: list[int], hidden: tuple[int, ...] = (64, 64),
                 bins: int = 8, bound: float = 5.0):
        super().__init__()
        self.moved = moved
        self.kept = [i for i in range(dim) if i not in moved]
        self.bins, self.bound = bins, bound
        n_in = max(len(self.kept), 1)
        self.net = _conditioner(n_in, tuple(hidden), len(moved) * (3 * bins - 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self._deriv_shift = math.log(math.expm1(1 - 1e-3))  # zero output = identity

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cond = x[:, self.kept] if self.kept else x.new_zeros(x.shape[0], 1)
        p = self.net(cond).reshape(x.shape[0], len(self.moved), 3 * self.bins - 1)
        k = self.bins
        return p[..., :k], p[..., k:2 * k], p[..., 2 * k:] + self._deriv_shift

    def forward(self, x: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        """(y, log |det dy/dx|) ([n, D], [n]); `inverse` runs y -> x instead."""
        w, h, d = self._params(x)
        moved, logdet = rq_spline(x[:, self.moved], w, h, d, self.bound, inverse)
        out = x.clone()
        out[:, self.moved] = moved
        return out, logdet.sum(-1)


class NormalizingFlow(MeanFieldNormal):
    """u = loc + scale ⊙ f_K(…f_1(ε)), ε ~ N(0, I), f_k rational-quadratic spline
    couplings that alternate which half of the coordinates they move.

    **Moments first, then shape.** While `shaping` is off the couplings are skipped
    (they start as the identity, so q is then exactly its normal part) and get no
    gradient. A spline moves mass faster than loc and scale do: started 40 posterior
    sds from a linear regression's posterior, the ELBO's first gradients pushed one
    coordinate's mass against the spline's bound within 10 steps, where the bins
    squeezed it to 0.01 of the posterior's sd and their saturated softmax never let
    it go (the exact likelihood did the same). Where q is fitted by the ELBO from its
    narrow start, the trainer turns shaping on once the normal part has found the
    posterior's location and scale (`Plan.flow_shape_from`)."""

    def __init__(self, dim: int, layers: int = 4, hidden: tuple[int, ...] = (64, 64),
                 bins: int = 8):
        super().__init__(dim)
        self.layers = nn.ModuleList(
            SplineCoupling(dim, _half(dim, k), hidden, bins) for k in range(layers))
        self.shaping = True

    def rsample(self, num):
        z = self._noise(num)
        log_q = _std_normal_log_prob(z)
        for layer in self._active_layers():
            z, logdet = layer(z)
            log_q = log_q - logdet
        return self.loc + self.log_scale.exp() * z, log_q - self.log_scale.sum()

    def log_prob(self, u):
        z = (u - self.loc) / self.log_scale.exp()
        logdet_total = -self.log_scale.sum().expand(u.shape[0])
        for layer in reversed(self._active_layers()):
            z, logdet = layer(z, inverse=True)
            logdet_total = logdet_total + logdet
        return _std_normal_log_prob(z) + logdet_total

    def _active_layers(self) -> list:
        return list(self.layers) if self.shaping else []


def _half(dim: int, k: int) -> list[int]:
    """The coordinates coupling layer k moves: alternating halves, interleaved
    every other pair of layers so every coordinate conditions on every other."""
    if dim == 1:
        return [0]
    order = list(range(dim)) if (k // 2) % 2 == 0 else list(range(0, dim, 2)) + list(range(1, dim, 2))
    half = dim // 2
    return sorted(order[:half] if k % 2 == 0 else order[half:])


@dataclass
class FlowSpec:
    """`flow(layers = 4, hidden = [64, 64])`: a flow guide with its options."""

    layers: int = 4
    hidden: tuple[int, ...] = (64, 64)
    family: str = "flow"

    def options(self) -> dict:
        return {"layers": self.layers, "hidden": tuple(self.hidden)}


FAMILIES = {"flow": NormalizingFlow, "mvnormal": FullRankNormal,
            "normal": MeanFieldNormal, "point": PointMass}


# ---------------------------------------------------------------- guide over all globals
class GlobalGuide(nn.Module):
    """q(β): one family per block of globals, mapped to their supports.

    `families` maps each global to "auto", "flow", "mvnormal", "normal" or "point",
    or to a `FlowSpec` (a flow with options); all `auto` globals share one block,
    whose family `global_blocks` chooses (`full_batch`: every q step sees every row)."""

    def __init__(self, model, families: dict[str, str], full_batch: bool = True):
        super().__init__()
        self.names = list(model.global_names)
        self.shapes = {n: tuple(model.nodes[n].shape) for n in self.names}
        self.bijectors = {n: model.bijector(n) for n in self.names}
        self.u_shapes = {n: tuple(self.bijectors[n].inverse_shape(torch.Size(self.shapes[n])))
                         for n in self.names}
        options = {n: f.options() for n, f in families.items() if isinstance(f, FlowSpec)}
        families = {n: "flow" if isinstance(f, FlowSpec) else f for n, f in families.items()}
        self.blocks, kinds = self._blocks(families, full_batch)
        self.families = nn.ModuleList(
            FAMILIES[k](sum(math.prod(self.u_shapes[n]) for n in b), **options.get(b[0], {}))
            for b, k in zip(self.blocks, kinds))
        self.kinds = kinds
        ends = list(itertools.accumulate(f.dim for f in self.families))
        self.parts = [slice(end - f.dim, end) for f, end in zip(self.families, ends)]   # in u
        width = ends[-1] if ends else 0
        # u = center + spread ⊙ v: the families model v (identity until init_from_prior)
        self.register_buffer("center", torch.zeros(width))
        self.register_buffer("spread", torch.ones(width))

    def _blocks(self, families: dict[str, str], full_batch: bool) -> tuple[list[list[str]], list[str]]:
        dims = {n: math.prod(self.u_shapes[n]) for n in self.names}
        blocks = global_blocks(self.names, dims, families, full_batch)
        return [list(b) for b, _ in blocks], [k for _, k in blocks]

    @torch.no_grad()
    def init_from_prior(self, prior_draws: dict[str, Tensor], scale: float = 1.0) -> None:
        """Standardise by the prior's median and spread in unconstrained space, and
        start q there with `scale` times the prior's spread (the plan's `init_scale`;
        the start's spread is clipped to [START_SD_MIN, START_SD_MAX] for heavy tails)."""
        median, spread = robust_moments(self.flat_u(prior_draws))   # heavy-tailed priors
        self.center.copy_(median)
        self.spread.copy_(torch.where(spread > SPREAD_MIN, spread, torch.ones_like(spread)))
        self.set_moments(median, scale * spread.clamp(START_SD_MIN, START_SD_MAX))

    @torch.no_grad()
    def set_moments(self, mean: Tensor, sd: Tensor) -> None:
        """Put each block's family near N(mean, diag(sd²)) in unconstrained space
        (flat, block order)."""
        v_mean, v_sd = (mean - self.center) / self.spread, sd / self.spread
        for family, part in zip(self.families, self.parts):
            family.init_moments(v_mean[part], v_sd[part])

    def set_shaping(self, on: bool) -> None:
        """Let the flows' splines shape q (NormalizingFlow: moments first, then shape)."""
        for family in self.families:
            if isinstance(family, NormalizingFlow):
                family.shaping = on

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint from before the standardisation holds families over u itself
        for name, fill in (("center", self.center.new_zeros), ("spread", self.spread.new_ones)):
            state_dict.setdefault(prefix + name, fill(self.center.shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def unconstrain(self, globals: dict[str, Tensor]) -> dict[str, Tensor]:
        """{name: [S, d_u]} unconstrained flat values."""
        return {n: self.bijectors[n].inv(globals[n]).reshape(globals[n].shape[0], -1)
                for n in self.names}

    def flat_u(self, globals: dict[str, Tensor]) -> Tensor:
        """Constrained globals -> the flat unconstrained draw u [S, Du] (block order)."""
        return self._concat(self.unconstrain(globals))

    def _concat(self, flat: dict[str, Tensor]) -> Tensor:
        return torch.cat([flat[n] for b in self.blocks for n in b], -1)

    def rsample(self, num: int) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Globals {name: [S, *shape]}, log q(β) [S] (constrained density) and the
        flat unconstrained draw u [S, Du]."""
        vs, log_q = [], 0.0
        for family in self.families:
            v, lq = family.rsample(num)
            vs.append(v)
            log_q = log_q + lq
        u = self.center + self.spread * torch.cat(vs, -1)
        globals, logdet = self.constrain(u)
        return globals, log_q - self.spread.log().sum() - logdet, u

    def constrain(self, u: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Flat unconstrained u [S, Du] -> globals and log |det dβ/du| [S]."""
        out, logdet, start = {}, torch.zeros(u.shape[0], device=u.device), 0
        for name in [n for b in self.blocks for n in b]:
            width = math.prod(self.u_shapes[name])
            ui = u[:, start:start + width].reshape(u.shape[0], *self.u_shapes[name])
            start += width
            out[name] = self.bijectors[name](ui)
            ld = self.bijectors[name].log_abs_det_jacobian(ui, out[name])
            logdet = logdet + ld.reshape(u.shape[0], -1).sum(-1)
        return out, logdet

    def log_prob(self, globals: dict[str, Tensor]) -> Tensor:
        """log q(β) of constrained globals: [S]."""
        u = self.flat_u(globals)
        return self.log_prob_u(u) - self.constrain(u)[1]

    def log_prob_u(self, u: Tensor) -> Tensor:
        """log q(u) of flat unconstrained draws u [S, Du] (block order): [S]."""
        v, log_q = (u - self.center) / self.spread, 0.0
        for family, part in zip(self.families, self.parts):
            log_q = log_q + family.log_prob(v[:, part])
        return log_q - self.spread.log().sum()

    def u_sd(self, u: Tensor) -> Tensor:
        """Per-coordinate spread of a batch of draws u [S, Du]."""
        return u.std(0) if u.shape[0] > 1 else torch.zeros_like(u[0])


def global_blocks(names: list[str], u_dims: dict[str, int], families: dict[str, str],
                  full_batch: bool = True) -> list[tuple[tuple[str, ...], str]]:
    """(globals, family) blocks of q(β): one per global named in `families`, and one
    joint block of the `auto` ones (`auto_family`)."""
    unknown = set(families) - set(names)
    if unknown:
        raise ValueError(f"guide names unknown global(s): {', '.join(sorted(unknown))}")
    chosen = {n: families.get(n, "auto") for n in names}
    bad = [f for f in chosen.values() if f != "auto" and f not in FAMILIES]
    if bad:
        raise ValueError(f"unknown guide family {bad[0]!r}; expected one of auto, {', '.join(FAMILIES)}")
    blocks = [((n,), f) for n in names if (f := chosen[n]) != "auto"]
    auto = tuple(n for n in names if chosen[n] == "auto")
    if auto:
        blocks.append((auto, auto_family(sum(u_dims[n] for n in auto), full_batch)))
    return blocks


def auto_family(dims: int, full_batch: bool) -> str:
    """The `auto` family: beyond AUTO_FLOW_MAX_DIMS unconstrained dimensions a
    mean-field normal. Below, a flow when every q step sees every row (its gradient
    is then exact up to the draws of q, and a posterior of few rows may be far from
    Gaussian), else a full-rank normal: with minibatches the gradient's noise grows
    with N / batch, a flow's extra freedom absorbs it as spurious shape (its sd came
    out 0.57–0.79 of the exact one on the conjugate Gaussian, N = 1,000, where a
    Gaussian q gave 0.97–0.99), and a posterior of many rows is close to Gaussian
    (Bernstein–von Mises)."""
    if dims > AUTO_FLOW_MAX_DIMS:
        return "normal"
    return "flow" if full_batch else "mvnormal"
