"""Fisher's information identity, tested on the contrastive ratio: does it behave
as a likelihood at the end of the fit? No reference posterior is needed.

For any likelihood ℓ(x, θ), of the data or of any summary of them, the score's
second moment on data simulated at θ equals minus its mean Hessian:
E[ℓ' ℓ'ᵀ] = −E[ℓ'']. On rows simulated at q's draws of the globals (and the
prior's draws of the locals the ratio reads), in the coordinates the posterior is
fitted in (q's unconstrained u, the locals as they are), the eigenvalues λ of
(−E r'')⁻¹ E[r' r'ᵀ] are all 1 for a ratio r that is a likelihood.

What a λ away from 1 means: a ratio r = ℓ + ε whose error ε varies with the row
has score variance 1 + Var(ε') against curvature 1 along a direction (in units of
the curvature), so λ − 1 = Var(ε') / C. Summed over N independent rows, that error
moves the posterior by a random √N·sd(ε') against a curvature N·C: by √(λ − 1)
of the posterior's own sd, whatever N (`row_scatter` gives that move's sd per
global coordinate, where ε' is uncorrelated with the likelihood's score: the advice
"ratio's row errors"). A ratio c·ℓ, too sharp (c > 1) or too flat
(c < 1), has λ = c and a posterior sd off by a factor 1/√c. A ratio whose score
varies as the likelihood's but which curves k times as much has λ = 1/k and a
posterior sd off by √λ: the other way. All but one of the hierarchical suite's
fits that failed the check went that way (λ > 1 too wide, λ < 1 too narrow, by
about √λ; docs/accuracy.md), so the message gives it as the likelier reading. Either way the posterior along that
direction is wrong by a predictable factor, so the check fails when λ strays from
1 by more than `IDENTITY_TOLERANCE` beyond its own noise.

With q's score centred (objective.py, "Centred score") q follows r' − G(u), G(u)
the mean score on simulations at u. The identity is then that field's: G is fitted
by a plane a + B (u − ū) over q's draws (B's error, relative to the curvature, is
about √(N / rows), hence `slope_rows`), the curvature is −E r'' + B, and the second
moment is the scores' about the plane. A ratio off by a function of θ alone, which
the centring corrects, then has λ = 1; a ratio c·ℓ still has λ = c. The plane's
integral, N (aᵀd + dᵀBd / 2), is what the centred q takes out of Σ_n r (`centring`).

The first of Bartlett's identities, E[ℓ'] = 0 on simulations at θ, asks less and
tells where the posterior sits: a ratio whose score has mean G on its own
simulations adds N G to the sum over the data's rows, which moves the posterior's
mean by Σ N G (Σ its covariance, q's). `score_bias` estimates that move, per
global coordinate in q's sds, from BIAS_ROWS_PER_ROW rows simulated a data row
(its standard error is then about √(N / rows) = 0.05 sd, whatever N).

    report = information_identity(trainer)        # None where it does not apply
    report.values, report.errors, report.widest   # eigenvalues, standard errors, direction
    bias = score_bias(trainer)                    # bias.shift, bias.errors: q's sds
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .result import scalar_labels, u_labels

Tensor = torch.Tensor
IDENTITY_ROWS = 20_000
# The rows are split into this many parts; the spread of their eigenvalues is the
# estimate's noise.
IDENTITY_PARTS = 4
# A direction whose curvature is below this share of the largest carries no
# information the ratio reads (a local it ignores): it is left out.
FLAT_SHARE = 1e-6
# Fewer finite rows than this a part tell nothing about the identity.
MIN_ROWS = 100 * IDENTITY_PARTS
# With q's score centred: rows for the mean score's plane per data row, at most
# MAX_SLOPE_ROWS, simulated CHUNK_ROWS at a time (slope_rows).
SLOPE_ROWS_PER_ROW = 2_000
MAX_SLOPE_ROWS = 1_000_000
CHUNK_ROWS = 50_000
# Rows for the mean score's move: its standard error in q's sds is about √(N / rows),
# so BIAS_ROWS_PER_ROW a data row keeps it near 0.05; at most MAX_BIAS_ROWS (an
# extern pays for every row).
BIAS_ROWS_PER_ROW = 400
MAX_BIAS_ROWS = 400_000


@dataclass(frozen=True)
class IdentityReport:
    """Eigenvalues of (−E r'')⁻¹ E[r' r'ᵀ], ascending, with their standard errors and
    eigenvectors (columns, over `labels`), and the rows used."""

    values: np.ndarray
    errors: np.ndarray
    vectors: np.ndarray
    labels: list[str]
    rows: int
    curvature: np.ndarray            # −E r'' per row, over `labels` (centred: + the slope of E r')
    second: np.ndarray               # E[r' r'ᵀ] per row (centred: about E r' at each draw)
    mean: np.ndarray                 # E[r'] per row at the draws' centre: 0 for a likelihood
    slope: np.ndarray                # ∂E[r']/∂u over the draws (centred; else zeros)
    centre: np.ndarray               # the draws' mean coordinates
    columns: list[int]               # each label's column among q's u, then the real locals
    # per label, the sd of q's move, in q's sds, that a ratio error varying from row to
    # row adds up to over the data's rows (`row_scatter`), and its standard errors;
    # None where the ratio reads locals
    scatter: np.ndarray | None = None
    scatter_errors: np.ndarray | None = None

    def centring(self, rows: int, width: int):
        """N Â(u) for the globals' first `width` coordinates u [K, width] → [K]: the
        mean score's plane integrated, what a centred q takes out of Σ_n r (zero
        without centring, or where the globals carry no curvature)."""
        columns = [i for i, c in enumerate(self.columns) if c < width]
        where = [self.columns[i] for i in columns]
        mean = torch.as_tensor(self.mean[columns])
        slope = torch.as_tensor(self.slope[np.ix_(columns, columns)])
        slope = (slope + slope.T) / 2
        centre = torch.as_tensor(self.centre[columns])

        def integral(u: Tensor) -> Tensor:
            d = u[:, where].double() - centre
            return (rows * (d @ mean + 0.5 * ((d @ slope) * d).sum(-1))).to(u.dtype)
        return integral

    def direction(self, i: int) -> dict[str, float]:
        """Eigenvector i, its largest component ±1, by coordinate label."""
        vector = self.vectors[:, i] / np.abs(self.vectors[:, i]).max()
        return dict(zip(self.labels, vector.tolist()))

    def describe(self, i: int) -> str:
        """Eigenvector i in words: `psi` where one coordinate carries it, else its
        components of 0.1 or more, `the direction a +1.00, k -0.98`."""
        parts = {n: w for n, w in self.direction(i).items() if abs(w) >= 0.1}
        if len(parts) == 1:
            return next(iter(parts))
        return "the direction " + ", ".join(f"{n} {w:+.2f}" for n, w in parts.items())


@dataclass(frozen=True)
class ScoreBias:
    """How far the ratio's mean score on its own simulations, summed over the data's
    rows, moves q's mean: per global coordinate (`labels`), in q's sds, with
    standard errors, from `rows` simulated rows."""

    shift: np.ndarray
    errors: np.ndarray
    labels: list[str]
    rows: int

    def to_dict(self) -> dict:
        return {"shift_in_q_sd": dict(zip(self.labels, np.round(self.shift, 3).tolist())),
                "errors": dict(zip(self.labels, np.round(self.errors, 3).tolist())), "rows": self.rows}


def score_bias(trainer) -> ScoreBias | None:
    """Σ N E[r'] over the globals' coordinates (module docstring), on rows simulated
    at q's draws; None without a contrastive ratio, where it reads no global (its
    score there is zero), or where the simulations failed. The locals' coordinates
    are left out: a local's error is one row's, not summed over N."""
    view = trainer.view
    if trainer.plan.ratio != "contrastive" or trainer.ratio is None or not view.g_shapes:
        return None
    n, guide = view.n_rows, trainer.result().global_guide
    score, coords, labels = _scores(trainer, guide, int(min(max(IDENTITY_ROWS, BIAS_ROWS_PER_ROW * n), MAX_BIAS_ROWS)))
    if score is None or len(score) < MIN_ROWS:
        return None
    width = len(u_labels(guide))
    score, coords = score[:, :width], coords[:, :width]
    if not score.any():
        return None
    return ScoreBias(*_move(score, coords, n), labels[:width], len(score))


def _move(score: np.ndarray, coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Σ n ḡ in q's sds per coordinate, Σ from the draws `coords`, ḡ the mean of
    `score`, and its standard errors (the scores' covariance over their number)."""
    covariance = np.atleast_2d(np.cov(coords, rowvar=False))
    sd = np.sqrt(np.diag(covariance))
    spread = n * n * covariance @ np.atleast_2d(np.cov(score, rowvar=False)) @ covariance / len(score)
    return n * covariance @ score.mean(0) / sd, np.sqrt(np.diag(spread)) / sd


