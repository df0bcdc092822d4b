"""The interface every compiled model implements, and that the trainer relies on.

A compiled `.him` file is a subclass of `HimModule`. Shapes below use S for global
draws (particles, any number of leading axes) and M for plate elements (data
rows); models without a plate drop the M axis.

    model = himdsl.load("hier_gauss.him").module()
    g = model.sample_globals(16)               # {"beta": [16, 2]}
    sim = model.simulate(g, rows=128)          # {"z": [16, 128, 2], "x": [16, 128, 2], ...}
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import biject_to

from . import distributions
from .externs import ExternFailures, ExternSpec, call_extern, load_extern


@dataclass(frozen=True)
class NodeInfo:
    """Metadata of one node of the model."""

    name: str
    role: str  # noise | global | local | deterministic | observed | covariate | param
    shape: tuple[int, ...]
    plate: str | None = None
    dtype: str = "real"  # real | int | cat
    categories: int | None = None  # K for cat(K): one-hot encoded where a network reads it
    line: int = 0


class SimulationError(Exception):
    """Inputs to `simulate` that do not fit the model; the message is user-facing."""


class HimModule(nn.Module):
    """Base class of compiled models. Subclasses declare metadata, one `prior_*`
    method per global, and `simulate` (plus `_run` for explicit densities)."""

    model_name: str = "model"
    source_file: str = ""
    source_dir: str = ""
    nodes: dict[str, NodeInfo] = {}
    global_names: tuple[str, ...] = ()  # in prior (topological) order
    local_names: tuple[str, ...] = ()
    observed_names: tuple[str, ...] = ()
    covariate_names: tuple[str, ...] = ()
    plate: str | None = None
    encodings: dict[str, str] = {}  # cat(K) arrays: {name: "one-hot(K)"}
    # True when every local latent and every observation has a density and no
    # noise or extern is involved, so likelihood-based VI (`--method vi`) applies.
    explicit: bool = False
    externs: tuple[ExternSpec, ...] = ()
    # real deterministic nodes an observation is computed from (none with externs):
    # what `predict` returns
    prediction_names: tuple[str, ...] = ()
    # {local: "relu" | "sigmoid" | ...}: the output function of `latent z = f(...)`
    local_activations: dict[str, str] = {}
    # locals and observations whose density is known exactly (himdsl/graph/structure.py)
    explicit_locals: tuple[str, ...] = ()
    explicit_observed: tuple[str, ...] = ()
    # the latents the observations depend on directly; the latents each local's prior reads
    likelihood_parents: tuple[str, ...] = ()
    local_prior_parents: dict[str, tuple[str, ...]] = {}
    bayesian_weights: tuple[str, ...] = ()   # the globals that are weights of Bayesian layers
    untrained_params: tuple[str, ...] = ()   # point estimates no gradient reaches (never trained)
    # {observed: its element covariates} when the observation's values are independent
    # given the row (himdsl/graph/elements.py)
    observed_elements: dict[str, tuple[str, ...]] = {}
    # the noise-free values the observations are computed from (p(x | latents) = p(x | these))
    likelihood_inputs: tuple[str, ...] = ()

    def __init__(self, extern_dir: str | None = None):
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)
        folder = extern_dir or self.source_dir
        self._extern_functions = {spec.name: load_extern(spec, folder) for spec in self.externs}
        self._extern_specs = {spec.name: spec for spec in self.externs}
        self._centred = False   # `predict`: noise at its centre instead of drawn
        self._recorded: dict | None = None   # `local_priors`: distributions seen by `_draw`
        self._inputs_only = False   # `likelihood_input_values`: externs are not called
        # set by a fit's trainer: an extern's rows that raise fail alone (externs.py)
        self.extern_failures: ExternFailures | None = None

    # ---------------------------------------------------------------- globals
    def priors(self, globals: dict[str, torch.Tensor]) -> dict:
        """{name: prior distribution} of every global given the others' values."""
        return {name: self._prior(name, globals) for name in self.global_names}

    def prior(self, name: str, globals: dict[str, torch.Tensor] | None = None):
        """The prior distribution of global `name` (event shape = its shape)."""
        return self._prior(name, globals if globals is not None else self.sample_globals(1))

    def _prior(self, name: str, globals: dict[str, torch.Tensor]):
        raise NotImplementedError

    def sample_globals(self, num_draws: int | tuple = 1, given: dict | None = None) -> dict[str, torch.Tensor]:
        """Draw globals from the prior, parents first: {name: [*S, *shape]}.

        Globals in `given` (tensors of the global's shape, or [*S, *shape]) are
        kept, and the globals below them are drawn given their values."""
        batch = (num_draws,) if isinstance(num_draws, int) else tuple(num_draws)
        given = given or {}
        values: dict[str, torch.Tensor] = {}
        for name in self.global_names:
            if name in given:
                value = self._input(name, given)
                values[name] = value.expand(batch + tuple(self.nodes[name].shape))
            else:
                values[name] = distributions.sample(self._prior(name, values), batch)
        return values

    def log_prior(self, globals: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(β) summed over every global: [*S]."""
        total = 0.0
        for name in self.global_names:
            total = total + self._prior(name, globals).log_prob(globals[name])
        return total

    def bijector(self, name: str, globals: dict[str, torch.Tensor] | None = None):
        """The transform from unconstrained space to global `name`'s support."""
        return biject_to(self.prior(name, globals).support)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    # ---------------------------------------------------------------- locals, data
    def simulate(self, globals: dict[str, torch.Tensor] | None = None,
                 covariates: dict[str, torch.Tensor] | None = None,
                 rows: int | None = None, draws: int | tuple | None = None) -> dict[str, torch.Tensor]:
        """One joint draw of every noise, local latent, let and observed array given
        the globals: {name: [*S, M, *shape]} (plate) or {name: [*S, *shape]}.
        Covariates are [M, *row] (shared by all draws) or [*S, M, *row]. The draw
        axes S come from the globals, else from `draws` (default: none)."""
        return self._run(globals or {}, covariates or {}, rows, draws, fixed={}, log_probs=None)

    def predict(self, globals: dict[str, torch.Tensor], covariates: dict[str, torch.Tensor] | None = None,
                rows: int | None = None) -> dict[str, torch.Tensor]:
        """The simulator's noise-free prediction: the `prediction_names` nodes with
        every noise at its centre (its mean), {name: [*S, M, *shape]}. Differentiable
        in the globals; local latents are still drawn. The ratio estimator reads it
        in place of high-dimensional globals (docs/lfvi.md, "Ratio inputs")."""
        self._centred = True
        try:
            out = self._run(globals, covariates or {}, rows, None, fixed={}, log_probs=None)
        finally:
            self._centred = False
        return {name: out[name] for name in self.prediction_names}

    def simulate_given(self, globals: dict[str, torch.Tensor], locals: dict[str, torch.Tensor],
                       covariates: dict[str, torch.Tensor] | None = None,
                       rows: int | None = None) -> dict[str, torch.Tensor]:
        """A simulation with the local latents held at `locals` ({name: [*S, M, *shape]}):
        the observations drawn from p(x | z, β). Locals need a `~` declaration."""
        rows = rows if rows is not None else self._rows_of(locals)
        return self._run(globals, covariates or {}, rows, None, fixed=locals, log_probs=None)

    def likelihood_input_values(self, globals: dict[str, torch.Tensor], locals: dict[str, torch.Tensor],
                                covariates: dict[str, torch.Tensor] | None = None,
                                rows: int | None = None) -> dict[str, torch.Tensor]:
        """{name: value} of every `likelihood_inputs` node at these globals and locals
        (plate nodes [*S, M, *shape], top-level ones [*S, *shape]); differentiable."""
        rows = rows if rows is not None else self._rows_of(locals)
        # the inputs are noise-free, so no noise or extern output reaches them: noise is
        # not drawn and externs are not called (an expensive simulator would run for nothing)
        self._centred = self._inputs_only = True
        try:
            out = self._run(globals, covariates or {}, rows, None, fixed=locals, log_probs=None)
        finally:
            self._centred = self._inputs_only = False
        return {n: (globals[n] if n in globals else out[n]) for n in self.likelihood_inputs}

    def local_priors(self, globals: dict[str, torch.Tensor], covariates: dict | None = None,
                     rows: int | None = None) -> dict:
        """{local: its prior distribution p(z | β) per draw and row} for the locals
        declared with `~` (the distribution of a local whose prior reads another local
        is the one at that local's simulated value)."""
        _, recorded = self._recorded_run(globals, covariates or {}, rows, fixed={})
        return {n: d for n, d in recorded.items() if n in self.local_names}

    def observation_distributions(self, globals: dict[str, torch.Tensor], data: dict) -> dict:
        """{observed name: the distribution its values are drawn from} at these globals
        (locals drawn from their prior), for the observations written with `~` and
        those equal to a noise written with `~` (`observe y = k`); `data` holds the
        observed arrays and covariates."""
        rows = self._rows_of(data) if self.plate is not None else None
        covariates = {n: data[n] for n in self.covariate_names if n in data}
        observed = {n: data[n] for n in self.observed_names if n in data}
        out, recorded = self._recorded_run(globals, covariates, rows, fixed=observed)
        found = {}
        for name in observed:
            noise = [n for n in recorded if self.nodes[n].role == "noise" and n in out and out[n] is out.get(name)]
            if name in recorded or noise:
                found[name] = recorded[name] if name in recorded else recorded[noise[0]]
        return found

    def _recorded_run(self, globals, covariates, rows, fixed) -> tuple[dict, dict]:
        """A simulation, and the distribution of every stochastic node it drew or scored."""
        self._recorded = {}
        try:
            out = self._run(globals, covariates, rows, None, fixed=fixed, log_probs=None)
            return out, dict(self._recorded)
        finally:
            self._recorded = None

    def log_local_prior(self, globals, locals, covariates=None) -> torch.Tensor:
        """log p(z_m | β) summed over local latents: [*S, M] (locals with known densities)."""
        return self._log_density(globals, locals, covariates or {}, self.local_names,
                                 self.explicit_locals, "local latent")

    def log_likelihood(self, globals, locals, data) -> torch.Tensor:
        """log p(x_m | z_m, β) summed over observations: [*S, M] (observations with known
        densities); `data` holds observed arrays and covariates, [M, *row] or [*S, M, *row]."""
        return self._log_density(globals, {**locals, **data}, data, self.observed_names,
                                 self.explicit_observed, "observation")

    def _log_density(self, globals, fixed, covariates, names, known, what) -> torch.Tensor:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise NotImplementedError(f"model `{self.model_name}`: {what} `{unknown[0]}` has no "
                                      "density in closed form (noise, implicit layers or externs)")
        log_probs: dict[str, torch.Tensor] = {}
        rows = self._rows_of(fixed)
        self._run(globals, covariates, rows, None, fixed=fixed, log_probs=log_probs)
        return sum(log_probs[n] for n in names if n in log_probs)

    def _rows_of(self, arrays: dict) -> int | None:
        for name in self.observed_names + self.local_names:
            if name in arrays and self.plate is not None:
                info = self.nodes[name]
                return arrays[name].shape[arrays[name].dim() - len(info.shape) - 1]
        return None

    def _run(self, globals, covariates, rows, draws, fixed, log_probs) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers for generated code
    def _batch(self, globals: dict, covariates: dict, rows: int | None, draws=None) -> tuple[tuple, tuple]:
        """(batch of top-level nodes, batch of plate nodes) from the inputs' shapes."""
        if draws is not None and not any(n in globals for n in self.global_names):
            draws = (draws,) if isinstance(draws, int) else tuple(draws)
        else:
            draws = self._draw_batch(globals, covariates)
        if self.plate is None:
            return draws, draws
        if rows is None:
            rows = self._covariate_rows(covariates)
        if rows is None:
            raise SimulationError(f"model `{self.model_name}`: say how many rows plate "
                                  f"`{self.plate}` has (rows=..., or give covariates)")
        return draws, draws + (int(rows),)

    def _draw_batch(self, globals: dict, covariates: dict) -> tuple:
        for name in self.global_names:
            if name in globals:
                value = globals[name]
                return tuple(value.shape[: value.dim() - len(self.nodes[name].shape)])
        for name, value in covariates.items():
            info = self.nodes[name]
            extra = 1 if info.plate else 0
            return tuple(value.shape[: value.dim() - len(info.shape) - extra])
        return ()

    def _covariate_rows(self, covariates: dict) -> int | None:
        for name, value in covariates.items():
            info = self.nodes[name]
            if info.plate:
                return value.shape[value.dim() - len(info.shape) - 1]
        return None

    def _dist(self, name: str, shape: tuple, **params):
        return distributions.make(name, shape, self._anchor, **params)

    def _draw(self, name: str, dist, batch: tuple, fixed: dict, log_probs: dict | None):
        """A stochastic node: its fixed value (scored into log_probs) or a fresh draw."""
        if self._recorded is not None:
            self._recorded[name] = dist
        if name in fixed:
            value = fixed[name]
            if log_probs is not None:
                log_probs[name] = dist.log_prob(value)
            return value
        if self._centred and self.nodes[name].role == "noise":
            return distributions.centre(dist, batch)
        return distributions.sample(dist, batch)

    def _draw_constant(self, name: str, dist_name: str, shape: tuple, batch: tuple, fixed: dict,
                       log_probs: dict | None, **params):
        """A stochastic node whose distribution has constant arguments (fast path)."""
        if name in fixed or self._centred or self._recorded is not None:
            return self._draw(name, self._dist(dist_name, shape, **params), batch, fixed, log_probs)
        return distributions.sample_constant(dist_name, tuple(batch) + tuple(shape), self._anchor, **params)

    def _input(self, name: str, arrays: dict, lift_rows: bool = False):
        """A global or covariate by name, with a row axis inserted for use in the plate."""
        if name not in arrays:
            raise SimulationError(f"model `{self.model_name}`: missing value for `{name}`")
        value = arrays[name]
        if not torch.is_tensor(value):
            value = torch.as_tensor(value)
        if value.is_floating_point():
            value = value.to(device=self._anchor.device, dtype=self._anchor.dtype)
        else:
            value = value.to(self._anchor.device)
        if lift_rows:
            rank = len(self.nodes[name].shape)
            value = value.reshape(value.shape[: value.dim() - rank] + (1,) + value.shape[value.dim() - rank:])
        return value

    def _extern(self, name: str, batch: tuple, *args):
        spec = self._extern_specs[name]
        if self._inputs_only:
            dtype = torch.long if spec.dtype == "int" else self._anchor.dtype
            return torch.zeros(tuple(batch) + tuple(spec.shape), dtype=dtype, device=self._anchor.device)
        return call_extern(self._extern_functions[name], spec, list(args), batch, self._anchor,
                           self.extern_failures)
