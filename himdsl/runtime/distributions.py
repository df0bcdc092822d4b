"""Distributions of the language as `torch.distributions` objects.

    >>> d = make("Normal", (3,), like, loc=0.0, scale=1.0)
    >>> d.event_shape, d.batch_shape
    (torch.Size([3]), torch.Size([]))

`make` broadcasts the arguments against the draw shape and reinterprets the
draw axes as event axes (`Independent`), so `log_prob` sums over one draw.
The table of names and arguments is `himdsl.semantics.builtins.DISTRIBUTIONS`.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import distributions as D
from torch.distributions import constraints

from ..semantics.builtins import DISTRIBUTIONS


class HalfStudentT(D.TransformedDistribution):
    """|T| for T ~ StudentT(df, 0, scale): Stan's `student_t` with `<lower=0>`, which
    torch lacks (written like torch's HalfNormal and HalfCauchy)."""

    arg_constraints = {"df": constraints.positive, "scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, df, scale, validate_args=None):
        base = D.StudentT(df, torch.zeros_like(torch.as_tensor(scale)), scale, validate_args=False)
        super().__init__(base, D.AbsTransform(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HalfStudentT, _instance)
        return super().expand(batch_shape, _instance=new)

    @property
    def df(self):
        return self.base_dist.df

    @property
    def scale(self):
        return self.base_dist.scale

    @property
    def mean(self):
        df = self.df
        log_mean = (torch.lgamma((df + 1) / 2) - torch.lgamma(df / 2) + 0.5 * torch.log(df / math.pi)
                    + math.log(2) - torch.log(df - 1))
        return torch.where(df > 1, self.scale * log_mean.exp(), torch.full_like(df, math.inf))

    @property
    def variance(self):
        df = self.df
        second = self.scale.pow(2) * df / (df - 2)
        return torch.where(df > 2, second - self.mean.pow(2), torch.full_like(df, math.inf))

    def log_prob(self, value):
        log_prob = self.base_dist.log_prob(value) + math.log(2)
        return torch.where(value >= 0, log_prob, -math.inf)


TORCH_CLASSES = {name: getattr(D, name, None) for name in DISTRIBUTIONS} | {"HalfStudentT": HalfStudentT}
# Where the language's argument names differ from torch's.
TORCH_ARGUMENTS = {"Beta": {"a": "concentration1", "b": "concentration0"}}


def make(name: str, shape: tuple[int, ...], like: torch.Tensor, **params) -> D.Distribution:
    """The distribution `name(**params)` with draws of element shape `shape`.

    Parameters are tensors whose trailing axes are element axes (already lifted by
    the code generator) or Python numbers; `like` fixes device and dtype. A vector
    distribution (Dirichlet) takes the last axis of `shape` as its event."""
    spec = DISTRIBUTIONS[name]
    renamed = TORCH_ARGUMENTS.get(name, {})
    tensors = {k: _as_tensor(v, like) for k, v in params.items()}
    if spec.event_rank:
        tensors = {k: t if spec.extra(k) else _event_sized(t, shape[-1]) for k, t in tensors.items()}
    with _unvalidated():
        base = TORCH_CLASSES[name](**{renamed.get(k, k): t for k, t in tensors.items()}, validate_args=False)
        elements = tuple(shape[:len(shape) - spec.event_rank])
        batch = torch.broadcast_shapes(base.batch_shape, elements)
        if base.batch_shape != batch:
            base = base.expand(batch)
    return D.Independent(base, len(elements)) if elements else base


@contextmanager
def _unvalidated():
    """torch validates the distributions some distributions build inside themselves
    (StudentT's Chi2, Beta's Dirichlet) whatever `validate_args` says, so a parameter
    from a prior's tail (a Student-t's df = 0) raised; `sample` fails that element
    instead."""
    previous = D.Distribution._validate_args
    D.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        D.Distribution.set_default_validate_args(previous)


def _event_sized(t: torch.Tensor, size: int) -> torch.Tensor:
    """`t` with a last (event) axis of `size`: a scalar or a size-1 axis is repeated."""
    return t.expand(*(t.shape[:-1] if t.dim() else ()), size)


def _as_tensor(value, like: torch.Tensor) -> torch.Tensor:
    if torch.is_tensor(value):
        return value if value.is_floating_point() else value.to(like.dtype)
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def sample(dist: D.Distribution, batch: tuple[int, ...]) -> torch.Tensor:
    """One draw for every element of `batch`, reparameterised where possible."""
    if tuple(dist.batch_shape) != tuple(batch):
        with _unvalidated():
            dist = dist.expand(torch.Size(batch))
    if not dist.has_rsample:
        return _discrete_sample(dist)
    return _nan_where(_invalid(dist), dist.rsample())


def _invalid(dist: D.Distribution) -> torch.Tensor | None:
    """Where a parameter breaks its constraint (a zero or negative scale or df, NaN),
    as a mask of the draw's shape (None when no parameter can be checked): those
    elements are failed simulations (NaN), as `_discrete_sample`'s are, not draws of
    a distribution that does not exist."""
    base = dist.base_dist if isinstance(dist, D.Independent) else dist
    bad = None
    for key, constraint in base.arg_constraints.items():
        value = getattr(base, key, None)
        if constraints.is_dependent(constraint) or not torch.is_tensor(value):
            continue
        broken = ~constraint.check(value).expand(base.batch_shape)
        bad = broken if bad is None else bad | broken
    if bad is None:
        return None
    return bad.reshape(bad.shape + (1,) * len(base.event_shape)).expand(base.batch_shape + base.event_shape)


# Poisson rates above this are drawn as round(rate + √rate · ε): torch's sampler
# overflows int64 near 1e19, and the normal approximation is exact to float precision.
POISSON_NORMAL_ABOVE = 1e12


def _discrete_sample(dist: D.Distribution) -> torch.Tensor:
    """A draw where torch's sampler would raise or overflow on a parameter from a
    prior's tail (a NaN or negative Poisson rate, a probability outside [0, 1]): such
    elements come back NaN, a failed simulation the trainer drops and counts."""
    base = dist.base_dist if isinstance(dist, D.Independent) else dist
    if isinstance(base, D.Poisson):
        return _poisson(base.rate)
    if isinstance(base, D.Bernoulli):
        p = base.probs
        bad = ~((p >= 0) & (p <= 1))
        return _nan_where(bad, torch.bernoulli(p.masked_fill(bad, 0.0)))
    if isinstance(base, D.Categorical):
        p = base.probs
        bad = ~((p >= 0) & torch.isfinite(p)).all(-1)
        safe = D.Categorical(probs=p.masked_fill(bad[..., None], 1.0), validate_args=False)
        return _nan_where(bad, safe.sample().to(p.dtype))
    if isinstance(base, (D.Binomial, D.NegativeBinomial)):
        bad = _invalid(base)
        safe = type(base)(base.total_count.masked_fill(bad, 1.0), probs=base.probs.masked_fill(bad, 0.5),
                          validate_args=False)
        return _nan_where(bad, safe.sample())
    return dist.sample()


def _poisson(rate: torch.Tensor) -> torch.Tensor:
    bad = ~(rate >= 0)                                 # NaN or negative
    big = rate > POISSON_NORMAL_ABOVE                  # inf included: stays inf
    draw = torch.poisson(rate.masked_fill(bad | big, 0.0))
    if bool(big.any()):
        approx = (rate + rate.sqrt() * torch.randn_like(rate)).round()
        draw = torch.where(big, approx, draw)
    return _nan_where(bad, draw)


def _nan_where(bad: torch.Tensor | None, draw: torch.Tensor) -> torch.Tensor:
    return draw.masked_fill(bad, math.nan) if bad is not None and bool(bad.any()) else draw


def centre(dist: D.Distribution, batch: tuple[int, ...]) -> torch.Tensor:
    """The distribution's mean for every element of `batch` (a draw where the mean
    is undefined, e.g. Cauchy)."""
    if tuple(dist.batch_shape) != tuple(batch):
        dist = dist.expand(torch.Size(batch))
    try:
        mean = dist.mean
    except NotImplementedError:
        return dist.sample()
    return torch.where(torch.isfinite(mean), mean, dist.sample())


def _normal(shape, like, loc, scale):
    draw = torch.randn(shape, dtype=like.dtype, device=like.device)
    return _affine(draw, scale, loc)


def _uniform(shape, like, low, high):
    draw = torch.rand(shape, dtype=like.dtype, device=like.device)
    return _affine(draw, high - low, low)


def _affine(draw: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    if scale != 1:
        draw.mul_(scale)
    if shift != 0:
        draw.add_(shift)
    return draw


# Samplers for distributions whose arguments are all constants (noise, mostly):
# one kernel for the draw, in-place scaling, no distribution object.
CONSTANT_SAMPLERS = {"Normal": _normal, "Uniform": _uniform}


def sample_constant(name: str, shape: tuple[int, ...], like: torch.Tensor, **params) -> torch.Tensor:
    """A draw of `name(**params)` (Python numbers) with shape `shape`."""
    sampler = CONSTANT_SAMPLERS.get(name)
    if sampler is None:
        return sample(make(name, (), like, **params), shape)
    return sampler(shape, like, *params.values())