def information_identity(trainer, num: int = IDENTITY_ROWS) -> IdentityReport | None:
    """The identity on `num` rows simulated at q's draws (module docstring); None
    without a contrastive ratio, or where nothing the ratio reads can be moved. With
    q's score centred, the mean score's plane is fitted on `slope_rows` more rows'
    scores (no Hessians), as many as its error on the identity needs."""
    if trainer.plan.ratio != "contrastive" or trainer.ratio is None:
        return None
    guide = trainer.result().global_guide
    score, hessian, coords, labels = _score_and_hessian(trainer, guide, num)
    if score is None or len(score) < MIN_ROWS:      # the simulations failed: "simulations finite" says so
        return None
    keep = _informative(hessian)
    if not keep.any():
        return None
    score, hessian, coords = score[:, keep], hessian[:, keep][:, :, keep], coords[:, keep]
    labels = [label for label, k in zip(labels, keep.tolist()) if k]
    columns = np.flatnonzero(keep).tolist()
    scatter = (_scatter_and_errors(hessian, score, coords, trainer.view.n_rows)
               if max(columns) < len(u_labels(guide)) else (None, None))
    if trainer.plan.score_centring:
        score, coords, _ = _scores(trainer, guide, slope_rows(trainer.view.n_rows, num))
        if score is None or len(score) < MIN_ROWS:
            return None
        score, coords = score[:, keep], coords[:, keep]
    else:
        coords = None
    values, vectors, moments = _eigen(hessian, score, coords)
    pieces = [(_part(hessian, p), _part(score, p), None if coords is None else _part(coords, p))
              for p in range(IDENTITY_PARTS)]
    parts = np.stack([_eigen(*piece)[0] for piece in pieces])
    errors = parts.std(0, ddof=1) / math.sqrt(IDENTITY_PARTS)
    return IdentityReport(values, errors, vectors, labels, len(hessian), *moments, columns, *scatter)


