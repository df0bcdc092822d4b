"""`himdsl diagnose FIT_DIR`: is this fit right? The evidence, beyond what `fit` prints.

    report = diagnose(open_fit("hier_gauss_fit"))
    print(report.text())
    report.save("hier_gauss_fit")        # diagnose.json, ppc.png

* **Posterior predictive check.** D replicated data sets, one at each of the first D
  draws of posterior.npz (new locals, noise and simulator runs: what
  `himdsl simulate --posterior` draws), against the data on summaries of every
  observed feature: its value (no plate), or its mean, sd and 5/50/95 % quantiles
  over the rows, and, for rows of several values, the sd of the row means and the
  mean of the row sds (between- and within-row spread, what a hierarchy models).
  Each has the posterior predictive p-value P(T_rep > T_obs) + ½ P(T_rep = T_obs);
  one beyond [t, 1 − t], t = PPC_LEVEL / (2 · number of statistics) (a 1 % test for
  all of them together, Bonferroni), is a feature of the data the model does not
  produce. Per row: the share of rows whose value lies outside its replicates'
  central 90 % interval (about 10 % for a right model; flagged above ROW_SHARE_MAX)
  and the most outlying rows.
* **Importance sampling with the exact likelihood** (models whose likelihood and
  local priors are all explicit, with a local guide that has a density): log
  weights log p(x, z, β) − log q(z, β) at S draws of q, Pareto-smoothed as ArviZ
  does (`psislw`; Vehtari et al. 2024). k̂ below min(1 − 1 / log10 S, 0.7) says q
  is close enough to the posterior for importance sampling to correct it, and then
  the importance-weighted means of the globals are shown against q's; above, q
  misses posterior mass (its tails are too light somewhere). The mean log weight
  is the ELBO with the exact likelihood, shown beside the surrogate ELBO LFVI
  optimised (`trace.csv`), which estimates it only up to a constant that does not
  depend on q (the ratio's reference distribution of x).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from .atomic import write_atomically, write_text_atomically
from .infer.exact_weights import log_weights as exact_log_weights, unavailable
from .infer.importance import khat_threshold, psis
from .runtime.data import to_numpy

PPC_DRAWS = 200              # replicated data sets (fewer when large or slow: inference_data.py)
PPC_SECONDS = 60.0           # simulation time the replicated data sets may take
PPC_LEVEL = 0.01             # family-wise level of the summaries' p-values
ROW_INTERVAL = 0.9           # per-row central predictive interval
ROW_SHARE_MAX = 0.2          # flag when more rows than this lie outside it (nominal 0.1)
OUTLYING_ROWS = 5            # rows listed as the most outlying
IMPORTANCE_DRAWS = 1000      # S draws of q for the importance weights
PLOT_FEATURES = 6            # features drawn in ppc.png
OUTPUT_FILES = {"report": "diagnose.json", "plot": "ppc.png"}


@dataclass
class Statistic:
    """One summary of the data against its replicates."""

    feature: str
    name: str
    observed: float
    replicated_mean: float
    replicated_sd: float
    p: float
    flagged: bool = False


@dataclass
class RowCheck:
    """Rows outside their central predictive interval, for one observed array."""

    array: str
    share_outside: float
    values: int
    outlying: list[dict]      # [{"row": m, "feature": "x[1]", "p": 0.001}], most outlying first
    flagged: bool = False


@dataclass
class Importance:
    """Pareto-smoothed importance sampling of q against the exact posterior."""

    draws: int
    khat: float | None = None
    threshold: float | None = None
    elbo_exact: float | None = None          # per row, as trace.csv's
    elbo_surrogate: float | None = None      # trace.csv, mean over its final quarter
    weighted_shift: dict = field(default_factory=dict)   # {scalar: (IS mean − q mean) / q sd}
    reason: str | None = None                # why it was not computed

    @property
    def ok(self) -> bool | None:
        return None if self.khat is None else self.khat <= self.threshold


@dataclass
class Diagnosis:
    folder: str
    replicated: int
    statistics: list[Statistic]
    rows: list[RowCheck]
    importance: Importance
    fit_verdict: dict | None
    notes: list[str] = field(default_factory=list)
    _replicated_arrays: dict = field(default_factory=dict, repr=False)
    _observed_arrays: dict = field(default_factory=dict, repr=False)

    def lines(self) -> list[tuple[bool | None, str, str]]:
        """The verdict: (ok, name, message) per check; ok None when it does not apply."""
        return [ppc_line(self.statistics, self.replicated), row_line(self.rows),
                importance_line(self.importance)]

    def to_dict(self) -> dict:
        return {"replicated_data_sets": self.replicated,
                "statistics": [asdict(s) for s in self.statistics],
                "rows": [asdict(r) for r in self.rows],
                "importance": {**asdict(self.importance), "ok": self.importance.ok},
                "verdict": [{"ok": ok, "name": name, "message": message}
                            for ok, name, message in self.lines()],
                "fit_verdict": self.fit_verdict, "notes": self.notes}

    def text(self) -> str:
        return report_text(self)

    def save(self, folder: str) -> dict[str, str]:
        """diagnose.json and ppc.png in `folder`; a picture that cannot be drawn is a
        note, never the numbers' loss."""
        paths = {kind: os.path.join(folder, name) for kind, name in OUTPUT_FILES.items()}
        write_text_atomically(paths["report"], json.dumps(self.to_dict(), indent=2) + "\n")
        try:
            plot_ppc(self, paths["plot"])
        except Exception as exc:  # noqa: BLE001 - matplotlib's errors are many and not the user's
            self.notes.append(f"ppc.png not drawn ({type(exc).__name__}: {exc})")
            del paths["plot"]
        return paths


