"""The simulator of extern_plate/model.him, standing in for a black box.

`binomial_count(n, logit)`: successes out of n trials, each a success with
probability sigmoid(logit), i.e. a Binomial(n, sigmoid(logit)) draw. Called
once per batch with CPU torch tensors of equal leading batch axes; returns an
int64 numpy array of that shape. Randomness comes from numpy's global
generator, which `--seed` seeds.
"""
from __future__ import annotations

import numpy as np


def binomial_count(n, logit) -> np.ndarray:
    """Successes per row; numpy, so the compiler sees no density."""
    p = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logit, dtype=np.float64)))   # sigmoid without overflow
    return np.random.binomial(np.asarray(n, dtype=np.int64), p).astype(np.int64)
