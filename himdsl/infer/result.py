"""The outcome of a fit: posterior draws, local summaries, a table and the trace.

    result = fit(model, {"x": x})
    result.posterior(1000)["beta"]        # np.ndarray [1000, 2], constrained
    result.locals({"x": x})["z_mean"]     # [N, 2]
    result.summary()["beta[0]"]           # {"mean": .., "sd": .., "5%": .., "50%": .., "95%": ..}
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import ModelView
from .importance import resample
from .local_guide import coordinates_at

# The locals' posterior means are computed to a Monte Carlo error of at most this
# share of each local's posterior sd (a fifth of the locals' accuracy target, 0.1 sd),
# with up to MAX_LOCAL_DRAWS draws of β a row: by the law of total variance the
# spread of z's mean given β is at most z's sd, so 2,500 draws always suffice. The
# draws over all rows stay within LOCAL_WORK (about 10 s of a CPU core for a small
# guide), so a large data set gets fewer a row: its β is then well determined, and
# the Rao-Blackwellised means need few.
LOCAL_MC_SDS = 0.02
MAX_LOCAL_DRAWS = 4096
LOCAL_WORK = 2 ** 22


@dataclass(frozen=True)
class TraceRow:
    """Training progress averaged over the steps since the previous row."""

    step: int
    elbo: float          # surrogate ELBO / N
    ratio_loss: float
    ratio_acc: float     # classifier accuracy of the ratio estimator
    seconds: float


class FitResult:
    """Trained guides of a model (q's parameters averaged over the final steps)."""

    def __init__(self, model, global_guide, local_guide, trace: list[TraceRow],
                 mode: str, settings, seconds: float, plan=None, target=None):
        self.model = model
        # log π(u) up to a constant where the plan resamples q's draws to it (importance.py)
        self.target = target
        self.resampling = None  # importance.Resampling of the latest draws made
        self._draws = None
        self.global_guide = global_guide
        self.local_guide = local_guide
        self.trace = list(trace)
        self.mode = mode
        self.settings = settings
        self.seconds = seconds
        self.plan = plan
        self.verdict = None     # checks.Verdict, set by the trainer at the end of a run

    @torch.no_grad()
    def posterior(self, num_draws: int | None = None) -> dict[str, np.ndarray]:
        """Draws of every global: {name: [S, *shape]} in its support. From q(β), or
        q's importance-resampled to the ratio's posterior where the plan says so
        (`resampling` reports how); the `samples` draws are made once."""
        num = num_draws or self.settings.samples
        if not self.global_guide.names:
            return {}
        if num == self.settings.samples and self._draws is not None:
            return self._draws
        if self.target is None:
            globals = self.global_guide.rsample(num)[0]
        else:
            u, self.resampling = resample(self.global_guide, self.target, num)
            globals = self.global_guide.constrain(u)[0]
        draws = {n: v.cpu().numpy() for n, v in globals.items()}
        if num == self.settings.samples:
            self._draws = draws
        return draws

    @torch.no_grad()
    def locals(self, data: dict, draws: int = 256, chunk: int = 256) -> dict[str, np.ndarray]:
        """Posterior mean and sd of every local latent for each row of `data`,
        over β ~ q(β), z ~ q(z | x, β): {"z_mean": [N, *shape], "z_sd": [N, *shape]}.
        At least `draws` draws, more where the means' Monte Carlo error needs them
        (`_local_moments`)."""
        if self.local_guide is None:
            return {}
        view = ModelView.of_fit(self.model, data, self.settings)
        most = max(draws, min(MAX_LOCAL_DRAWS, LOCAL_WORK // view.n_rows))
        parts = [self._local_moments(view, torch.arange(i, min(i + chunk, view.n_rows),
                                                        device=view.device), draws, most)
                 for i in range(0, view.n_rows, chunk)]
        mean, sd = (torch.cat(p, 0) for p in zip(*parts))
        out = {}
        for suffix, flat in (("mean", mean), ("sd", sd)):
            for name, value in view.z_unflat(flat).items():
                out[f"{name}_{suffix}"] = value.cpu().numpy()
        return out

    def _local_moments(self, view: ModelView, idx, draws: int, most: int):
        """Mean and sd of the locals of rows `idx`, in batches of `draws` draws of β
        until the means' Monte Carlo error is within LOCAL_MC_SDS of their sd (or
        `most` draws): where β is well determined one batch does, where a row's
        posterior moves with β (a funnel's scale) it takes more."""
        batches = [self._moment_draws(view, idx, draws)]
        while True:
            estimate, cond_mean, cond_var = (torch.cat(parts) for parts in list(zip(*batches))[:3])
            exact = batches[0][3]
            var = torch.where(exact, cond_var.mean(0) + cond_mean.var(0), estimate.var(0))
            total = estimate.shape[0]
            error = estimate.std(0) / total ** 0.5
            if total >= most or bool((error <= LOCAL_MC_SDS * var.sqrt()).all()):
                return estimate.mean(0), var.sqrt()
            batches.append(self._moment_draws(view, idx, min(draws, most - total)))

    def _moment_draws(self, view: ModelView, idx, draws: int):
        """Per draw of β (and of the locals) for rows `idx`: the mean's estimate
        [S, M, Dz] (z's mean given β where the guide gives it exactly, a Gaussian guide
        or a location-scale coordinate, Rao-Blackwell: its error is then the β draws'
        alone, not each row's own sd; else z's draw), z's mean and variance given β
        where exact, and which coordinates are [Dz]."""
        globals, _, _ = (self.global_guide.rsample(draws) if view.g_shapes else ({}, None, None))
        g = view.g_flat(globals) if view.g_shapes else torch.zeros(draws, 0, device=view.device)
        rows = view.rows(idx)
        x = view.x_features(view.with_data(rows, draws))
        names = self.plan.local_coordinates if self.plan is not None else ()
        coords = coordinates_at(view, names, globals, rows)
        z, _ = self.local_guide.rsample(x, g, coords)
        given = self._moments_given_globals(x, g, coords)
        if given is None:
            return z, z, z.new_zeros(z.shape), torch.zeros(z.shape[-1], dtype=torch.bool, device=z.device)
        cond_mean, cond_var, exact = given
        return torch.where(exact, cond_mean, z), cond_mean, cond_var, exact

    def _moments_given_globals(self, x, g, coords):
        """z's mean and variance given each draw of β [S, M, Dz], and which
        coordinates they are exact for [Dz] (None without a Gaussian guide)."""
        if not hasattr(self.local_guide, "moments"):
            return None
        v_mean, v_log_sd = self.local_guide.moments(x, g)
        v_var = (2 * v_log_sd).exp()
        if coords is None:
            return v_mean, v_var, torch.ones(v_mean.shape[-1], dtype=torch.bool, device=v_mean.device)
        return coords.loc + coords.scale * v_mean, coords.scale.pow(2) * v_var, coords.kind == 0

    def summary(self, num_draws: int | None = None) -> dict[str, dict[str, float]]:
        """Mean, sd, 5%, 50% and 95% of every scalar of every global: {"beta[0]": {...}}."""
        return summarise(self.posterior(num_draws))


def scalar_labels(shapes: dict[str, tuple]) -> list[str]:
    """`beta[0]`, `beta[1]`, `tau`: one label per scalar, as summary.csv names them."""
    labels = []
    for name, shape in shapes.items():
        labels += [f"{name}[{', '.join(map(str, i))}]" if shape else name for i in np.ndindex(*shape)]
    return labels


def u_labels(guide) -> list[str]:
    """A label per column of q's unconstrained draws, in their order (by block)."""
    return scalar_labels({n: guide.u_shapes[n] for b in guide.blocks for n in b})


def summarise(posterior: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean, sd, 5%, 50% and 95% of every scalar of these draws: {"beta[0]": {...}}."""
    table = {}
    for name, draws in posterior.items():
        flat = draws.reshape(draws.shape[0], -1)
        for j, label in enumerate(scalar_labels({name: draws.shape[1:]})):
            col = flat[:, j]
            q05, q50, q95 = np.quantile(col, [0.05, 0.5, 0.95])
            table[label] = {"mean": float(col.mean()), "sd": float(col.std()),
                            "5%": float(q05), "50%": float(q50), "95%": float(q95)}
    return table
