"""A uniform view of a compiled model and its data for the trainer.

Every model is seen as a plate of N rows (a model without a plate is one row),
and every array as [S, M, ...] (S global draws, M rows):

    view = ModelView(model, {"x": x})          # x: [1000, 2]
    view.n_rows                                 # 1000
    sim = view.simulate(view.prior_globals(8), view.rows(idx))
    view.x_features(sim)                        # [8, M, 2]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


# How an observed array is encoded for the networks, by its type: counts of any size
# reach the networks on a log scale (a Poisson simulation at a prior-tail rate can
# be 1e13), labels one-hot, reals as they are (then standardised).
ENCODINGS = {"int": "signed_log1p", "cat": "one_hot", "real": "identity"}


@dataclass(frozen=True)
class Block:
    """One named array flattened into a feature vector."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "real"
    categories: int | None = None
    encoding: str = "identity"

    @property
    def width(self) -> int:
        """Number of features after flattening (and one-hot encoding)."""
        return math.prod(self.shape) * (self.categories if self.dtype == "cat" else 1)

    def encode(self, value: Tensor, lead: int) -> Tensor:
        """[*lead axes, *shape] -> [*lead axes, width] floats."""
        if self.dtype == "cat":
            value = F.one_hot(value.long().clamp(0, self.categories - 1), self.categories)
        value = value.reshape(*value.shape[:lead], -1).float()
        if self.encoding == "signed_log1p":
            value = value.sign() * value.abs().log1p()
        elif self.encoding == "log":        # positive values; a simulated one ≤ 0 is non-finite, dropped
            value = value.log()
        return value


def _draws(globals: dict[str, Tensor]) -> int:
    """Number of global draws S (the leading axis; 1 without globals)."""
    return next(iter(globals.values())).shape[0] if globals else 1


def _block(model, name: str, encode: bool = False) -> Block:
    info = model.nodes[name]
    encoding = ENCODINGS.get(info.dtype, "identity") if encode else "identity"
    return Block(name, tuple(info.shape), info.dtype, info.categories, encoding)


