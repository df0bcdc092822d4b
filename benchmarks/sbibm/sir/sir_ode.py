"""The SIR epidemic of sbibm's sir task, solved for the model's extern.

S' = -beta S I / N, I' = beta S I / N - gamma I (R' = gamma I is not needed), with
N = 10^6 people, S(0) = N - 1, I(0) = 1, over 160 days. sbibm saves the solution
daily and keeps I on every 17th day: days 0, 17, ..., 153.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sbibm_ode import as_numpy, solve  # noqa: E402

N = 1e6
SAVE_EVERY, SAVES = 17.0, 10  # days
SUBSTEPS = 68                  # RK4 steps of 0.25 days
START = (N - 1.0, 1.0)         # (S, I)


def rhs(y, params):
    """d(S, I)/dt for rows y = (S, I), params = (beta, gamma)."""
    s, i = y[:, 0], y[:, 1]
    infections = params[:, 0] * s * i / N
    return np.stack([-infections, infections - params[:, 1] * i], axis=1)


def infected(theta):
    """Infected people I(t) on days 0, 17, ..., 153 for theta = (beta, gamma):
    [*batch, 2] -> [*batch, 10]."""
    batch = tuple(theta.shape[:-1])
    states = solve(rhs, START, as_numpy(theta), SAVE_EVERY, SAVES, SUBSTEPS)
    return torch.from_numpy(states[:, :, 1]).reshape(*batch, SAVES)