def row_scatter(hessian: np.ndarray, score: np.ndarray, draws: np.ndarray, n: int) -> np.ndarray:
    """Per coordinate, the sd of the move, in q's sds, that a ratio error ε varying
    from row to row gives q's mean over `n` rows (module docstring): where ε' is
    uncorrelated with the likelihood's score, Var(ε') = Cov(r') − (−E r'') (its
    positive part), and Σ_n ε'(x_n), of covariance n Var(ε'), moves the posterior's
    mean by Σ Σ_n ε' (Σ q's covariance, from `draws`)."""
    excess = np.atleast_2d(np.cov(score, rowvar=False)) + hessian.mean(0)
    values, vectors = np.linalg.eigh((excess + excess.T) / 2)
    excess = (vectors * np.clip(values, 0.0, None)) @ vectors.T
    covariance = np.atleast_2d(np.cov(draws, rowvar=False))
    return np.sqrt(np.diag(n * covariance @ excess @ covariance) / np.diag(covariance))


def _scatter_and_errors(hessian: np.ndarray, score: np.ndarray, draws: np.ndarray, n: int) -> tuple:
    parts = np.stack([row_scatter(_part(hessian, p), _part(score, p), _part(draws, p), n)
                      for p in range(IDENTITY_PARTS)])
    return row_scatter(hessian, score, draws, n), parts.std(0, ddof=1) / math.sqrt(IDENTITY_PARTS)


def slope_rows(n_rows: int, num: int = IDENTITY_ROWS) -> int:
    """Rows for the mean score's plane: its slope's error, relative to the curvature,
    is about √(N / rows) (q's draws spread over the posterior's sd, which shrinks as
    1/√N), so SLOPE_ROWS_PER_ROW a data row keeps it near 0.02."""
    return int(min(max(num, SLOPE_ROWS_PER_ROW * n_rows), MAX_SLOPE_ROWS))


def _part(values: np.ndarray, p: int) -> np.ndarray:
    size = len(values) // IDENTITY_PARTS
    return values[p * size:(p + 1) * size]


def _scores(trainer, guide, num: int) -> tuple:
    """r's gradient and the coordinates (finite rows only) on `num` rows simulated at
    `guide`'s draws, in chunks, and the coordinates' labels; Nones where r reads
    nothing that moves."""
    scores, coords, labels = [], [], None
    for start in range(0, num, CHUNK_ROWS):
        score, _, coord, labels = _score_and_hessian(trainer, guide, min(CHUNK_ROWS, num - start), hessian=False)
        if score is not None:
            scores.append(score)
            coords.append(coord)
    return (np.concatenate(scores), np.concatenate(coords), labels) if scores else (None, None, None)


