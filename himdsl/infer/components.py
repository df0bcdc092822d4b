"""The parts a fit trains, built from its plan: the local guide, the ratio, the
covering population, and their start (q(β) at the prior, inputs standardised).

    local_guide = make_local_guide(model, view, plan, settings)
    start_global_guide(view, global_guide, plan)              # q(β) at the prior's moments
    ratio = make_ratio(view, plan, settings, global_guide, local_guide, proposal)
    seconds = standardise_inputs(view, local_guide, ratio)    # the simulator's cost a row
    covering = make_covering(model, view, plan, global_guide, ratio)

The trainer (trainer.py) calls them in this order, which is the order of their
random draws: a fit's stream, and a resumed fit's, depend on it.
"""
from __future__ import annotations

import time

import torch

from .contrastive import ContrastiveRatio
from .covering import Covering, ratio_posterior
from .empirical import EmpiricalRatio
from .local_guide import LOCAL_FAMILIES
from .plan import SCALING_DRAWS, SCALING_ROWS, scaling_simulations
from .settings import LocalGuideSpec

Tensor = torch.Tensor


def make_local_guide(model, view, plan, settings):
    """q(z | x, β) of the plan's family (None for a model without locals); the
    locals of a row share one guide, so the first local entry of `guide` sets it."""
    family = plan.local_guide
    if family is None:
        return None
    specs = [settings.guide[n] for n in model.local_names if n in settings.guide]
    spec = specs[0] if specs else LocalGuideSpec()
    kwargs = ({"noise": spec.noise, "activations": _activation_slices(model, view)} if family == "implicit"
              else {"correlated": plan.local_covariance == "full"})
    guide = LOCAL_FAMILIES[family](view.x_dim, view.g_dim, view.z_dim, tuple(spec.hidden), **kwargs)
    return guide.to(view.device)


def _activation_slices(model, view) -> tuple[tuple[int, int, str], ...]:
    """(start, stop, function) of every local latent whose definition bounds its
    support (`HimModule.local_activations`), as slices of the flat z."""
    out, start = [], 0
    for block in view.z_blocks:
        name = model.local_activations.get(block.name)
        if name:
            out.append((start, start + block.width, name))
        start += block.width
    return tuple(out)


def make_ratio(view, plan, settings, global_guide, local_guide, proposal):
    """The plan's ratio estimator (None when the likelihood is known: method vi)."""
    if plan.ratio is None:
        return None
    kind = ContrastiveRatio if plan.ratio == "contrastive" else EmpiricalRatio
    return kind(view, plan, settings, global_guide, local_guide, proposal)


def make_covering(model, view, plan, global_guide, ratio) -> Covering | None:
    """The covering population when the plan has one, tied to the ratio (whose local
    pairs it centres)."""
    if not plan.population:
        return None
    prior_u, log_posterior_u = ratio_posterior(model, global_guide, ratio)
    covering = Covering(view, global_guide, log_posterior_u, prior_u, plan.population)
    ratio.covering = covering
    return covering


@torch.no_grad()
def start_global_guide(view, global_guide, plan) -> None:
    """Start q(β) at the prior's moments (at the plan's fraction of its spread)."""
    if view.g_shapes:
        global_guide.init_from_prior(view.prior_globals(SCALING_DRAWS), plan.init_scale)


@torch.no_grad()
def standardise_inputs(view, local_guide, ratio) -> float:
    """Standardise the networks' inputs from prior simulations and the data; returns
    the simulator's seconds per row, for the plan's forecast of the fit's simulating."""
    prior = view.prior_globals(SCALING_DRAWS)
    idx = (torch.randint(view.n_rows, (min(1024, 64 * view.n_rows),), device=view.device)
           if view.has_plate else None)
    rows = view.rows(idx)
    # 1,024 prior draws × a few rows: enough for moments, cheap for costly externs
    sim_rows = view.rows(idx[:SCALING_ROWS]) if view.has_plate else rows
    start = time.perf_counter()
    sim = view.simulate(prior, sim_rows, SCALING_DRAWS if view.g_shapes else 1)
    seconds = (time.perf_counter() - start) / scaling_simulations(view)
    sim = {**view.with_data({b.name: sim_rows[b.name] for b in view.c_blocks},
                            SCALING_DRAWS if view.g_shapes else 1), **sim}
    x_data = view.x_features(view.with_data(rows, 1))
    g = view.g_flat(prior) if view.g_shapes else torch.zeros(1, 0, device=view.device)
    if local_guide is not None:
        local_guide.fit_scaling(x_data, g)
    if ratio is not None:
        x_sim = view.x_features(sim)
        x_blocks = [torch.cat([x_sim.reshape(-1, view.x_dim), x_data.reshape(-1, view.x_dim)])]
        ratio.fit_scaling(x_blocks, prior, sim, sim_rows)
    return seconds
