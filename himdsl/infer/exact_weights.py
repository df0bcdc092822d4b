"""Importance weights of q against the exact posterior, where the model has one.

    reason = unavailable(model, global_guide, local_guide)    # None: the weights exist
    log_w, globals = log_weights(model, view, plan, global_guide, local_guide, 1000)

Where every observation and local latent has a density and every guide has one
(no point mass, no implicit local guide), log p(x, z, β) − log q(z, β) at draws of
q is known exactly: its Pareto k̂ (importance.py) says whether q is close to the
posterior, and its mean is the ELBO with the exact likelihood. `fit` reports it for
a fit with the exact likelihood (advice.py), `himdsl diagnose` for any fit.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .families import PointMass
from .local_guide import ImplicitLocalGuide
from .objective import Objective

Tensor = torch.Tensor
# rows scored at once
ROW_CHUNK = 256


def unavailable(model, global_guide, local_guide) -> str | None:
    """Why there are no exact weights for this model and these guides (None: there are)."""
    implicit = [n for n in model.observed_names if n not in model.explicit_observed]
    implicit += [n for n in model.local_names if n not in model.explicit_locals]
    if implicit:
        return (f"`{implicit[0]}` is written as a simulation (`=`, or `~` reading a noise or an "
                "extern), so the fit has no density for it and no exact importance weights; where "
                f"it has one, `~` with its distribution gives it (docs/language.md)")
    if any(isinstance(f, PointMass) for f in global_guide.families):
        return "a global is a point estimate, which has no density to weigh against"
    if isinstance(local_guide, ImplicitLocalGuide):
        return "the local guide is implicit (it has no density)"
    return None


def log_weights(model, view, plan, global_guide, local_guide, draws: int) -> tuple[Tensor, dict]:
    """log p(x, z, β) − log q(z, β) at `draws` draws of q over every row of `view`:
    ([S], the globals drawn)."""
    # the fit's objective with the exact likelihood in place of the ratio (method vi)
    exact = replace(plan, method="vi", ratio=None)
    objective = Objective(view, exact, global_guide, local_guide, None, None, [], None)
    if view.g_shapes:
        globals, log_q, _ = global_guide.rsample(draws)
        total = model.log_prior(globals) - log_q
    else:
        globals, total = {}, torch.zeros(draws, device=view.device)
    for start in range(0, view.n_rows, ROW_CHUNK):
        idx = torch.arange(start, min(start + ROW_CHUNK, view.n_rows), device=view.device)
        rows = view.rows(idx if view.has_plate else None)
        total = total + objective.row_terms(globals, rows, draws).sum(-1)
    return total, globals
