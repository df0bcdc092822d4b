"""The interface every compiled model implements, and that the trainer relies on.

A compiled `.him` file is a subclass of `HimModule`. Shapes below use S for global
draws (particles) and M for plate elements (data rows); models without a plate
drop the M axis.

    model = load("hier_gauss.him").module()
    beta = model.sample_globals(16)            # {"beta": [16, 2]}
    sim = model.simulate(beta, rows=128)       # {"z": [16, 128, 2], "x": [16, 128, 2]}
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import biject_to


@dataclass(frozen=True)
class NodeInfo:
    """Metadata of one node of the model."""

    name: str
    role: str  # noise | global | local | deterministic | observed | covariate | param | weight
    shape: tuple[int, ...]
    plate: str | None = None
    dtype: str = "real"  # real | int | cat
    categories: int | None = None  # K for cat(K)
    line: int = 0


class HimModule(nn.Module):
    """Base class of compiled models. Subclasses fill the class attributes and
    implement `_prior_dists`, `simulate` and (for explicit models) the densities."""

    model_name: str = "model"
    source_file: str = ""
    nodes: dict[str, NodeInfo] = {}
    global_names: tuple[str, ...] = ()
    local_names: tuple[str, ...] = ()
    observed_names: tuple[str, ...] = ()
    covariate_names: tuple[str, ...] = ()
    plate: str | None = None
    # True when every local latent and every observation has a density, so
    # likelihood-based VI (`--method vi`) applies.
    explicit: bool = False

    # ---------------------------------------------------------------- globals
    def prior(self, name: str, globals: dict[str, torch.Tensor] | None = None):
        """The prior distribution of global `name` (event shape = its shape)."""
        return self._prior_dists(globals or {})[name]

    def _prior_dists(self, globals: dict[str, torch.Tensor]) -> dict:
        raise NotImplementedError

    def sample_globals(self, num_draws: int) -> dict[str, torch.Tensor]:
        """Draw globals from the prior, in order: {name: [S, *shape]}."""
        raise NotImplementedError

    def log_prior(self, globals: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(β) summed over every global: [S]."""
        raise NotImplementedError

    def bijector(self, name: str):
        """The transform from unconstrained space to global `name`'s support."""
        return biject_to(self.prior(name, self._dummy_globals()).support)

    def _dummy_globals(self) -> dict[str, torch.Tensor]:
        return {}

    @property
    def device(self) -> torch.device:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")

    # ---------------------------------------------------------------- locals, data
    def simulate(self, globals: dict[str, torch.Tensor],
                 covariates: dict[str, torch.Tensor] | None = None,
                 rows: int | None = None) -> dict[str, torch.Tensor]:
        """One joint draw of every local latent, let and observed array given the
        globals: {name: [S, M, *shape]} (plate) or {name: [S, *shape]} (no plate).
        Covariates are [M, *row] (shared by all S) or [S, M, *row]."""
        raise NotImplementedError

    def log_local_prior(self, globals, locals, covariates=None) -> torch.Tensor:
        """log p(z_m | β) summed over local latents: [S, M] (explicit models only)."""
        raise NotImplementedError

    def log_likelihood(self, globals, locals, data) -> torch.Tensor:
        """log p(x_m | z_m, β) summed over observations: [S, M] (explicit models only);
        `data` holds observed arrays and covariates, [M, *row] or [S, M, *row]."""
        raise NotImplementedError
