"""Amortised guides q(z_n | x_n, β) for the local latents.

Both take features of one data row (observations one-hot encoded where
categorical, and covariates) and the flattened globals:

    guide = GaussianLocalGuide(x_dim=2, g_dim=2, z_dim=2)
    z, log_q = guide.rsample(x, beta)      # x [S, M, 2], beta [S, 2] -> [S, M, 2], [S, M]

`GaussianLocalGuide` has an exact density (the ratio then carries only the model
side, see docs/lfvi.md); `ImplicitLocalGuide` pushes noise through a network and
has none (log_q is None).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..runtime.lib import ACTIVATIONS, UNARY
from .ratio import Standardizer, mlp

Tensor = torch.Tensor
_LOG_2PI = math.log(2 * math.pi)


class LocalGuide(nn.Module):
    """Shared input handling: standardised [x features, globals]."""

    has_density = True

    def __init__(self, x_dim: int, g_dim: int, z_dim: int):
        super().__init__()
        self.x_dim, self.g_dim, self.z_dim = x_dim, g_dim, z_dim
        self.scale = Standardizer(x_dim + g_dim)

    def fit_scaling(self, x: Tensor, g: Tensor) -> None:
        """Standardise inputs by moments of data features [.., x_dim] and globals [S, g_dim]."""
        self.scale.fit_blocks([x, g])

    def inputs(self, x: Tensor, g: Tensor) -> Tensor:
        """[S, M, x_dim] and [S, g_dim] -> [S, M, x_dim + g_dim] standardised."""
        g = g[:, None, :].expand(*x.shape[:2], self.g_dim)
        return self.scale(torch.cat([x, g], -1))

    def rsample(self, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor | None]:
        """z [S, M, z_dim] and log q(z | x, β) [S, M] (None when implicit)."""
        raise NotImplementedError

    def log_prob(self, z: Tensor, x: Tensor, g: Tensor) -> Tensor:
        """log q(z | x, β): [S, M]."""
        raise NotImplementedError


class GaussianLocalGuide(LocalGuide):
    """q(z | x, β) = N(μ(x, β), diag σ(x, β)²); μ has a linear skip connection."""

    def __init__(self, x_dim, g_dim, z_dim, hidden: tuple[int, ...] = (64, 64)):
        super().__init__(x_dim, g_dim, z_dim)
        self.net = mlp(x_dim + g_dim, hidden, 2 * z_dim)
        self.linear = nn.Linear(x_dim + g_dim, z_dim)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def moments(self, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log sd: [S, M, z_dim] each."""
        v = self.inputs(x, g)
        out = self.net(v)
        return self.linear(v) + out[..., :self.z_dim], out[..., self.z_dim:].clamp(-12, 6)

    def rsample(self, x, g):
        mean, log_sd = self.moments(x, g)
        eps = torch.randn_like(mean)
        log_q = -0.5 * (eps.pow(2) + _LOG_2PI).sum(-1) - log_sd.sum(-1)
        return mean + log_sd.exp() * eps, log_q

    def log_prob(self, z, x, g):
        mean, log_sd = self.moments(x, g)
        eps = (z - mean) / log_sd.exp()
        return -0.5 * (eps.pow(2) + _LOG_2PI).sum(-1) - log_sd.sum(-1)


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

    def rsample(self, x, g):
        v = self.inputs(x, g)
        delta = torch.randn(*v.shape[:-1], self.noise, device=v.device)
        return self._support(self.linear(v) + self.net(torch.cat([v, delta], -1))), None

    def _support(self, z: Tensor) -> Tensor:
        if not self._functions:
            return z
        parts, last = [], 0
        for start, stop, function in self._functions:
            parts += [z[..., last:start], function(z[..., start:stop])]
            last = stop
        return torch.cat(parts + [z[..., last:]], -1)

    def log_prob(self, z, x, g):
        raise TypeError("an implicit local guide has no density")


LOCAL_FAMILIES = {"gaussian": GaussianLocalGuide, "implicit": ImplicitLocalGuide}
