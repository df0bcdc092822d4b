"""Scores of a posterior against a reference, shared by the benchmark scripts.

    c2st(draws, reference)                 # 0.5: indistinguishable; 1.0: disjoint
    marginal_scores(draws, reference)      # per column: mean error in reference sds, sd ratio
    worst_marginals(error, ratio)          # the largest error (signed) and the furthest ratio
    local_scores(mean, sd, ref_mean, ref_sd)   # locals: RMSE in reference sds, sd ratio
"""
from __future__ import annotations

import numpy as np


def c2st(draws: np.ndarray, reference: np.ndarray, seed: int = 1, folds: int = 5) -> float:
    """Classifier two-sample test accuracy exactly as sbibm computes it: both sets
    z-scored by the reference's mean and sd, an MLP with two hidden layers of
    10 · dim units (relu, adam, up to 10,000 iterations), 5-fold cross-validated
    accuracy. 0.5 is perfect, for equal numbers of draws only: with 4,000 against
    10,000 a classifier that always answers "reference" scores 0.714, so unequal
    sets are refused rather than scored."""
    if len(draws) != len(reference):
        raise ValueError(f"C2ST needs as many draws as reference draws ({len(draws)} vs "
                         f"{len(reference)}): chance is 0.5 only then")
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    draws, reference = _as_2d(draws), _as_2d(reference)
    mean, sd = reference.mean(0), reference.std(0, ddof=1)
    x = np.concatenate([(reference - mean) / sd, (draws - mean) / sd])
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(draws))])
    dim = x.shape[1]
    clf = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * dim, 10 * dim),
                        max_iter=10000, solver="adam", random_state=seed)
    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, x, y, cv=cv, scoring="accuracy").mean())


def marginal_scores(draws: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean error in reference sds and its sd ratio (1 is right):
    where a C2ST saturates at 1.0, these say by how much, and in which direction,
    the draws miss."""
    draws, reference = _as_2d(draws), _as_2d(reference)
    ref_sd = reference.std(0, ddof=1)
    return (draws.mean(0) - reference.mean(0)) / ref_sd, draws.std(0, ddof=1) / ref_sd


def worst_marginals(error: np.ndarray, ratio: np.ndarray) -> tuple[float, float]:
    """The mean error furthest from 0 (signed) and the sd ratio furthest from 1 (on
    the log scale, so 0.5 and 2 are equally far)."""
    return float(error[np.argmax(np.abs(error))]), float(ratio[np.argmax(np.abs(np.log(ratio)))])


def local_scores(mean: np.ndarray, sd: np.ndarray, ref_mean: np.ndarray, ref_sd: np.ndarray) -> dict:
    """Posterior means and sds of locals against a reference: the RMSE of the means
    in units of the reference sd, and the ratio of mean sds (1 is right)."""
    err = (np.asarray(mean) - ref_mean) / ref_sd
    return {"rmse_in_sd": float(np.sqrt(np.mean(err ** 2))),
            "sd_ratio": float(np.mean(sd) / np.mean(ref_sd))}


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), -1)