def diagnose(fit, draws: int = PPC_DRAWS, importance_draws: int = IMPORTANCE_DRAWS,
             verdict: dict | None = None, seed: int = 0) -> Diagnosis:
    """Every check that applies to `fit` (a `Fit`, e.g. from fit_folder.open_fit);
    the same `seed`, the same report."""
    from .inference_data import replicated_data
    from .simulation import seed_everything

    fit = replace(fit, settings=replace(fit.settings, seed=seed))   # the replicates' seed
    seed_everything(seed)
    replicated, note = replicated_data(fit, draws, PPC_SECONDS)
    observed = {n: to_numpy(fit.data[n]) for n in fit.module.observed_names if n in fit.data}
    count = len(next(iter(replicated.values()))) if replicated else 0
    notes = list(fit.notes) + ([note.replace("posterior.nc holds", "the check uses")] if note else [])
    tables = {n: feature_table(fit.module, n, observed[n], replicated[n]) for n in replicated}
    statistics = [s for n, (obs, rep, labels) in tables.items() for s in summary_statistics(obs, rep, labels)]
    flag_statistics(statistics)
    rows = [row_check(n, obs, rep, labels) for n, (obs, rep, labels) in tables.items()
            if obs.shape[0] > 1]
    report = Diagnosis(fit.data_file or "", count, statistics, rows,
                       importance_sampling(fit, importance_draws), verdict, notes)
    report._replicated_arrays = {n: t[1] for n, t in tables.items()}
    report._observed_arrays = {n: (t[0], t[2]) for n, t in tables.items()}
    return report


