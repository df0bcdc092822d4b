"""`fit`'s seed also seeds numpy, so a fit of a model whose extern draws from numpy's
global generator reproduces (docs/language.md: externs may draw from torch's or numpy's
global generators, which `--seed` seeds)."""
from __future__ import annotations

import numpy as np

import himdsl

MODEL = """
model noisy_extern
extern shift(mu : real) -> real from "noisy.py"
data y : real
latent mu ~ Normal(0, 1)
observe y = shift(mu)
"""

EXTERN = """
import numpy as np
import torch

def shift(mu):
    return mu + torch.from_numpy(np.random.standard_normal(tuple(mu.shape))).to(mu.dtype)
"""


def _fit(path, seed, numpy_state):
    model = himdsl.load(str(path))
    np.random.seed(numpy_state)          # whatever state numpy was left in before the fit
    # six steps reproduce or not, but are no posterior: the trust checks are off
    fit = model.fit({"y": np.array(0.5)}, device="cpu", steps=6, simulations=32,
                    samples=50, seed=seed, log_every=3, checks=False)
    return fit.posterior(50)["mu"]


def test_fit_seed_reproduces_numpy_extern(tmp_path):
    (tmp_path / "noisy.py").write_text(EXTERN)
    path = tmp_path / "model.him"
    path.write_text(MODEL)
    first, again = _fit(path, 3, numpy_state=1), _fit(path, 3, numpy_state=2)
    np.testing.assert_array_equal(first, again)


def test_the_trainers_seed_reproduces_a_numpy_extern(tmp_path):
    """The Python API below `HimModel.fit` (himdsl.infer.fit, the Trainer), which the
    benchmark scripts call, seeds numpy as well: a chain-binomial extern drawing from
    numpy's global generator reproduced only under the CLI before."""
    from himdsl.infer import FitSettings, fit

    (tmp_path / "noisy.py").write_text(EXTERN)
    path = tmp_path / "model.him"
    path.write_text(MODEL)
    draws = []
    for state in (1, 2):
        np.random.seed(state)
        module = himdsl.load(str(path)).module()
        result = fit(module, {"y": np.array(0.5)}, FitSettings(steps=6, simulations=32, samples=50, seed=3,
                                                              log_every=3, checks=False))
        draws.append(result.posterior(50)["mu"])
    np.testing.assert_array_equal(*draws)
