"""The prior's pilot simulations, made before the plan: the plan reads what the
model simulates (are an observed array's values positive?), the networks' input
scaling is fitted from them, and their wall time forecasts the fit's simulating.

    pilot = simulate_pilot(view)        # SCALING_DRAWS prior draws × a few rows
    pilot.sim["x"]                       # [S, M, *shape]
    pilot.seconds_per_simulation
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

# The networks' input scaling is fitted from SCALING_DRAWS prior draws of the globals,
# simulated at SCALING_ROWS data rows (enough for moments, cheap for costly externs).
SCALING_DRAWS = 1024
SCALING_ROWS = 16

Tensor = torch.Tensor


@dataclass
class Pilot:
    """Prior draws, the data rows the networks' scaling reads, the rows simulated
    (their first SCALING_ROWS) and what was simulated there."""

    prior: dict[str, Tensor]
    rows: dict[str, Tensor]
    sim_rows: dict[str, Tensor]
    sim: dict[str, Tensor]
    seconds_per_simulation: float


def scaling_simulations(view) -> int:
    """Simulations the pilot draws (prior draws × a few rows)."""
    draws = SCALING_DRAWS if view.g_shapes else 1
    return draws * (min(SCALING_ROWS, view.n_rows) if view.has_plate else 1)


@torch.no_grad()
def simulate_pilot(view) -> Pilot:
    """Simulate the model at prior draws of its globals and a few data rows."""
    prior = view.prior_globals(SCALING_DRAWS)
    idx = (torch.randint(view.n_rows, (min(1024, 64 * view.n_rows),), device=view.device)
           if view.has_plate else None)
    rows = view.rows(idx)
    sim_rows = view.rows(idx[:SCALING_ROWS]) if view.has_plate else rows
    draws = SCALING_DRAWS if view.g_shapes else 1
    start = time.perf_counter()
    sim = view.simulate(prior, sim_rows, draws)
    seconds = (time.perf_counter() - start) / scaling_simulations(view)
    sim = {**view.with_data({b.name: sim_rows[b.name] for b in view.c_blocks}, draws), **sim}
    return Pilot(prior, rows, sim_rows, sim, seconds)
