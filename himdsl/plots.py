"""Pictures of a fit: marginals and pairwise scatter of the globals.

    plot_posterior({"beta": draws [S, 2]}, "posterior.png")
Draws with many scalars (Bayesian layers) show their first `limit` scalars.
"""
from __future__ import annotations

import itertools

import numpy as np

from .atomic import write_atomically


def scalar_columns(posterior: dict[str, np.ndarray], limit: int = 6) -> list[tuple[str, np.ndarray]]:
    """(label, draws [S]) for the first `limit` scalars of every global."""
    columns = []
    for name, draws in posterior.items():
        flat = draws.reshape(draws.shape[0], -1)
        shape = draws.shape[1:]
        for j, index in enumerate(itertools.product(*(range(d) for d in shape))):
            columns.append((f"{name}[{', '.join(map(str, index))}]" if shape else name, flat[:, j]))
            if len(columns) == limit:
                return columns
    return columns


def _bins(draws: np.ndarray) -> int:
    """50 bins, or one where the draws' spread is below float precision at their size
    (numpy then refuses the histogram: "Too many bins")."""
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return 1
    spread, size = float(np.ptp(finite)), float(np.abs(finite).max())
    return 50 if spread > 1e-5 * max(size, 1e-30) else 1


def plot_posterior(posterior: dict[str, np.ndarray], path: str, limit: int = 6, truth: dict | None = None) -> None:
    """A corner plot: histograms on the diagonal, scatter of pairs below it."""
    from matplotlib.figure import Figure

    columns = scalar_columns(posterior, limit)
    k = len(columns)
    figure = Figure(figsize=(2.2 * k + 0.6, 2.2 * k + 0.4))
    axes = figure.subplots(k, k, squeeze=False)
    for row, col in itertools.product(range(k), range(k)):
        ax = axes[row][col]
        if col > row:
            ax.set_visible(False)
        elif col == row:
            draws = columns[col][1]
            ax.hist(draws[np.isfinite(draws)], bins=_bins(draws), color="#4c72b0", alpha=0.85)
            ax.set_yticks([])
        else:
            ax.scatter(columns[col][1][:2000], columns[row][1][:2000], s=2, alpha=0.3, color="#4c72b0")
        if row == k - 1:
            ax.set_xlabel(columns[col][0])
        if col == 0 and row > 0:
            ax.set_ylabel(columns[row][0])
    total = sum(int(np.prod(d.shape[1:])) for d in posterior.values())
    shown = f" (the first {k} of {total} scalars; all are in posterior.npz)" if total > k else ""
    figure.suptitle("posterior of the globals (q)" + shown)
    figure.tight_layout()
    write_atomically(path, lambda stream: figure.savefig(stream, format="png", dpi=90))
