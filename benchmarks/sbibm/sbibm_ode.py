"""A batched ODE solver for the sir and lotka_volterra externs.

sbibm solves these ODEs with Julia's DifferentialEquations.jl (through
diffeqtorch), too heavy a dependency here. Classic fixed-step RK4 lets every row
of a batch advance together in numpy, which is what a simulator called on
hundreds of parameter draws at once needs. A row whose solution is not finite
(a stiff corner of parameter space, where a fixed step overshoots) is solved
again, with the other such rows, at 4 and then 16 times the steps; what is still
not finite is solved on its own by scipy's adaptive LSODA, which costs a Python
call per right-hand side (a fit whose q visits the prior's tails met thousands of
such rows). validate.py measures the error against a tight-tolerance solve.
"""
from __future__ import annotations

import numpy as np
import torch


def as_numpy(theta) -> np.ndarray:
    """An extern's argument (torch tensor or array, [*batch, p]) as float64 [n, p]."""
    if isinstance(theta, torch.Tensor):
        theta = theta.detach().cpu().numpy()
    theta = np.asarray(theta, dtype=np.float64)
    return theta.reshape(-1, theta.shape[-1])


# finer steps for the rows a fixed step cannot finish, before scipy's LSODA
REFINE = (4, 16)


def solve(rhs, y0: np.ndarray, params: np.ndarray, save_every: float, saves: int,
          substeps: int) -> np.ndarray:
    """States at t = 0, save_every, ..., (saves - 1) * save_every: [n, saves, d].

    rhs(y [n, d], params [n, p]) -> dy/dt [n, d]; y0 is [d] (shared) or [n, d];
    RK4 with `substeps` steps between saves (more where that is not finite)."""
    out = solve_rk4(rhs, y0, params, save_every, saves, substeps)
    for factor in REFINE:
        bad = np.nonzero(~np.isfinite(out).all(axis=(1, 2)))[0]
        if len(bad):
            out[bad] = solve_rk4(rhs, out[bad, 0], params[bad], save_every, saves, substeps * factor)
    bad = ~np.isfinite(out).all(axis=(1, 2))
    for i in np.nonzero(bad)[0]:
        out[i] = solve_reference(rhs, out[i, 0], params[i], save_every, saves)
    return out


def solve_rk4(rhs, y0: np.ndarray, params: np.ndarray, save_every: float, saves: int,
              substeps: int) -> np.ndarray:
    """Fixed-step RK4 for every row at once: [n, saves, d] (NaN or inf where it fails)."""
    n = len(params)
    y = np.broadcast_to(np.asarray(y0, dtype=np.float64), (n, np.shape(y0)[-1])).copy()
    out = np.empty((n, saves, y.shape[1]))
    out[:, 0] = y
    dt = save_every / substeps
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, saves):
            for _ in range(substeps):
                k1 = rhs(y, params)
                k2 = rhs(y + 0.5 * dt * k1, params)
                k3 = rhs(y + 0.5 * dt * k2, params)
                k4 = rhs(y + dt * k3, params)
                y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            out[:, k] = y
    return out


def solve_reference(rhs, y0: np.ndarray, params: np.ndarray, save_every: float, saves: int,
                    rtol: float = 1e-8, atol: float = 1e-10) -> np.ndarray:
    """One row solved by scipy's LSODA at tight tolerances: [saves, d]."""
    from scipy.integrate import solve_ivp

    times = save_every * np.arange(saves)
    sol = solve_ivp(lambda t, y: rhs(y[None], params[None])[0], (0.0, times[-1]), y0,
                    method="LSODA", t_eval=times, rtol=rtol, atol=atol)
    if not sol.success:
        return np.full((saves, len(y0)), np.nan)
    return sol.y.T
