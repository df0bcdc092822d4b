"""Simulation-based calibration: what `himdsl calibrate` does.

    report = calibrate(himdsl.load("hier_gauss.him"), fits=20, steps=500, workers=2)
    print(report.table())                   # one line per global scalar
    report.save("hier_gauss_calibration")   # calibration.json, ranks.csv, sbc.png

Draw K parameter sets from the prior, simulate a data set from each, fit each, and
ask whether the truth looks like one more posterior draw. If the fits are right it
does (Talts et al. 2018): its rank among L posterior draws is uniform on 0..L,
central intervals cover it at their nominal rate, and the TARP curve (Lemos et al.
2023) is the diagonal. The statistics are over the fits that passed their trust
checks (the posteriors a user would keep); the others are counted and listed.

Each fit's randomness comes from `seed` and its index alone, and each fit runs on
one torch thread, so the results do not depend on how many processes share the work.
Each finished fit is appended to DIR/fits.jsonl at once, so a run that is stopped
(Ctrl-C, a crash, a machine taken back) keeps its fits, and `resume` runs only the
others: the report is the one an uninterrupted run would have written.
"""
from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .atomic import write_atomically, write_text_atomically
from .infer.result import scalar_labels
from .provenance import data_sha256, model_identity

RANK_DRAWS = 99                  # L: posterior draws a rank is taken among (ranks 0..99)
DEFAULT_ROWS = 100               # plate rows simulated when neither --rows nor covariates say
LEVELS = (0.5, 0.8, 0.95)        # central-interval coverage reported
BAND_LEVEL = 0.99                # simultaneous ECDF band and histogram band
TARP_ALPHAS = tuple(np.round(np.linspace(0, 1, 21), 2))
SCALE_DRAWS = 4000               # prior draws that set TARP's per-coordinate scale
PLOT_LIMIT = 8                   # scalars drawn in sbc.png
OUTPUT_FILES = {"report": "calibration.json", "ranks": "ranks.csv", "plot": "sbc.png",
                "journal": "fits.jsonl"}


class CalibrationError(Exception):
    """A calibration that cannot start; the message is user-facing."""


# ------------------------------------------------------------------ statistics
def flatten(values: dict[str, np.ndarray], shapes: dict[str, tuple], lead: int) -> np.ndarray:
    """The globals as one array [*lead axes, P] in `scalar_labels` order."""
    parts = [np.asarray(values[n], dtype=np.float64) for n in shapes]
    return np.concatenate([p.reshape(p.shape[:lead] + (-1,)) for p in parts], axis=-1)


