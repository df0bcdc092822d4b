"""The distractors of sbibm's slcp_distractors task, for the model's extern.

sbibm stores the distractor distribution as a pickled pyro object (gmm.torch)
that needs pyro to load; its parameters come from numpy's legacy generator
seeded with 42 (SLCP._generate_noise_dist_parameters in sbibm's slcp/task.py),
so they are regenerated here, in the same order of draws: 20 locations
15 * N(0, I_92), 20 scale factors 3 * (tril(N(0, 1)) + diag(exp(N(0, 1)))),
then the permutation of the 100 output positions. (Checked equal to gmm.torch
and permutation_idx.torch by benchmarks/sbibm/validate.py --wheel.)

Randomness comes from numpy's global generator, which himdsl seeds.
"""
from __future__ import annotations

import numpy as np
import torch

DIMS, COMPONENTS, DF = 92, 20, 2.0


def _parameters(seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    loc = np.array([15 * rng.normal(size=DIMS) for _ in range(COMPONENTS)])
    scale_tril = 3 * np.array([np.tril(rng.normal(size=(DIMS, DIMS))) + np.diag(np.exp(rng.normal(size=DIMS)))
                               for _ in range(COMPONENTS)])
    permutation = rng.permutation(DIMS + 8)
    return loc, scale_tril, permutation


LOC, SCALE_TRIL, PERMUTATION = _parameters()


def sample_distractors(n: int) -> np.ndarray:
    """n draws [n, 92] of the mixture: a component chosen uniformly, then a
    Student-t draw loc + L z sqrt(df / chi2(df)), as pyro samples it."""
    component = np.random.randint(COMPONENTS, size=n)
    z = np.random.standard_normal((n, DIMS)) * np.sqrt(DF / np.random.chisquare(DF, size=(n, 1)))
    out = np.empty((n, DIMS))
    for c in np.unique(component):
        rows = component == c
        out[rows] = LOC[c] + z[rows] @ SCALE_TRIL[c].T
    return out


def add_distractors(data):
    """[*batch, 8] slcp data -> [*batch, 100]: the data and 92 distractors, permuted."""
    data = np.asarray(data, dtype=np.float64)
    batch = data.shape[:-1]
    flat = data.reshape(-1, 8)
    full = np.concatenate([flat, sample_distractors(len(flat))], axis=1)[:, PERMUTATION]
    return torch.from_numpy(full.reshape(*batch, DIMS + 8))