def _score_and_hessian(trainer, guide, num: int, hessian: bool = True):
    """r's gradient [n, D], Hessian [n, D, D] (or None) and the coordinates [n, D]
    (float64, finite rows only) in q's (`guide`'s) unconstrained globals and the
    real locals, with a label per coordinate; Nones where r reads nothing that moves."""
    view, ratio = trainer.view, trainer.ratio
    u0, z0, x, rows = _simulated_rows(trainer, guide, num)
    u = u0.clone().requires_grad_(True)
    z = z0.clone().requires_grad_(True) if z0 is not None else None
    globals = guide.constrain(u)[0] if view.g_shapes else {}
    r = ratio.log_lik(x, ratio.theta(globals, z, rows, per_row=True)).reshape(len(u))
    inputs = [u] + ([z] if z is not None else [])
    z_columns, z_labels = _real_locals(view)

    def gradient(value: Tensor, **options) -> Tensor:
        """∂value/∂(u, the real locals) [n, D]; zero for what value does not read."""
        grads = torch.autograd.grad(value, inputs, allow_unused=True, **options)
        grads = [torch.zeros_like(v) if g is None else g for v, g in zip(inputs, grads)]
        return torch.cat([grads[0]] + ([grads[1][:, 0, z_columns]] if z is not None else []), -1)

    score = gradient(r.sum(), create_graph=hessian)
    if score.shape[1] == 0 or (hessian and not score.requires_grad):
        return None, None, None, None
    hessians = (torch.stack([gradient(score[:, i].sum(), retain_graph=True) for i in range(score.shape[1])], 1)
               .detach().double().cpu() if hessian else None)
    coords = torch.cat([u0] + ([z0[:, 0, z_columns]] if z is not None else []), -1).double().cpu()
    score = score.detach().double().cpu()
    finite = torch.isfinite(score).all(1)
    if hessians is not None:
        finite &= torch.isfinite(hessians).flatten(1).all(1)
        hessians = hessians[finite].numpy()
    return (score[finite].numpy(), hessians, coords[finite].numpy(),
            (u_labels(guide) if view.g_shapes else []) + (z_labels if z is not None else []))


@torch.no_grad()
def _simulated_rows(trainer, guide, num: int):
    """q's draws u [n, Du], the locals drawn with them from the prior [n, 1, Dz] (or
    None), one row simulated at each [n, 1, Fx], and the rows' data (n = num, even)."""
    view, ratio = trainer.view, trainer.ratio
    num = 2 * (num // 2)
    u = guide.rsample(num)[2] if view.g_shapes else torch.zeros(num, 0, device=view.device)
    rows = ratio.pair_rows(num // 2)
    sim = view.simulate_rows(guide.constrain(u)[0] if view.g_shapes else {}, rows)
    return u, (view.z_flat(sim) if view.z_blocks else None), view.x_features(sim), rows


def _real_locals(view) -> tuple[list[int], list[str]]:
    """The flat columns of the real-valued locals, and their labels (a local's
    coordinates are per row: `z` stands for any row's)."""
    columns, labels, start = [], [], 0
    for block in view.z_blocks:
        if block.dtype == "real":
            columns += list(range(start, start + block.width))
            labels += scalar_labels({block.name: block.shape})
        start += block.width
    return columns, labels


def _informative(hessian: np.ndarray) -> np.ndarray:
    """The coordinates whose mean curvature is not negligible beside the largest."""
    curvature = np.abs(np.diagonal(hessian.mean(0)))
    return curvature > FLAT_SHARE * max(float(curvature.max()), 1e-300)


def _eigen(hessian: np.ndarray, score: np.ndarray, coords: np.ndarray | None) -> tuple:
    """Eigenvalues (ascending) and eigenvectors of (−E H)⁻¹ E[s sᵀ], and the moments
    (curvature, second moment, mean, slope, centre). A curvature that is not positive
    (a ratio convex somewhere) gives some λ ≤ 0.

    With `coords` (q's score centred, objective.py), q follows s − G(u), G(u) the
    mean score on simulations at u: fitted here by a plane a + B (u − ū) over the
    draws, its curvature is −E H + B and its score's second moment is about G. For a
    ratio off by a function of θ alone both are the likelihood's again."""
    curvature = -hessian.mean(0)
    centre = np.zeros(score.shape[1]) if coords is None else coords.mean(0)
    mean, slope = score.mean(0), np.zeros_like(curvature)
    if coords is not None:
        design = np.concatenate([np.ones((len(score), 1)), coords - centre], 1)
        fitted = np.linalg.lstsq(design, score, rcond=None)[0]
        mean, slope = fitted[0], fitted[1:].T
        curvature = curvature + slope
        score = score - design @ fitted
    curvature = (curvature + curvature.T) / 2
    second = score.T @ score / len(score)
    values, vectors = np.linalg.eig(np.linalg.pinv(curvature) @ second)     # pinv: never singular
    order = np.argsort(values.real)
    return values.real[order], vectors.real[:, order], (curvature, second, mean, slope, centre)
