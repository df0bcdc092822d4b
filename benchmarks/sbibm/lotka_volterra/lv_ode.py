"""The Lotka-Volterra ODE of sbibm's lotka_volterra task, solved for the model's extern.

Prey x and predators y: x' = alpha x - beta x y, y' = -gamma y + delta x y,
from (x, y) = (30, 1) over 20 time units. sbibm saves every 0.1 and keeps every
21st point: t = 0, 2.1, ..., 18.9. Solved in log space (log x, log y), where the
populations stay positive and the orbits are smoother.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sbibm_ode import as_numpy, solve  # noqa: E402

SAVE_EVERY, SAVES = 2.1, 10
SUBSTEPS = 105                 # RK4 steps of 0.02
START = np.log([30.0, 1.0])  # (log x, log y)


def rhs(y, params):
    """d(log x, log y)/dt for rows y = (log x, log y), params = (alpha, beta, gamma, delta)."""
    alpha, beta, gamma, delta = params.T
    return np.stack([alpha - beta * np.exp(y[:, 1]), delta * np.exp(y[:, 0]) - gamma], axis=1)


def populations(theta):
    """Prey at t = 0, 2.1, ..., 18.9, then predators at the same times:
    [*batch, 4] -> [*batch, 20]."""
    batch = tuple(theta.shape[:-1])
    states = np.exp(solve(rhs, START, as_numpy(theta), SAVE_EVERY, SAVES, SUBSTEPS))
    return torch.from_numpy(states.transpose(0, 2, 1).reshape(*batch, 2 * SAVES))