# ------------------------------------------------------------------ posterior predictive
def feature_table(module, name: str, observed: np.ndarray, replicated: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(observed [M, F], replicated [D, M, F], feature labels): a plate array's rows,
    or one row for an array outside the plate."""
    info = module.nodes[name]
    rows = observed.shape[0] if info.plate else 1
    labels = [name] if not info.shape else [
        f"{name}[{', '.join(map(str, i))}]" for i in np.ndindex(*info.shape)]
    obs = observed.reshape(rows, -1).astype(np.float64)
    rep = replicated.reshape(len(replicated), rows, -1).astype(np.float64)
    return obs, rep, labels


def _statistics(rows: int) -> dict:
    """{name: function of [..., M, F] -> [..., F]} for M rows of F values."""
    if rows == 1:
        return {"value": lambda a: a[..., 0, :]}
    return {"mean": lambda a: a.mean(-2), "sd": lambda a: a.std(-2, ddof=1),
            "5%": lambda a: np.quantile(a, 0.05, axis=-2), "50%": lambda a: np.quantile(a, 0.5, axis=-2),
            "95%": lambda a: np.quantile(a, 0.95, axis=-2)}


def _row_spread(width: int) -> dict:
    """Between- and within-row spread of rows of several values ([..., M, F] -> [...])."""
    if width < 2:
        return {}
    return {"sd of row means": lambda a: a.mean(-1).std(-1, ddof=1),
            "mean of row sds": lambda a: a.std(-1, ddof=1).mean(-1)}


def summary_statistics(observed: np.ndarray, replicated: np.ndarray, labels: list[str]) -> list[Statistic]:
    """Every summary of one array (module docstring), with its p-value."""
    rows, width = observed.shape
    out = []
    with np.errstate(all="ignore"):
        values = {name: (stat(observed), stat(replicated)) for name, stat in _statistics(rows).items()}
        out += [_statistic(labels[j], name, obs[j], rep[:, j])
                for j in range(width) for name, (obs, rep) in values.items()]
        if rows > 1:
            array = labels[0].split("[")[0]
            for name, stat in _row_spread(width).items():
                out.append(_statistic(array, name, stat(observed), stat(replicated)))
    return out


def _statistic(feature: str, name: str, observed: float, replicated: np.ndarray) -> Statistic:
    replicated = replicated[np.isfinite(replicated)]
    return Statistic(feature, name, float(observed), float(replicated.mean()) if replicated.size else math.nan,
                     float(replicated.std()) if replicated.size else math.nan,
                     predictive_p(float(observed), replicated))


def predictive_p(observed: float, replicated: np.ndarray) -> float:
    """P(T_rep > T_obs) + ½ P(T_rep = T_obs) (the mid-p, fair to integer data)."""
    if replicated.size == 0 or not math.isfinite(observed):
        return math.nan
    return float((replicated > observed).mean() + 0.5 * (replicated == observed).mean())


def flag_statistics(statistics: list[Statistic]) -> None:
    """Flag p-values beyond the Bonferroni tail of a PPC_LEVEL test of them all."""
    tail = PPC_LEVEL / (2 * max(len(statistics), 1))
    for s in statistics:
        s.flagged = math.isfinite(s.p) and not tail <= s.p <= 1 - tail


def row_check(name: str, observed: np.ndarray, replicated: np.ndarray, labels: list[str]) -> RowCheck:
    """Per row and feature, the predictive p of the observed value among its replicates."""
    p = (replicated > observed).mean(0) + 0.5 * (replicated == observed).mean(0)     # [M, F]
    outside = (p < (1 - ROW_INTERVAL) / 2) | (p > (1 + ROW_INTERVAL) / 2)
    share = float(outside.mean())
    extremity = np.minimum(p, 1 - p)
    order = np.argsort(extremity, axis=None)[:OUTLYING_ROWS]
    outlying = [{"row": int(m), "feature": labels[f], "p": round(float(p[m, f]), 4)}
                for m, f in zip(*np.unravel_index(order, p.shape))]
    return RowCheck(name, share, int(p.size), outlying, share > ROW_SHARE_MAX)


def ppc_line(statistics: list[Statistic], replicated: int) -> tuple:
    if not statistics:
        return None, "posterior predictive", "no replicated data sets could be simulated (see the notes)"
    flagged = [s for s in statistics if s.flagged]
    if not flagged:
        return True, "posterior predictive", (f"all {len(statistics)} summaries of the data lie within "
                                              f"{replicated} replicated data sets")
    worst = min(flagged, key=lambda s: min(s.p, 1 - s.p))
    return False, "posterior predictive", (
        f"{len(flagged)} of {len(statistics)} summaries lie outside the replicated data sets, e.g. the "
        f"{worst.name} of {worst.feature}: {worst.observed:.4g} observed, {worst.replicated_mean:.4g} "
        f"± {worst.replicated_sd:.3g} replicated (p = {worst.p:.3g}); the model misses this feature "
        "of the data (ppc.png)")


def row_line(rows: list[RowCheck]) -> tuple:
    if not rows:
        return None, "rows", "no plate: a single observation"
    worst = max(rows, key=lambda r: r.share_outside)
    share = f"{worst.share_outside:.1%} of `{worst.array}`'s values lie outside their rows' central " \
            f"{ROW_INTERVAL:.0%} predictive interval"
    if not worst.flagged:
        return True, "rows", f"{share} (a right model: about {1 - ROW_INTERVAL:.0%})"
    first = worst.outlying[0]
    return False, "rows", (f"{share}, more than {ROW_SHARE_MAX:.0%}: the data are more spread out than "
                           f"the model's predictions (the most outlying: row {first['row']}, "
                           f"{first['feature']}, p = {first['p']:.3g})")


# ------------------------------------------------------------------ importance sampling
def importance_sampling(fit, draws: int = IMPORTANCE_DRAWS) -> Importance:
    """PSIS k̂, the exact ELBO and importance-weighted means (module docstring)."""
    reason = _no_exact_weights(fit)
    if reason:
        return Importance(draws, reason=reason)
    with torch.no_grad():
        log_w, globals = log_weights(fit, draws)
    finite = torch.isfinite(log_w)
    if not bool(finite.all()):
        return Importance(draws, reason=f"{int((~finite).sum())} of {draws} log weights are not finite")
    smoothed, khat = psis(log_w.double().cpu().numpy())
    report = Importance(draws, float(khat), khat_threshold(draws),
                        float(log_w.mean()) / fit.result.plan.rows, _surrogate_elbo(fit))
    if report.ok:
        report.weighted_shift = _weighted_shift(globals, smoothed)
    return report


def _no_exact_weights(fit) -> str | None:
    if fit.result is None:
        return "q's density is in checkpoint.pt, which the folder does not have"
    return unavailable(fit.module, fit.result.global_guide, fit.result.local_guide)


def log_weights(fit, draws: int) -> tuple[torch.Tensor, dict]:
    """log p(x, z, β) − log q(z, β) at `draws` draws of q: ([S], the globals drawn)."""
    from .infer.data import ModelView

    result = fit.result
    view = ModelView.of_fit(fit.module, fit.data, result.settings)
    log_w, globals = exact_log_weights(fit.module, view, result.plan, result.global_guide, result.local_guide, draws)
    return log_w, {n: to_numpy(v) for n, v in globals.items()}


def _surrogate_elbo(fit) -> float | None:
    """The trace's ELBO over its final quarter, where a ratio stood in for the
    likelihood (with the exact likelihood, method vi, the trace's ELBO is not a surrogate)."""
    if getattr(fit.result.plan, "ratio", None) is None:
        return None
    trace = [r.elbo for r in fit.result.trace if r.step > 0.75 * fit.settings.steps and math.isfinite(r.elbo)]
    return float(np.mean(trace)) if trace else None


def _weighted_shift(globals: dict, smoothed: np.ndarray) -> dict:
    """{scalar: (importance-weighted mean − q's mean) / q's sd} of every global scalar."""
    from .plots import scalar_columns

    weights = np.exp(smoothed - smoothed.max())
    weights /= weights.sum()
    total = sum(int(np.prod(v.shape[1:])) for v in globals.values())
    shifts = {}
    for label, values in scalar_columns(globals, limit=total):
        sd = values.std()
        shifts[label] = round(float((weights @ values - values.mean()) / sd), 4) if sd > 0 else 0.0
    return shifts


def importance_line(importance: Importance) -> tuple:
    if importance.khat is None:
        return None, "importance sampling", f"not computed: {importance.reason}"
    elbo = (f"ELBO with the exact likelihood {importance.elbo_exact:.4g} per row"
            + (f" (LFVI's surrogate {importance.elbo_surrogate:.4g}, up to a constant)"
               if importance.elbo_surrogate is not None else ""))
    if importance.ok:
        shift = max(importance.weighted_shift.items(), key=lambda kv: abs(kv[1]), default=None)
        moved = (f"; reweighting moves the means by at most {abs(shift[1]):.2f} q-sd ({shift[0]})"
                 if shift else "")
        return True, "importance sampling", (f"Pareto k̂ {importance.khat:.2f} <= "
                                             f"{importance.threshold:.2f}: q is close to the posterior"
                                             f"{moved}; {elbo}")
    return False, "importance sampling", (
        f"Pareto k̂ {importance.khat:.2f} > {importance.threshold:.2f}: q misses part of the exact "
        "posterior (its tails are too light somewhere, or it is off); the marginals may still be "
        f"close, which `himdsl calibrate` tests; {elbo}")


# ------------------------------------------------------------------ report
def report_text(report: Diagnosis) -> str:
    """The printed report: the summaries table, per-row coverage, importance sampling, verdict."""
    lines = [f"posterior predictive: {report.replicated} replicated data sets at the draws of "
             "posterior.npz; p = P(replicated > observed)"]
    if report.statistics:
        lines.append(f"  {'feature':<14} {'statistic':<16} {'observed':>10} {'replicated':>22} {'p':>7}")
        for s in report.statistics:
            rep = f"{s.replicated_mean:.4g} ± {s.replicated_sd:.3g}"
            lines.append(f"  {s.feature:<14} {s.name:<16} {s.observed:>10.4g} {rep:>22} {s.p:>7.3f}"
                         + ("  <-" if s.flagged else ""))
    for r in report.rows:
        rows = ", ".join(f"row {o['row']} {o['feature']} (p {o['p']:.3g})" for o in r.outlying[:3])
        lines.append(f"  rows of {r.array}: {r.share_outside:.1%} of {r.values} values outside their "
                     f"central {ROW_INTERVAL:.0%} interval; most outlying: {rows}")
    lines.append("verdict:")
    for ok, name, message in report.lines():
        word = "-" if ok is None else "OK" if ok else "LOOK"
        lines.append(f"  {word:<4}  {name}: {message}")
    return "\n".join(lines)


def plot_ppc(report: Diagnosis, path: str) -> None:
    """ppc.png, a row per feature (the first PLOT_FEATURES): with a plate the data's
    values against 20 replicated data sets, then the replicated means and sds with
    the observed ones (black); without one the replicated values and the observed."""
    from matplotlib.figure import Figure

    panels = [(name, j, label) for name, (obs, labels) in report._observed_arrays.items()
              for j, label in enumerate(labels)]
    shown = panels[:PLOT_FEATURES]
    plated = any(obs.shape[0] > 1 for obs, _ in report._observed_arrays.values())
    columns = 3 if plated else 1
    figure = Figure(figsize=(3.4 * columns + 0.4, 2.4 * max(len(shown), 1) + 0.6))
    axes = figure.subplots(max(len(shown), 1), columns, squeeze=False)
    for row, (name, j, label) in enumerate(shown):
        observed = report._observed_arrays[name][0][:, j]
        replicated = report._replicated_arrays[name][:, :, j]
        if observed.shape[0] == 1:
            _plot_statistic(axes[row][0], observed[0], replicated[:, 0], label)
            continue
        _plot_values(axes[row][0], observed, replicated, label)
        for col, (stat, fn) in enumerate((("mean", np.mean), ("sd", np.std)), start=1):
            _plot_statistic(axes[row][col], fn(observed), fn(replicated, axis=1), f"{stat} of {label}")
    extra = f" (the first {len(shown)} of {len(panels)} features)" if len(panels) > len(shown) else ""
    figure.suptitle(f"posterior predictive check: data (black) against {report.replicated} "
                    f"replicated data sets{extra}", fontsize=10)
    figure.tight_layout()
    write_atomically(path, lambda stream: figure.savefig(stream, format="png", dpi=90))


def _plot_values(ax, observed: np.ndarray, replicated: np.ndarray, label: str) -> None:
    values = np.concatenate([observed, replicated[:20].ravel()])
    values = values[np.isfinite(values)]
    bins = np.histogram_bin_edges(values, bins=30) if np.ptp(values) > 0 else 1
    for rep in replicated[:20]:
        ax.hist(rep[np.isfinite(rep)], bins=bins, histtype="step", color="#4c72b0", alpha=0.3, density=True)
    ax.hist(observed, bins=bins, histtype="step", color="black", linewidth=1.5, density=True)
    ax.set_xlabel(label)
    ax.set_yticks([])


def _plot_statistic(ax, observed: float, replicated: np.ndarray, label: str) -> None:
    replicated = replicated[np.isfinite(replicated)]
    ax.hist(replicated, bins=30 if np.ptp(replicated) > 0 else 1, color="#4c72b0", alpha=0.7)
    ax.axvline(observed, color="black", linewidth=1.5)
    ax.set_xlabel(label)
    ax.set_yticks([])
