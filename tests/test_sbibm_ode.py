"""The batched ODE solver of the sbibm sir and lotka_volterra externs
(benchmarks/sbibm/sbibm_ode.py), against scipy's LSODA."""
import importlib.util
import sys

import numpy as np

from tests.infer.models import SBIBM

sys.path.insert(0, str(SBIBM))
import sbibm_ode  # noqa: E402


def _sir():
    spec = importlib.util.spec_from_file_location("sir_ode", SBIBM / "sir" / "sir_ode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_a_fixed_step_cannot_finish_are_solved_finer_and_the_rest_are_untouched():
    sir = _sir()
    grid = (sir.SAVE_EVERY, sir.SAVES)
    theta = np.array([[0.4, 0.125], [40.0, 0.125], [0.9, 0.2]])     # contact rates a day
    coarse = sbibm_ode.solve_rk4(sir.rhs, sir.START, theta, *grid, sir.SUBSTEPS)
    assert not np.isfinite(coarse[1]).all() and np.isfinite(coarse[[0, 2]]).all()
    solved = sbibm_ode.solve(sir.rhs, sir.START, theta, *grid, sir.SUBSTEPS)
    np.testing.assert_array_equal(solved[[0, 2]], coarse[[0, 2]])
    exact = sbibm_ode.solve_reference(sir.rhs, np.asarray(sir.START), theta[1], *grid)
    # in the observation's units: binomial counts out of 1,000 of the infected share
    assert np.abs(solved[1, :, 1] - exact[:, 1]).max() / sir.N * 1000 < 1.0