class ModelView:
    """The model, its data on the model's device, and feature encoders."""

    def __init__(self, model, data: dict):
        self.model = model
        self.device = model.device
        self.has_plate = model.plate is not None
        self.x_blocks = [_block(model, n, encode=True) for n in model.observed_names]
        self.c_blocks = [_block(model, n, encode=True) for n in model.covariate_names]
        self.z_blocks = [_block(model, n) for n in model.local_names]
        self.g_shapes = {n: tuple(model.nodes[n].shape) for n in model.global_names}
        self.data = self._load(data)
        self.n_rows = self._count_rows()
        for block in self.z_blocks:
            if block.dtype != "real":
                where = f"{model.source_file}:{model.nodes[block.name].line}: " if model.source_file else ""
                raise ValueError(f"{where}local latent `{block.name}` is {block.dtype}: only real-valued "
                                 "locals can be inferred; sum it out of the likelihood, or make it a `noise` "
                                 "when it only serves to simulate")

    @classmethod
    def of_fit(cls, model, data: dict, settings) -> "ModelView":
        """The view a fit with these settings reads: its guides and ratio were trained
        on these features, so every later use of them (local summaries, weights)
        builds its view here."""
        view = cls(model, data)
        view.read_on_log(settings.log_features)
        return view

    def read_on_log(self, names) -> None:
        """The networks read these observed real arrays on the log (FitSettings.log_features);
        ValueError naming an array that is not one, or a data value that is not positive."""
        observed = {b.name: b for b in self.x_blocks}
        for name in names:
            block = observed.get(name)
            if block is None or block.dtype != "real":
                raise ValueError(f"setting `log_features`: `{name}` is not an observed real array of the "
                                 f"model (observed: {', '.join(observed) or 'none'})")
            bad = (self.data[name] <= 0).reshape(len(self.data[name]), -1).any(-1).nonzero()
            if len(bad):
                raise ValueError(f"setting `log_features`: data array `{name}` has a value that is not "
                                 f"positive in row {int(bad[0])}, and a log needs positive values")
        self.x_blocks = [replace(b, encoding="log") if b.name in names else b for b in self.x_blocks]

    # ------------------------------------------------------------ data
    def _load(self, data: dict) -> dict[str, Tensor]:
        names = list(self.model.observed_names) + list(self.model.covariate_names)
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"data is missing array(s): {', '.join(missing)}")
        out = {}
        for name in names:
            value = torch.as_tensor(data[name], device=self.device)
            out[name] = self._with_row_axis(name, value)
            if not torch.isfinite(out[name].float()).all():
                raise ValueError(f"data array `{name}` contains NaN or inf")
        return out

    def _plated(self, name: str) -> bool:
        return self.has_plate and self.model.nodes[name].plate is not None

    def _with_row_axis(self, name: str, value: Tensor) -> Tensor:
        """Plate arrays keep their row axis; others get a row axis of one."""
        shape = tuple(self.model.nodes[name].shape)
        if self._plated(name):
            return value.reshape(-1, *shape) if not shape else value.reshape(value.shape[0], *shape)
        return value.reshape(1, *shape)

    def _count_rows(self) -> int:
        counts = {v.shape[0] for n, v in self.data.items() if self._plated(n)}
        if len(counts) > 1:
            raise ValueError(f"plate arrays have different numbers of rows: {sorted(counts)}")
        return counts.pop() if counts else 1

    def rows(self, idx: Tensor | None) -> dict[str, Tensor]:
        """Data rows `idx` (all rows when None): {name: [M, ...]}."""
        if idx is None:
            return dict(self.data)
        return {n: (v[idx] if self._plated(n) else v) for n, v in self.data.items()}

    def random_rows(self, at_most: int) -> dict[str, Tensor]:
        """At most `at_most` data rows drawn at random without replacement (all the
        data without a plate): what the end-of-fit checks simulate against."""
        idx = torch.randperm(self.n_rows, device=self.device)[:at_most] if self.has_plate else None
        return self.rows(idx)

    def repeat_rows(self, rows: dict[str, Tensor], times: int) -> dict[str, Tensor]:
        """Each row of `rows` `times` times, a row's copies next to each other."""
        return {n: (v.repeat_interleave(times, 0) if self._plated(n) else v) for n, v in rows.items()}

    # ------------------------------------------------------------ model calls
    def prior_globals(self, num: int) -> dict[str, Tensor]:
        """Globals drawn from the prior: {name: [num, *shape]}."""
        return self.model.sample_globals(num) if self.g_shapes else {}

    def covariates(self, rows: dict[str, Tensor]) -> dict[str, Tensor]:
        """The covariates among `rows`, in the layout `simulate` expects."""
        return {b.name: self.model_layout(b.name, rows[b.name]) for b in self.c_blocks}

    def model_layout(self, name: str, value: Tensor) -> Tensor:
        """A data array as the model takes it: arrays outside the plate lose the row axis."""
        return value if self._plated(name) else value[0]

    def simulate(self, globals: dict[str, Tensor], rows: dict[str, Tensor], draws: int) -> dict:
        """One joint draw of locals and observations: {name: [S, M, *shape]}."""
        m = self._batch_size(rows)
        out = self.model.simulate(globals, self.covariates(rows) or None,
                                  rows=m if self.has_plate else None)
        return {n: self._lead(n, v, draws, m) for n, v in out.items()
                if n in self.model.nodes and n in self._sim_names()}

    def simulate_given(self, globals: dict[str, Tensor], locals: dict[str, Tensor], rows: dict[str, Tensor],
                       draws: int) -> dict:
        """The observations drawn from p(x | z, β) with the locals held at `locals`
        ({name: [S, M, *shape]}): {name: [S, M, *shape]}."""
        m = self._batch_size(rows)
        out = self.model.simulate_given(globals, locals, self.covariates(rows) or None, rows=m)
        return {n: self._lead(n, v, draws, m) for n, v in out.items() if n in self.model.observed_names}

    def simulate_rows(self, globals: dict[str, Tensor], rows: dict[str, Tensor],
                      locals: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """One simulation per row of `rows` ({name: [K, ...]}), row k at draw k of the
        globals ([K, ...]); with `locals` ({name: [K, *shape]}) held at those values.
        Returns {name: [K, 1, *shape]}: observed arrays, the rows' covariates and,
        without `locals`, the locals."""
        k = _draws(globals) if globals else self._batch_size(rows)
        covs = {n: (v[:, None] if self._plated(n) else v) for n, v in self.covariates(rows).items()}
        if locals:
            fixed = {n: v[:, None] for n, v in locals.items()}
            out = self.model.simulate_given(globals, fixed, covs or None, rows=1)
        else:
            out = self.model.simulate(globals, covs or None, rows=1 if self.has_plate else None,
                                      draws=None if globals else k)
        given = {b.name: (rows[b.name] if self._plated(b.name) else rows[b.name].expand(k, *rows[b.name].shape[1:]))
                 for b in self.c_blocks}
        return {**{n: v[:, None] for n, v in given.items()},
                **{n: self._lead(n, v, k, 1) for n, v in out.items()
                   if n in self.model.nodes and n in self._sim_names()}}

    def local_priors(self, globals: dict[str, Tensor], rows: dict[str, Tensor], per_row: bool = False):
        """The prior distributions p(z | β) of the locals: per draw and row, batch
        [S, M] (or with `per_row`, row k at draw k: batch [K, 1])."""
        covs = self.covariates(rows)
        if per_row:
            covs = {n: (v[:, None] if self._plated(n) else v) for n, v in covs.items()}
        m = 1 if per_row else self._batch_size(rows)
        return self.model.local_priors(globals, covs or None, rows=m)

    def _sim_names(self) -> set[str]:
        return set(self.model.local_names) | set(self.model.observed_names)

    def _batch_size(self, rows: dict[str, Tensor]) -> int:
        plated = [v.shape[0] for n, v in rows.items() if self._plated(n)]
        return plated[0] if plated else 1

    def _lead(self, name: str, value: Tensor, draws: int, m: int) -> Tensor:
        """Bring a simulated array to [S, M, *shape] (models without globals or
        without a plate may omit the S or M axis)."""
        shape = tuple(self.model.nodes[name].shape)
        extra = value.dim() - len(shape)
        if not self.has_plate:
            value = value.unsqueeze(-len(shape) - 1) if shape else value.unsqueeze(-1)
            extra += 1
        if extra == 1:
            value = value.unsqueeze(0)
        return value.expand(draws, m, *shape) if value.shape[0] == 1 and draws > 1 else value

    # ------------------------------------------------------------ features
    def x_features(self, arrays: dict[str, Tensor], lead: int = 2) -> Tensor:
        """Observed arrays and covariates as one feature vector: [*lead, Fx]."""
        parts = [b.encode(arrays[b.name], lead) for b in self.x_blocks + self.c_blocks]
        return torch.cat(parts, -1)

    def z_flat(self, locals: dict[str, Tensor]) -> Tensor:
        """Local latents flattened: [S, M, Dz] (Dz = 0 without locals)."""
        if not self.z_blocks:
            raise ValueError("the model has no local latents")
        return torch.cat([b.encode(locals[b.name], 2) for b in self.z_blocks], -1)

    def z_unflat(self, flat: Tensor) -> dict[str, Tensor]:
        """Inverse of `z_flat`."""
        out, start = {}, 0
        for b in self.z_blocks:
            out[b.name] = flat[..., start:start + b.width].reshape(*flat.shape[:-1], *b.shape)
            start += b.width
        return out

    @property
    def z_dim(self) -> int:
        return sum(b.width for b in self.z_blocks)

    @property
    def x_dim(self) -> int:
        return sum(b.width for b in self.x_blocks + self.c_blocks)

    @property
    def g_flat_dims(self) -> dict[str, int]:
        """Dimensions of each global, flattened."""
        return {n: math.prod(s) for n, s in self.g_shapes.items()}

    def rows_in(self, rows: dict[str, Tensor]) -> int:
        """How many data rows `rows` holds (1 without a plate)."""
        return self._batch_size(rows)

    @property
    def u_dims(self) -> dict[str, int]:
        """Unconstrained dimensions of each global (its bijector may change the count)."""
        return {n: math.prod(self.model.bijector(n).inverse_shape(torch.Size(s)))
                for n, s in self.g_shapes.items()}

    @property
    def g_dim(self) -> int:
        return sum(math.prod(s) for s in self.g_shapes.values())

    def g_flat(self, globals: dict[str, Tensor]) -> Tensor:
        """Globals flattened: [S, Dg]."""
        s = _draws(globals)
        parts = [globals[n].reshape(s, -1).float() for n in self.g_shapes]
        return torch.cat(parts, -1) if parts else torch.zeros(s, 0, device=self.device)

    @property
    def prediction_dim(self) -> int:
        """Width of `prediction` (0 when the model offers none)."""
        return sum(math.prod(self.model.nodes[n].shape) for n in self.model.prediction_names)

    def prediction(self, globals: dict[str, Tensor], rows: dict[str, Tensor], per_row: bool = False) -> Tensor:
        """The model's noise-free prediction at each draw of the globals for each
        row (`HimModule.predict`), flattened: [S, M, P]; with `per_row`, row k at
        draw k: [K, 1, P]."""
        covs = self.covariates(rows)
        if per_row:
            covs = {n: (v[:, None] if self._plated(n) else v) for n, v in covs.items()}
        m, s = (1 if per_row else self._batch_size(rows)), _draws(globals)
        out = self.model.predict(globals, covs or None, rows=m)
        return torch.cat([self._lead(n, v, s, m).reshape(s, m, -1).float() for n, v in out.items()], -1)

    @property
    def input_dim(self) -> int:
        """Width of `likelihood_inputs`."""
        return sum(math.prod(self.model.nodes[n].shape) for n in self.model.likelihood_inputs)

    def likelihood_inputs(self, globals: dict[str, Tensor], z: Tensor | None, rows: dict[str, Tensor],
                          per_row: bool = False) -> Tensor:
        """The likelihood's noise-free inputs at these globals and flat locals
        ([S, M, Dz] or None), flattened: [S, M, W]; with `per_row`, row k at draw k
        (z [K, 1, Dz]): [K, 1, W]. Differentiable in both."""
        covs = self.covariates(rows)
        if per_row:
            covs = {n: (v[:, None] if self._plated(n) else v) for n, v in covs.items()}
        m = 1 if per_row else self._batch_size(rows)
        s = _draws(globals) if globals else (z.shape[0] if z is not None else 1)
        locals_ = self.z_unflat(z) if z is not None else {}
        out = self.model.likelihood_input_values(globals, locals_, covs or None,
                                                 rows=m if self.has_plate else None)
        parts = []
        for name, value in out.items():
            shape = tuple(self.model.nodes[name].shape)
            plated = self.has_plate and self.model.nodes[name].plate is not None
            value = value.reshape(*value.shape[:value.dim() - len(shape)], -1).float()
            if not plated:      # [S, w] -> [S, M, w]
                value = value.reshape(s, 1, -1).expand(s, m, -1)
            parts.append(value.reshape(s, m, -1))
        return torch.cat(parts, -1)

    def with_data(self, rows: dict[str, Tensor], draws: int) -> dict[str, Tensor]:
        """Data rows laid out like a simulation: {name: [S, M, ...]}."""
        return {n: v.unsqueeze(0).expand(draws, *v.shape) for n, v in rows.items()}
