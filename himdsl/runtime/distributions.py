"""Distributions of the language as `torch.distributions` objects.

    >>> d = make("Normal", (3,), like, loc=0.0, scale=1.0)
    >>> d.event_shape, d.batch_shape
    (torch.Size([3]), torch.Size([]))

`make` broadcasts the arguments against the draw shape and reinterprets the
draw axes as event axes (`Independent`), so `log_prob` sums over one draw.
The table of names and arguments is `himdsl.semantics.builtins.DISTRIBUTIONS`.
"""
from __future__ import annotations

import torch
from torch import distributions as D

from ..semantics.builtins import DISTRIBUTIONS

TORCH_CLASSES = {name: getattr(D, name) for name in DISTRIBUTIONS}
# Where the language's argument names differ from torch's.
TORCH_ARGUMENTS = {"Beta": {"a": "concentration1", "b": "concentration0"}}


def make(name: str, shape: tuple[int, ...], like: torch.Tensor, **params) -> D.Distribution:
    """The distribution `name(**params)` with draws of element shape `shape`.

    Parameters are tensors whose trailing axes are element axes (already lifted by
    the code generator) or Python numbers; `like` fixes device and dtype."""
    renamed = TORCH_ARGUMENTS.get(name, {})
    tensors = {renamed.get(k, k): _as_tensor(v, like) for k, v in params.items()}
    base = TORCH_CLASSES[name](**tensors, validate_args=False)
    batch = torch.broadcast_shapes(base.batch_shape, tuple(shape))
    if base.batch_shape != batch:
        base = base.expand(batch)
    return D.Independent(base, len(shape)) if shape else base


def _as_tensor(value, like: torch.Tensor) -> torch.Tensor:
    if torch.is_tensor(value):
        return value if value.is_floating_point() else value.to(like.dtype)
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def sample(dist: D.Distribution, batch: tuple[int, ...]) -> torch.Tensor:
    """One draw for every element of `batch`, reparameterised where possible."""
    if tuple(dist.batch_shape) != tuple(batch):
        dist = dist.expand(torch.Size(batch))
    return dist.rsample() if dist.has_rsample else dist.sample()


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