def thin(draws: np.ndarray, count: int) -> np.ndarray:
    """`count` evenly spaced draws of [S, ...]: q's draws are independent, so any
    subset is a sample; a fixed L keeps ranks comparable across models."""
    step = max(1, draws.shape[0] // count)
    return draws[::step][:count]


def sbc_ranks(truth: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of each truth among its draws: truth [K, P], draws [K, L, P] → [K, P] in 0..L.
    Ties (discrete globals, point guides) are broken at random, as Talts et al. do,
    so a correct posterior still gives uniform ranks."""
    below = (draws < truth[:, None, :]).sum(axis=1)
    ties = (draws == truth[:, None, :]).sum(axis=1)
    return below + rng.integers(0, ties + 1)


def rank_bins(fits: int, draws: int) -> int:
    """Histogram bins: about five fits a bin (the chi-square rule of thumb), at least 2,
    at most 20 (Talts et al.'s choice for L = 99) and at most the L + 1 rank values."""
    return int(min(max(2, fits // 5), 20, draws + 1))


def bin_counts(ranks: np.ndarray, draws: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(observed counts [bins, P], each bin's probability under uniform ranks [bins]);
    bins hold whole rank values, so unequal widths carry unequal probabilities."""
    which = (np.arange(draws + 1) * bins) // (draws + 1)
    probability = np.bincount(which, minlength=bins) / (draws + 1)
    counts = np.stack([np.bincount(which[ranks[:, p]], minlength=bins)
                       for p in range(ranks.shape[1])], axis=1)
    return counts, probability


def chi_square_sf(statistic: float, df: int) -> float:
    """P(χ²_df ≥ statistic): the regularised upper incomplete gamma Q(df/2, x/2)
    (torch has it; scipy is not a dependency)."""
    value = torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                    torch.tensor(max(statistic, 0.0) / 2, dtype=torch.float64))
    return float(value)


def uniformity_test(ranks: np.ndarray, draws: int, bins: int | None = None) -> list[dict]:
    """Pearson's chi-square test of uniform ranks on binned counts, per column of
    ranks [K, P]: {statistic, df, bins, p_value}."""
    bins = bins or rank_bins(ranks.shape[0], draws)
    counts, probability = bin_counts(ranks, draws, bins)
    expected = ranks.shape[0] * probability[:, None]
    statistics = ((counts - expected) ** 2 / expected).sum(axis=0)
    return [{"test": "chi-square", "statistic": float(s), "df": bins - 1, "bins": bins,
             "p_value": chi_square_sf(float(s), bins - 1)} for s in statistics]


def binomial_cdf(n: int, probabilities: np.ndarray) -> np.ndarray:
    """P(Binomial(n, p) ≤ c) for each p and c = 0..n: [len(p), n + 1]."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-300, 1 - 1e-16)[:, None]
    c = np.arange(n + 1)[None, :]
    log_choose = (math.lgamma(n + 1) - np.vectorize(math.lgamma)(c + 1)
                  - np.vectorize(math.lgamma)(n - c + 1))
    pmf = np.exp(log_choose + c * np.log(p) + (n - c) * np.log1p(-p))
    return np.minimum(np.cumsum(pmf, axis=1), 1.0)


def binomial_quantile(cdf: np.ndarray, q: float) -> np.ndarray:
    """Smallest count whose CDF reaches q, per row of a `binomial_cdf` table."""
    return (cdf < q - 1e-12).sum(axis=1)


def ecdf_band(fits: int, draws: int, level: float = BAND_LEVEL, simulations: int = 10000,
              seed: int = 0) -> dict:
    """Simultaneous band for the ECDF of `fits` uniform ranks in 0..L (Säilynoja et
    al. 2022, by simulation): pointwise binomial intervals at a level 1 - γ, with γ
    chosen so that a whole uniform ECDF lies inside with probability `level`.
    Returns the evaluation points z_j = (j + 1) / (L + 1) and the band as fractions."""
    z = (np.arange(draws) + 1) / (draws + 1)
    cdf = binomial_cdf(fits, z)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(fits, np.full(draws + 1, 1 / (draws + 1)), size=simulations)
    below = np.cumsum(counts, axis=1)[:, :draws]              # #ranks <= j
    rows = np.arange(draws)[None, :]
    lower_tail = cdf[rows, below]
    upper_tail = 1 - np.where(below > 0, cdf[rows, np.maximum(below - 1, 0)], 0.0)
    extreme = np.minimum(1.0, 2 * np.minimum(lower_tail, upper_tail)).min(axis=1)
    # the lower order statistic: an atom of equal extremes (ranks are discrete) counts
    # as inside, so the band holds a uniform ECDF with probability >= level
    gamma = float(np.quantile(extreme, 1 - level, method="lower"))
    return {"z": z, "lower": binomial_quantile(cdf, gamma / 2) / fits,
            "upper": binomial_quantile(cdf, 1 - gamma / 2) / fits, "gamma": gamma}


def ecdf(ranks: np.ndarray, draws: int) -> np.ndarray:
    """ECDF of ranks [K, P] at j = 0..L-1: [L, P]."""
    return (ranks[None, :, :] <= np.arange(draws)[:, None, None]).mean(axis=1)


def inside_band(ranks: np.ndarray, draws: int, band: dict) -> list[bool]:
    """Whether each column's ECDF stays inside the simultaneous band (a test at 1 - level)."""
    values = ecdf(ranks, draws)
    tolerance = 1e-9
    return [bool(np.all((values[:, p] >= band["lower"] - tolerance)
                        & (values[:, p] <= band["upper"] + tolerance))) for p in range(ranks.shape[1])]


def covered(truth: np.ndarray, draws: np.ndarray, levels=LEVELS) -> np.ndarray:
    """Whether each truth lies in the central interval of each level:
    truth [K, P], draws [K, S, P] → bool [K, len(levels), P]."""
    result = []
    for level in levels:
        low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=1)
        result.append((truth >= low) & (truth <= high))
    return np.stack(result, axis=1)


def tarp_fractions(truth: np.ndarray, draws: np.ndarray, references: np.ndarray,
                   scale: np.ndarray) -> np.ndarray:
    """TARP's f per fit (Lemos et al. 2023): the fraction of posterior draws closer to
    a random reference point than the truth is, in coordinates divided by `scale`
    (Euclidean distance would otherwise follow the widest global). truth [K, P],
    draws [K, S, P], references [K, P] → [K]; uniform on (0, 1) for a right posterior."""
    scale = np.where(scale > 0, scale, 1.0)
    distance_draws = np.linalg.norm((draws - references[:, None, :]) / scale, axis=-1)
    distance_truth = np.linalg.norm((truth - references) / scale, axis=-1)
    return (distance_draws < distance_truth[:, None]).mean(axis=1)


def kolmogorov_sf(statistic: float, n: int) -> float:
    """P(D_n ≥ statistic) for the one-sample Kolmogorov-Smirnov statistic, by the
    asymptotic series with Stephens' small-sample correction."""
    root = math.sqrt(n)
    lam = (root + 0.12 + 0.11 / root) * statistic
    if lam < 0.2:
        return 1.0
    total = sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return float(min(1.0, max(0.0, 2 * total)))


def tarp_curve(fractions: np.ndarray, alphas=TARP_ALPHAS) -> dict:
    """Expected coverage ECP(α) = share of fits with f < α, its largest distance from
    the diagonal (the KS statistic of f against U(0, 1)) and that distance's p-value."""
    f = np.sort(np.asarray(fractions, dtype=np.float64))
    n = len(f)
    ecp = [float((f < a).mean()) for a in alphas]
    steps = np.arange(1, n + 1) / n
    deviation = float(max(np.max(steps - f), np.max(f - (steps - 1 / n)))) if n else float("nan")
    return {"alpha": [float(a) for a in alphas], "ecp": ecp, "max_deviation": deviation,
            "p_value": kolmogorov_sf(deviation, n) if n else float("nan")}


# ------------------------------------------------------------------ one fit
@dataclass(frozen=True)
class FitTask:
    """Everything one fit needs, picklable for a spawned worker process."""

    index: int
    source: str
    path: str
    overrides: dict
    shapes: dict                  # {global: shape}, in scalar_labels order
    rows: int | None
    covariates: dict | None
    settings: dict                # FitSettings overrides (steps, the fit's seed)
    simulate_seed: int
    tie_seed: int
    reference: tuple              # a prior draw of the globals, flattened (TARP)
    scale: tuple                  # prior sd of each scalar (TARP)
    rank_draws: int = RANK_DRAWS


@dataclass
class FitOutcome:
    """What one fit contributes: its status and, when it produced draws, the statistics."""

    index: int
    status: str                   # "ok", "untrusted" (failed its trust checks) or "error"
    message: str
    seconds: float
    truth: list | None = None     # [P]
    rank: list | None = None      # [P] in 0..rank_draws
    covered: list | None = None   # [len(LEVELS)][P]
    tarp: float | None = None


_MODELS: dict = {}


def _model(task: FitTask):
    """The compiled model, once per process (a worker runs many fits)."""
    from .api import load

    key = (task.path, task.source, json.dumps(task.overrides, sort_keys=True, default=str))
    if key not in _MODELS:
        _MODELS[key] = load(task.path, task.overrides or None, source=task.source)
    return _MODELS[key]


def run_task(task: FitTask) -> FitOutcome:
    """Simulate, fit and score one data set. Every failure becomes the outcome's
    status and message, so one bad fit never loses the others."""
    from .fitting import UntrustedFit

    torch.set_num_threads(1)
    start = time.perf_counter()
    status, message, truth = "ok", "", None
    try:
        model = _model(task)
        data, values = model.simulate(rows=task.rows, covariates=task.covariates, seed=task.simulate_seed)
        truth = flatten(values, task.shapes, 0)
        try:
            fit = model.fit(data, device="cpu", **task.settings)
        except UntrustedFit as exc:
            fit, status, message = exc.fit, "untrusted", str(exc)
        draws = flatten(fit.posterior(), task.shapes, 1)
    except Exception as exc:  # reported per fit, never dropped
        seconds = time.perf_counter() - start
        return FitOutcome(task.index, "error", f"{type(exc).__name__}: {exc}", seconds,
                          truth.tolist() if truth is not None else None)
    return _scored(task, status, message, truth, draws, time.perf_counter() - start)


def _scored(task: FitTask, status: str, message: str, truth: np.ndarray, draws: np.ndarray,
            seconds: float) -> FitOutcome:
    rng = np.random.default_rng(task.tie_seed)
    rank = sbc_ranks(truth[None], thin(draws, task.rank_draws)[None], rng)[0]
    inside = covered(truth[None], draws[None])[0]
    tarp = tarp_fractions(truth[None], draws[None], np.asarray(task.reference)[None],
                          np.asarray(task.scale))[0]
    return FitOutcome(task.index, status, message, seconds, truth.tolist(), rank.tolist(),
                      inside.tolist(), float(tarp))


def _one_thread() -> None:
    """Worker initialiser: fits in parallel processes, not threads inside each."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def run_tasks(tasks: list[FitTask], workers: int, done=None) -> list[FitOutcome]:
    """Every task's outcome in index order; `done(outcome)` as each finishes. One
    worker runs in this process (no start-up cost); more use spawned processes."""
    outcomes = []
    if workers == 1:
        threads = torch.get_num_threads()
        try:
            for task in tasks:
                outcomes.append(run_task(task))
                done and done(outcomes[-1])
        finally:
            torch.set_num_threads(threads)
        return outcomes
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        futures = {pool.submit(run_task, task): task for task in tasks}
        try:
            for future in as_completed(futures):
                outcomes.append(_result(future, futures[future]))
                done and done(outcomes[-1])
        except BaseException:       # Ctrl-C: start no further fit
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return sorted(outcomes, key=lambda o: o.index)


def _result(future, task: FitTask) -> FitOutcome:
    try:
        return future.result()
    except Exception as exc:  # the worker process died (killed, out of memory)
        return FitOutcome(task.index, "error", f"the worker process ended: {type(exc).__name__}: {exc}", 0.0)


# ------------------------------------------------------------------ the run
def task_seeds(seed: int, fits: int) -> list[tuple[int, int, int]]:
    """(simulation, fit, tie-break) seeds of each fit, from `seed` and the fit's index
    only (numpy's SeedSequence: independent streams)."""
    children = np.random.SeedSequence(seed).spawn(fits)
    return [tuple(int(s) for s in child.generate_state(3)) for child in children]


def prior_draws(module, count: int, seed: int, shapes: dict) -> np.ndarray:
    """`count` prior draws of the globals, flattened [count, P], without disturbing
    torch's global generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            values = module.sample_globals(count)
    return flatten({n: v.cpu().numpy() for n, v in values.items()}, shapes, 1)


def default_workers(fits: int) -> int:
    """min(CPU cores this process may use, K)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, fits))


def plan_tasks(model, fits: int, rows: int | None = None, covariates: dict | None = None,
               steps: int | None = None, seed: int = 0) -> tuple[list[FitTask], dict]:
    """The K fits' tasks and the run's settings; CalibrationError (or the simulator's
    DataError) for a request that cannot run, before any fit starts."""
    from .fitting import FitError, settings_for

    if isinstance(fits, bool) or not isinstance(fits, int) or fits < 2:
        raise CalibrationError(f"--fits must be a whole number of at least 2 (a rank "
                               f"distribution needs several fits), got {fits}")
    if not model.checked.by_role("observed"):
        raise CalibrationError(f"model `{model.name}` observes no data, so there is nothing to fit")
    module = model.module()
    shapes = {name: tuple(module.nodes[name].shape) for name in module.global_names}
    if not shapes:
        raise CalibrationError(f"model `{model.name}` has no global latent to calibrate")
    if module.plate is None and rows is not None:
        raise CalibrationError(f"--rows: model `{model.name}` has no plate, so every data set is "
                               "one observation")
    if module.plate is not None and rows is None and not covariates:
        rows = DEFAULT_ROWS
    try:
        settings = settings_for(model, {"steps": steps})
    except FitError as exc:
        raise CalibrationError(str(exc)) from None
    model.simulate(rows=rows, covariates=covariates, seed=seed)     # DataError now, not K times
    seeds = task_seeds(seed, fits)
    prior = prior_draws(module, SCALE_DRAWS + fits, seed, shapes)
    scale, references = prior[:SCALE_DRAWS].std(axis=0), prior[SCALE_DRAWS:]
    identity = {"source": model.frontend.source, "path": model.path, "overrides": dict(model.overrides)}
    tasks = [FitTask(i, **identity, shapes=shapes, rows=rows, covariates=covariates,
                     settings={"steps": settings.steps, "seed": s[1]}, simulate_seed=s[0],
                     tie_seed=s[2], reference=tuple(references[i]), scale=tuple(scale),
                     rank_draws=min(RANK_DRAWS, settings.samples))
             for i, s in enumerate(seeds)]
    run = {"fits": fits, "rows": rows, "steps": settings.steps, "seed": seed,
           "rank_draws": tasks[0].rank_draws, "levels": list(LEVELS),
           "fit_settings": {k: v for k, v in settings.to_dict().items() if k != "seed"}}
    return tasks, run


def calibrate(model, fits: int, rows: int | None = None, covariates: dict | None = None,
              steps: int | None = None, seed: int = 0, workers: int | None = None,
              out: str | None = None, done=None, resume: bool = False) -> "Calibration":
    """Simulation-based calibration of `model` (a himdsl.Model) over `fits` data sets;
    see the module docstring. `out` is checked to be writable before any fit starts
    (`save` writes there) and holds the journal of finished fits; `resume` continues
    the run it records. `done(outcome)` is called as each fit finishes. With
    workers > 1 the fits run in spawned processes, which import the calling script:
    a script needs the `if __name__ == "__main__":` guard."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise CalibrationError(f"--workers must be a positive whole number, got {workers}")
    start = time.perf_counter()
    tasks, run = plan_tasks(model, fits, rows, covariates, steps, seed)
    identity = {"model_sha256": model_identity(model)["sha256"],
                "covariates_sha256": data_sha256(covariates) if covariates else None}
    journal = Journal(out, {**run, **identity}) if out else None
    finished = journal.open(resume) if journal else {}
    run["workers"] = workers or default_workers(fits)

    def record(outcome: FitOutcome) -> None:
        if journal:
            journal.append(outcome)
        if done:
            done(outcome)

    left = [task for task in tasks if task.index not in finished]
    outcomes = sorted([*finished.values(), *run_tasks(left, run["workers"], record)], key=lambda o: o.index)
    labels = scalar_labels(tasks[0].shapes)
    earlier = sum(o.seconds for o in finished.values())
    return Calibration(model.path, labels, outcomes, run, earlier + time.perf_counter() - start)


class Journal:
    """DIR/fits.jsonl: the run's settings, then one line per finished fit, each
    flushed to disk as the fit ends. A line cut short by a crash is ignored."""

    def __init__(self, folder: str, run: dict):
        self.folder, self.run = folder, json.loads(json.dumps(run, default=str))
        self.path = os.path.join(folder, OUTPUT_FILES["journal"])

    def open(self, resume: bool) -> dict[int, FitOutcome]:
        """The fits already finished (resume), or none after starting a new journal;
        CalibrationError for a journal of another run, or an unfinished run that a
        fresh start would throw away."""
        from .fitting import FitError, prepare_output_folder

        try:
            prepare_output_folder(self.folder)
        except FitError as exc:
            raise CalibrationError(str(exc)) from None
        finished = self._read() if os.path.exists(self.path) else None
        if resume:
            if finished is None:
                raise CalibrationError(f"--resume: no {OUTPUT_FILES['journal']} in {self.folder}")
            return finished
        report = os.path.join(self.folder, OUTPUT_FILES["report"])
        if finished and not os.path.exists(report):
            raise CalibrationError(f"{self.folder} holds {len(finished)} finished fits of a run that "
                                   "did not end: add --resume to continue it, or give another --out")
        write_text_atomically(self.path, json.dumps({"run": self.run}) + "\n")
        return {}

    def _read(self) -> dict[int, FitOutcome]:
        with open(self.path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        try:
            header = json.loads(lines[0])["run"]
        except (ValueError, KeyError, TypeError):
            raise CalibrationError(f"{self.path} is not a calibration journal") from None
        changed = sorted(k for k in set(header) | set(self.run) if header.get(k) != self.run.get(k))
        if changed:
            raise CalibrationError(f"{self.path} records a run with other settings "
                                   f"({', '.join(changed)}); resume with the same ones, or give another --out")
        finished = {}
        for line in lines[1:]:
            try:
                outcome = FitOutcome(**json.loads(line))
            except (ValueError, TypeError):
                continue                     # empty, or cut short by a crash
            finished[outcome.index] = outcome
        return finished

    def append(self, outcome: FitOutcome) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(outcome)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


# ------------------------------------------------------------------ the report
@dataclass
class Calibration:
    """The outcomes of K fits and the statistics over the trusted ones."""

    model_file: str
    labels: list[str]
    outcomes: list[FitOutcome]
    run: dict
    seconds: float
    stats: dict = field(init=False)
    notes: list = field(default_factory=list)      # what the outputs could not hold

    def __post_init__(self):
        self.stats = summarise(self.outcomes, self.labels, self.run["rank_draws"], self.run["seed"])

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def table(self) -> str:
        """The printed report: one line per global scalar, TARP, the fits' statuses."""
        return report_table(self)

    def to_json(self) -> dict:
        failures = [{"fit": o.index, "status": o.status, "message": o.message}
                    for o in self.outcomes if o.status != "ok"]
        return {"model": self.model_file, "settings": self.run,
                "fits": {"ok": self.count("ok"), "untrusted": self.count("untrusted"),
                         "error": self.count("error"), "failures": failures},
                "globals": self.stats["globals"], "tarp": self.stats["tarp"],
                "ranks": {label: [o.rank[p] if o.rank else None for o in self.outcomes]
                          for p, label in enumerate(self.labels)},
                "status": [o.status for o in self.outcomes],
                "seconds": round(self.seconds, 2),
                "fit_seconds": [round(o.seconds, 2) for o in self.outcomes]}

    def save(self, folder: str) -> dict[str, str]:
        """calibration.json, ranks.csv and sbc.png in `folder`; {kind: path}. A picture
        that cannot be drawn is skipped with a note (in `notes`), never losing the numbers."""
        os.makedirs(folder, exist_ok=True)
        paths = {kind: os.path.join(folder, name) for kind, name in OUTPUT_FILES.items()
                 if kind != "journal"}
        write_text_atomically(paths["report"], json.dumps(self.to_json(), indent=2) + "\n")
        write_text_atomically(paths["ranks"], ranks_csv(self))
        try:
            plot_sbc(self, paths["plot"])
        except Exception as exc:  # matplotlib's failures are many; the numbers are saved
            self.notes.append(f"sbc.png not drawn: {type(exc).__name__}: {exc}")
            del paths["plot"]
        return paths


def summarise(outcomes: list[FitOutcome], labels: list[str], draws: int, seed: int) -> dict:
    """Uniformity, ECDF band, coverage and TARP over the fits whose status is ok."""
    good = [o for o in outcomes if o.status == "ok"]
    if len(good) < 2:
        return {"globals": {}, "tarp": None, "band": None, "fits_used": len(good)}
    ranks = np.array([o.rank for o in good], dtype=np.int64)
    inside = np.array([o.covered for o in good], dtype=bool).mean(axis=0)      # [levels, P]
    band = ecdf_band(len(good), draws, seed=seed)
    tests = uniformity_test(ranks, draws)
    in_band = inside_band(ranks, draws, band)
    per_global = {label: {"uniformity": tests[p], "ecdf_in_band": in_band[p],
                          "coverage": {f"{round(100 * level)}": float(inside[i, p])
                                       for i, level in enumerate(LEVELS)}}
                  for p, label in enumerate(labels)}
    return {"globals": per_global, "tarp": tarp_curve([o.tarp for o in good]), "band": band,
            "fits_used": len(good)}


def report_table(report: Calibration) -> str:
    stats, lines = report.stats, []
    if stats["globals"]:
        header = (f"{'global':<14} {'rank p':>8} {'ECDF':>8} " + " ".join(f"{f'{round(100 * l)}%':>6}" for l in LEVELS))
        lines += [header]
        for label, row in stats["globals"].items():
            coverage = " ".join(f"{v:6.2f}" for v in row["coverage"].values())
            band = "inside" if row["ecdf_in_band"] else "OUTSIDE"
            lines.append(f"{label:<14} {row['uniformity']['p_value']:8.3f} {band:>8} {coverage}")
        tarp = stats["tarp"]
        lines.append(f"TARP: largest |ECP(a) - a| {tarp['max_deviation']:.3f} (KS p-value {tarp['p_value']:.3f})")
        bins = stats["globals"][report.labels[0]]["uniformity"]["bins"]
        lines.append(f"rank p: chi-square p-value of uniform ranks 0..{report.run['rank_draws']} in {bins} bins; "
                     f"ECDF: the ranks' ECDF inside or OUTSIDE the simultaneous {round(100 * BAND_LEVEL)}% band; "
                     f"{'/'.join(str(round(100 * l)) for l in LEVELS)}%: share of truths inside the "
                     "central posterior interval")
    else:
        lines.append(f"only {stats['fits_used']} fit(s) passed their checks: too few for statistics")
    lines.append(f"fits: {report.count('ok')} ok, {report.count('untrusted')} untrusted, "
                 f"{report.count('error')} failed; {report.seconds:.1f} s with {report.run['workers']} worker(s)")
    for outcome in report.outcomes:
        if outcome.status != "ok":
            lines.append(f"  fit {outcome.index} {outcome.status}: {outcome.message}")
    return "\n".join(lines)


def ranks_csv(report: Calibration) -> str:
    """One row per fit: index, status, seconds, the rank and the true value of each scalar."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["fit", "status", "seconds"] + [f"rank {l}" for l in report.labels]
                    + [f"true {l}" for l in report.labels])
    for o in report.outcomes:
        ranks = o.rank if o.rank is not None else [""] * len(report.labels)
        truth = [f"{v:.6g}" for v in o.truth] if o.truth is not None else [""] * len(report.labels)
        writer.writerow([o.index, o.status, f"{o.seconds:.2f}"] + list(ranks) + truth)
    return buffer.getvalue()


def plot_sbc(report: Calibration, path: str) -> None:
    """Per scalar: the rank histogram with its pointwise 99% band (Talts et al.), and
    the ECDF difference with the simultaneous 99% band (Säilynoja et al.)."""
    from matplotlib.figure import Figure

    stats, draws = report.stats, report.run["rank_draws"]
    if not stats["globals"]:
        raise ValueError("too few trusted fits to draw")
    ranks = np.array([o.rank for o in report.outcomes if o.status == "ok"], dtype=np.int64)
    k = min(len(report.labels), PLOT_LIMIT)
    figure = Figure(figsize=(max(2.8 * k + 0.4, 5.0), 5.8))
    axes = figure.subplots(2, k, squeeze=False)
    bins = stats["globals"][report.labels[0]]["uniformity"]["bins"]
    counts, probability = bin_counts(ranks, draws, bins)
    cdf = binomial_cdf(len(ranks), probability)
    low = binomial_quantile(cdf, (1 - BAND_LEVEL) / 2)
    high = binomial_quantile(cdf, (1 + BAND_LEVEL) / 2)
    band, values = stats["band"], ecdf(ranks, draws)
    edges = np.arange(bins + 1)
    for p in range(k):
        top, bottom = axes[0][p], axes[1][p]
        top.fill_between(edges, np.append(low, low[-1]), np.append(high, high[-1]), step="post",
                         color="0.85", label=f"{round(100 * BAND_LEVEL)}% band")
        top.bar(edges[:-1], counts[:, p], width=1.0, align="edge", color="#4c72b0", alpha=0.85)
        top.set_title(report.labels[p])
        top.set_xticks([])
        bottom.fill_between(band["z"], band["lower"] - band["z"], band["upper"] - band["z"], color="0.85")
        bottom.plot(band["z"], values[:, p] - band["z"], color="#4c72b0")
        bottom.axhline(0, color="0.5", linewidth=0.8)
        bottom.set_xlabel("fractional rank")
    axes[0][0].set_ylabel("fits per rank bin")
    axes[1][0].set_ylabel("ECDF - uniform")
    shown = f"; the first {k} of {len(report.labels)} scalars" if len(report.labels) > k else ""
    figure.suptitle(f"SBC over {len(ranks)} trusted fits\n(ranks among {draws} draws{shown})")
    figure.tight_layout()
    write_atomically(path, lambda stream: figure.savefig(stream, format="png", dpi=90))
