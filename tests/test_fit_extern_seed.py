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
