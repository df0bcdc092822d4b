"""Trust checks at the end of a fit: a fit that fails one is not a posterior.

    verdict = check_fit(trainer)        # Verdict(ok, checks=[Check(name, ok, value, message)])
    verdict.failures()                  # the messages of the failed checks

Each check is named for what a passed check verified, and fails when:

* **p and q overlap** (empirical ratio): over the last quarter of the steps the
  classifier tells the model's simulations from q's rows with accuracy ≥ 0.9:
  p and q barely overlap, so the ratio's gradient is not the likelihood's.
* **q settled**: q's mean (unconstrained) moved by more than DRIFT_SDS of q's own
  sd between the two halves of the final quarter, well beyond its step-to-step
  noise (4 standard errors): training had not converged, and the reported q, the
  average over that quarter, lags q's last position by about that shift, which is
  itself short of where q was heading (its learning rate had decayed); DRIFT_SDS is
  the mean error the accuracy targets allow; or q's mean jumped between log
  points by more than JITTER_SDS of q's own sd: the steps are noisier than the
  posterior is wide, so the reported sd means nothing.
* **q not collapsed**: q's sd in some coordinate is below 1/1000 of the prior's spread
  shrunk by √N (no plausible N rows pin a value that tightly), or q sits at the edge
  of a bounded prior's support (10 prior sds out).
* **q no wider than the prior**: q's spread (interquartile, unconstrained) in some
  coordinate is over WIDER_FACTOR times the prior's. A posterior is on average no
  wider than its prior (the law of total variance); a q far wider was pushed outward
  by a ratio that grows without bound where it was never trained (a fit's q(df) ran
  to 1e23 so, every other check passed).
* **simulations finite**: more than half of the ratio's simulations were NaN or inf
  (an extern's rows that raised count among them: externs.py).
* **data in range**: over a tenth of the data rows lie more than FAR_SDS robust sds
  from what the fitted model simulates for them, or beyond all of its simulations
  by BEYOND_SDS (in some observed feature), and further out than REPLICATED_PASS of
  rows the fitted model simulates itself (measured the same way): the
  model cannot produce the data, and a ratio that never saw such data says nothing
  about them (its inputs are clipped), so q stays near the prior and looks fine.
* **q matches the ratio** (where the ratio's posterior π of the globals is known
  up to a constant: the plan resamples q's draws to it on one row, and weighs
  `plan.weigh_draws` of them on a plate; importance.py): the Pareto k̂ of the
  weights π / q is above PSIS's bound. q was fitted to π, so a heavy tail of
  weights means q missed part of it (its tails too light somewhere, or a mode left
  out): a variational fit with k̂ > 0.7 is not a reliable posterior (Yao et al.
  2018, "Yes, but did it work?"), and neither q's draws nor their resampling can be
  trusted. On a plate π also carries the ratio's error summed over N rows, so a
  failure there says q and π disagree, one of them or both wrong. There k̂ is the
  median over WEIGHINGS independent weighings (one k̂ decides a fit near the bound
  by the weighing's random stream), and where the weights are trusted their
  moments must agree too: π's mean, per coordinate, within DRIFT_SDS of q's sd of
  q's mean, and its sd within SD_TOLERANCE of q's (the accuracy targets' widths),
  since a q 0.6 times as wide as π can leave k̂ just below its bound. With q's score
  centred (objective.py) π is the posterior q follows: the ratio's, less N times
  the integral of its mean score on its own simulations (identity.py's plane).
* **ratio is a likelihood** (contrastive): Fisher's information identity fails on
  the ratio at q's draws: the posterior's width is off along the direction named
  (identity.py).
* **ratio's score unbiased** (contrastive, not with q's score centred): the
  ratio's mean score on its own simulations, summed over the N data rows, moves q's
  mean by more than DRIFT_SDS of q's sd (beyond IDENTITY_ERRORS standard errors)
  in some global coordinate: a likelihood's score has mean zero there, so q is off
  by about that move (identity.py, `score_bias`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .covering import ratio_posterior
from .identity import information_identity, score_bias
from .importance import khat_threshold, weigh
from .proposals import iqr_sd
from .result import u_labels

SEPARATION_ACCURACY = 0.9
DRIFT_SDS = 0.3
DRIFT_T = 4.0
JITTER_SDS = 2.0
COLLAPSE_FACTOR = 1e-3
EDGE_SDS = 10.0
WIDER_FACTOR = 5.0
MAX_DROPPED = 0.5
FAR_SDS = 10.0
# or beyond every one of the PREDICTIVE_DRAWS simulations by BEYOND_SDS spreads: past
# the largest of 64 draws of a normal (2.4 sds) by 2 more, p ≈ 1e-5 for a right model
BEYOND_SDS = 2.0
MAX_FAR_ROWS = 0.1
# A data row is far only beyond what 99 % of the model's own simulated rows reach (a
# heavy-tailed model's rows routinely pass 10 sds in one of many features).
REPLICATED_PASS = 0.99
PREDICTIVE_DRAWS = 64
PREDICTIVE_ROWS = 256
# q's moments at MOMENT_POINTS steps of the final quarter (for the drift check).
MOMENT_DRAWS = 512
MOMENT_POINTS = 16
# |log λ| beyond which the identity fails: an sd off by a factor √λ (or 1/√λ) more
# than 15 %, the accuracy targets' width (2 log 1.15)
SD_TOLERANCE = math.log(1.15)
IDENTITY_TOLERANCE = 2 * SD_TOLERANCE
IDENTITY_ERRORS = 2.0
# Independent weighings of q's draws whose median k̂ the plate's "q matches the
# ratio" judges: one k̂ rests on its ~3√S largest weights, a standard error near
# (1 + k)/√(3√S) (0.12 at S = 4,000 by the bound); the median of five has half that.
WEIGHINGS = 5


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    value: float
    message: str
    # advisory lines (advice.py) inform; only the trust checks can fail a fit
    advisory: bool = False
    # what lies behind the value, for fit.json (e.g. the ratio's reliability curve)
    detail: dict | None = None


@dataclass(frozen=True)
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if not c.advisory)

    def failures(self) -> list[str]:
        return [c.message for c in self.checks if not c.ok and not c.advisory]

    def passed(self) -> list[str]:
        """The names of the trust checks that passed."""
        return [c.name for c in self.checks if c.ok and not c.advisory]

    def advice(self) -> list[Check]:
        return [c for c in self.checks if c.advisory]

    def lines(self) -> list[str]:
        """The verdict as `fit` prints it: the trust checks passed, then each advisory
        line as `OK` or `LOOK` (what to look at)."""
        lines = ["checks passed: " + ", ".join(self.passed())] if self.passed() else []
        lines += [f"  {'OK' if c.ok else 'LOOK':<4}  {c.name}: {c.message}" for c in self.advice()]
        return lines

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


class MomentTrace:
    """q's unconstrained mean and sd at MOMENT_POINTS steps of the final quarter,
    whatever the run's length or log interval (a short fit is checked as closely as
    a long one), drawn from a forked random stream: recording never changes the fit.
    A final quarter of fewer steps than points (a smoke run of a few dozen steps) has
    too few to test: nothing is recorded and the drift check does not apply."""

    def __init__(self, start: int, steps: int):
        self.start = start
        self.every = (steps - start) // MOMENT_POINTS
        self.rows: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def record(self, step: int, guide) -> None:
        if not self.every or step < self.start or (step - self.start) % self.every or not guide.names:
            return
        device = guide.center.device
        with forked_rng(device):
            u = guide.rsample(MOMENT_DRAWS)[2]
        self.rows.append((step, u.mean(0), u.std(0)))

    def state_dict(self) -> dict:
        return {"rows": [[step, mean, sd] for step, mean, sd in self.rows]}

    def load_state_dict(self, state: dict) -> None:
        """The rows traced before a checkpoint that lie in this run's final quarter (a
        resumed run to more steps has a later one)."""
        self.rows = [(int(step), mean, sd) for step, mean, sd in state["rows"] if int(step) >= self.start]


def forked_rng(device: torch.device):
    """A random stream forked from the fit's (the CPU's, and `device`'s when CUDA):
    what is drawn inside it never changes the fit or a resumed one."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def check_fit(trainer, advice=()) -> Verdict:
    """Every check that applies to this fit, then the advisory lines: the one read
    from the identity's evidence, and `advice`."""
    checks = [check(trainer) for check in CHECKS]
    identity = next((c for c in checks if c is not None and c.name == "ratio is a likelihood"), None)
    checks.append(row_scatter_advice(identity, trainer.view.n_rows))
    checks += [check(trainer) for check in advice]
    return Verdict([c for c in checks if c is not None])


def row_scatter_advice(identity: Check | None, rows: int) -> Check | None:
    """Advice from the identity's evidence (identity.py, `row_scatter`): how far q's
    mean may sit from the posterior's by an error of the ratio that varies from row
    to row, one draw either way, which a single fit cannot see.
    Advice, not a check: its sd says how far such a fit may be off, not how far this
    one is; nor can it tell that error from a ratio too sharp by a factor (λ = c
    there too), which "ratio is a likelihood" judges."""
    detail = identity.detail if identity is not None else None
    if not detail or "row_scatter_in_q_sd" not in detail:
        return None
    scatter, errors = detail["row_scatter_in_q_sd"], detail["row_scatter_errors"]
    label = max(scatter, key=lambda name: scatter[name] - IDENTITY_ERRORS * errors[name])
    value, error = scatter[label], errors[label]
    if value - IDENTITY_ERRORS * error <= DRIFT_SDS:
        return Check("ratio's row errors", True, value,
                     f"an error of the ratio that varies from row to row moves q by about ± {value:.2f} of "
                     f"its sd along `{label}`, the most, summed over {rows:,} rows", advisory=True)
    return Check("ratio's row errors", False, value,
                 f"q's position along `{label}` is uncertain by about ± {value:.2f} ± {error:.2f} of its sd "
                 "beyond its width: on rows simulated at q's draws the ratio's score varies more than its "
                 f"curvature allows a likelihood's, which an error of the ratio that differs from row to row "
                 f"does, adding up over the {rows:,} rows to a move of about that sd, either way, that this fit "
                 "cannot see. A fit with another `--seed` shows whether this one moved: two fits further "
                 "apart than that sd are off by about it", advisory=True)


def ratio_separation(trainer) -> Check | None:
    if trainer.plan.ratio != "empirical":
        return None
    rows = [r for r in trainer.state.trace if r.step > 0.75 * trainer.settings.steps]
    accs = [r.ratio_acc for r in rows if math.isfinite(r.ratio_acc)]
    if not accs:
        return None
    acc = sum(accs) / len(accs)
    ok = acc < SEPARATION_ACCURACY
    return Check("p and q overlap", ok, acc,
                 f"the ratio tells the model's simulations from q's rows with accuracy {acc:.2f} "
                 "over the last quarter: p and q do not overlap, so q never learnt from the data"
                 if not ok else f"ratio accuracy {acc:.2f} over the last quarter")


def smoke_run(trainer) -> bool:
    """Too few steps for q's moments to be traced over the final quarter (a smoke
    run of a few dozen steps): the checks of convergence do not apply. Judged by the
    steps asked for, not by the moments traced, which a resumed fit may lack."""
    return trainer.moments.every == 0


def q_drift(trainer) -> Check | None:
    if smoke_run(trainer) or not trainer.global_guide.names:
        return None
    rows = trainer.moments.rows
    if len(rows) < 4:       # resumed from a checkpoint that does not hold the trace
        return Check("q settled", False, float("nan"),
                     "q's moments over the final quarter were not traced (the fit was resumed from a "
                     "checkpoint written by an earlier version of himdsl), so whether q settled is "
                     "unknown: resume with more steps (`--resume --steps N`), or fit again")
    half = len(rows) // 2
    means = torch.stack([m for _, m, _ in rows])
    first, second = means[:half], means[half:]
    sd = torch.stack([s for _, _, s in rows]).mean(0).clamp_min(1e-12)
    shift = (second.mean(0) - first.mean(0)).abs()
    noise = (first.var(0) / len(first) + second.var(0) / len(second)).sqrt().clamp_min(1e-12)
    drift = float((shift / sd).max())
    jitter = float((means.std(0) / sd).max())
    if jitter > JITTER_SDS:
        return Check("q settled", False, jitter,
                     f"q's mean jumped by {jitter:.1f} of its own sd between log points in the last "
                     "quarter: the optimisation's noise is wider than the posterior it reports")
    ok = not bool(((shift / sd > DRIFT_SDS) & (shift / noise > DRIFT_T)).any())
    return Check("q settled", ok, drift,
                 f"q's mean was still moving at the end ({drift:.2f} of its sd over the last eighth "
                 "of the steps): run more steps" if not ok
                 else f"q's mean moved {drift:.2f} of its sd over the last eighth")


def q_collapse(trainer) -> Check | None:
    if not trainer.view.g_shapes or trainer.proposal is None:
        return None
    with torch.no_grad():
        u = trainer.result().global_guide.rsample(MOMENT_DRAWS)[2]
    prior_sd = trainer.proposal.u_prior_sd
    floor = COLLAPSE_FACTOR * prior_sd / math.sqrt(trainer.view.n_rows)
    sd = u.std(0)
    point = [f for f in trainer.global_guide.kinds if f == "point"]
    ratio = float((sd / prior_sd).min())
    if not point and bool((sd < floor).any()):
        return Check("q not collapsed", False, ratio,
                     f"q's sd fell to {ratio:.2g} of the prior's spread, below what {trainer.view.n_rows} "
                     "rows can plausibly pin: the ratio's errors were summed over the rows into a "
                     "false certainty")
    edge = _at_edge(trainer, u)
    if edge:
        return Check("q not collapsed", False, ratio, f"q sits at the edge of the prior's support for "
                     f"`{edge}`: the fit ran into a bound")
    return Check("q not collapsed", True, ratio, f"q's smallest sd is {ratio:.2g} of the prior's spread")


def q_within_prior(trainer) -> Check | None:
    if not trainer.view.g_shapes or trainer.proposal is None:
        return None
    with torch.no_grad(), forked_rng(trainer.view.device):     # the fit's draws stay as they were
        u = trainer.result().global_guide.rsample(MOMENT_DRAWS)[2]
    factor = iqr_sd(u) / trainer.proposal.u_prior_spread.clamp_min(1e-12)
    worst = int(factor.argmax())
    value = float(factor[worst])
    if value > WIDER_FACTOR:
        name = u_labels(trainer.global_guide)[worst]
        return Check("q no wider than the prior", False, value,
                     f"q's spread in `{name}` is {value:.1f}x the prior's (unconstrained): a posterior is "
                     "no wider than its prior on average, so the ratio pushed q where it was never "
                     "trained")
    return Check("q no wider than the prior", True, value,
                 f"q's widest spread is {value:.2g} of the prior's")


def _at_edge(trainer, u: torch.Tensor) -> str | None:
    """The first bounded global whose q draws lie mostly beyond EDGE_SDS prior sds
    from the prior's centre, in unconstrained space."""
    return next((name for name, share in edge_shares(trainer, u).items() if share > 0.5), None)


def edge_shares(trainer, u: torch.Tensor) -> dict[str, float]:
    """{bounded global: share of the draws u beyond EDGE_SDS prior sds (unconstrained)
    from the prior's centre in some coordinate}."""
    guide, proposal = trainer.global_guide, trainer.proposal
    centre = guide.flat_u(trainer.view.prior_globals(1024)).median(0).values
    far = (u - centre).abs() > EDGE_SDS * proposal.u_prior_sd
    shares, start = {}, 0
    for block in guide.blocks:
        for name in block:
            width = math.prod(guide.u_shapes[name])
            if not _unbounded(guide.bijectors[name].codomain):
                shares[name] = float(far[:, start:start + width].any(-1).float().mean())
            start += width
    return shares


def _unbounded(constraint) -> bool:
    while hasattr(constraint, "base_constraint"):
        constraint = constraint.base_constraint
    return constraint is torch.distributions.constraints.real


def simulation_failures(trainer) -> Check | None:
    ratio = trainer.ratio
    if ratio is None or not hasattr(ratio, "dropped") or float(ratio.simulated) == 0:
        return None
    share = float(ratio.dropped) / float(ratio.simulated)
    ok = share <= MAX_DROPPED
    raised = getattr(trainer.model, "extern_failures", None)
    raised = (f" (rows an extern raised on: {raised.count:,}; the first: {raised.first})"
              if raised is not None and raised.count else "")
    return Check("simulations finite", ok, share,
                 f"{share:.0%} of the simulations were NaN or inf{raised}: the model's simulation is "
                 "undefined over much of q (e.g. log of a negative number)" if not ok
                 else f"{share:.1%} of the simulations were NaN or inf and skipped{raised}")


@torch.no_grad()
def data_in_range(trainer) -> Check | None:
    """The share of data rows far from the fitted model's simulations (module docstring)."""
    view = trainer.view
    if not (view.g_shapes or view.has_plate):
        return None
    rows = view.random_rows(PREDICTIVE_ROWS)
    values = predictive_features(trainer, rows, 2 * PREDICTIVE_DRAWS)
    reference, replicated = values[:PREDICTIVE_DRAWS], values[PREDICTIVE_DRAWS:]
    data = view.x_features(view.with_data(rows, 1))[0, :, :values.shape[-1]]
    far = _outlyingness(reference, torch.cat([replicated, data[None]]))    # one pass over the reference
    limit = max(1.0, float(torch.nanquantile(far[:-1].flatten(), REPLICATED_PASS)))
    share = float((far[-1] > limit).float().mean())
    ok = share <= MAX_FAR_ROWS
    return Check("data in range", ok, share,
                 f"{share:.0%} of the data rows lie more than {FAR_SDS:g} sds from, or beyond, what "
                 "the fitted model simulates for them, further than its own simulated rows do: the model "
                 "cannot produce these data (check the data's units and the priors' ranges)" if not ok
                 else f"{share:.1%} of the data rows lie far from the fitted model's simulations")


def predictive_features(trainer, rows: dict, draws: int) -> torch.Tensor:
    """The observed features of `draws` simulations of each of `rows` from the fitted
    model, [draws, R, F], NaN where a simulation failed."""
    view = trainer.view
    width = sum(b.width for b in view.x_blocks)
    if view.g_shapes:
        sim = view.simulate(trainer.result().global_guide.rsample(draws)[0], rows, draws)
    else:  # nothing global to draw: each row simulated `draws` times side by side
        sim = view.simulate({}, view.repeat_rows(rows, draws), 1)
    simulated = torch.cat([b.encode(sim[b.name], 2) for b in view.x_blocks], -1)[..., :width]
    if not view.g_shapes:
        simulated = simulated.reshape(-1, draws, width).transpose(0, 1)
    return torch.where(torch.isfinite(simulated), simulated, torch.nan)


def _outlyingness(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """How far each row of `rows` [..., R, F] lies from the simulations `values`
    [draws, R, F] of its row, in units of the thresholds: the largest over its
    features of (robust sds from their median) / FAR_SDS and (spreads beyond their
    range) / BEYOND_SDS; above 1 is far (−inf for a row with no finite feature)."""
    centre = torch.nan_to_num(torch.nanmedian(values, 0).values)
    spread = (torch.nanquantile(values, 0.75, 0) - torch.nanquantile(values, 0.25, 0)) / 1.349
    sd = torch.sqrt(torch.nanmean((values - torch.nanmean(values, 0)) ** 2, 0))
    spread = torch.maximum(torch.nan_to_num(spread), torch.nan_to_num(sd)).clamp_min(1e-6)
    far = torch.maximum((rows - centre).abs() / spread / FAR_SDS,
                        _beyond_range(values, rows) / spread / BEYOND_SDS)
    return far.nan_to_num(nan=-torch.inf).amax(-1)


def _beyond_range(values: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """How far each data value lies outside the range of its finite simulations
    [draws, rows, F] (0 inside it, or where none is finite)."""
    has = torch.isfinite(values).any(0)
    high = torch.where(torch.isnan(values), -torch.inf, values).amax(0)
    low = torch.where(torch.isnan(values), torch.inf, values).amin(0)
    beyond = torch.maximum(data - high, low - data).clamp_min(0)
    return torch.where(has, beyond, torch.zeros_like(beyond))


def q_matches_ratio(trainer) -> Check | None:
    """The Pareto k̂ of q's importance weights to the ratio's posterior (module docstring)."""
    report = trainer.resampling
    if report is None:
        return _q_matches_ratio_on_plate(trainer)
    if report.used:
        return Check("q matches the ratio", True, report.khat,
                     f"q's draws importance-resampled to the ratio's posterior (Pareto k̂ {report.khat:.2f} "
                     f"<= {report.threshold:.2f}; effective sample size {report.ess:,.0f} of "
                     f"{report.pool:,})")
    return Check("q matches the ratio", False, report.khat,
                 f"q misses part of the posterior the ratio defines: the importance weights of q's draws "
                 f"have Pareto k̂ {report.khat:.2f} > {report.threshold:.2f} (its tails are too light "
                 "somewhere, or it left out a mode), so neither q nor its resampling is a posterior; "
                 "run more steps, and compare with `himdsl calibrate`")


def _q_matches_ratio_on_plate(trainer) -> Check | None:
    """q against Σ_n r(x_n, β) and the prior, by WEIGHINGS weighings of
    `plan.weigh_draws` of its draws: their median k̂, then the moments they give."""
    draws = trainer.plan.weigh_draws
    if not draws:
        return None
    guide = trainer.result().global_guide
    _, log_posterior_u = ratio_posterior(trainer.model, guide, trainer.ratio)
    target = centred_target(trainer, guide, log_posterior_u)
    with forked_rng(trainer.view.device):          # weigh() runs without gradients
        comparison = PosteriorComparison.weighed(guide, target, draws)
    rows, threshold = trainer.view.n_rows, khat_threshold(draws)
    khat, labels = comparison.khat, u_labels(guide)
    flow = (f"; with `batch = {rows}` every step sees every row and q can be a flow, whose fit "
            "the checks judge again" if trainer.settings.batch < rows else "")
    if khat > threshold:
        return Check("q matches the ratio", False, khat,
                     f"q and the posterior the ratio defines over {rows:,} rows disagree: the importance "
                     f"weights of q's draws have Pareto k̂ {khat:.2f} > {threshold:.2f} "
                     f"({comparison.describe()}). Either q leaves out part of it (a skewed global's "
                     "tail, which a normal q cannot hold), or the ratio's error, summed over the rows, "
                     f"moved it; so neither can be trusted as the posterior. Run more steps{flow}",
                     detail=comparison.to_dict(labels))
    worst = comparison.worst()
    if worst is not None:
        return Check("q matches the ratio", False, khat,
                     f"q and the posterior the ratio defines over {rows:,} rows disagree along "
                     f"`{labels[worst]}`: weighed to it, q's draws give {comparison.describe_moments(worst)} "
                     f"(Pareto k̂ {khat:.2f}, {comparison.describe()}). q was fitted to that posterior, "
                     "so q (its family or its fitting) or the ratio's error, summed over the rows, is off "
                     f"by more than the width an accurate fit allows. Run more steps{flow}",
                     detail=comparison.to_dict(labels))
    return Check("q matches the ratio", True, khat,
                 f"q agrees with the posterior the ratio defines over {rows:,} rows (Pareto k̂ {khat:.2f} "
                 f"<= {threshold:.2f}, {comparison.describe()}; its means within {DRIFT_SDS} of q's sds, "
                 f"its sds within {math.exp(SD_TOLERANCE) - 1:.0%} of q's)", detail=comparison.to_dict(labels))


@dataclass
class PosteriorComparison:
    """q against a posterior known up to a constant, from independent weighings of
    q's draws: each weighing's k̂, and, per unconstrained coordinate, the target's
    mean less q's in q's sds and the log of its sd over q's, averaged over the
    weighings whose weights are finite."""

    draws: int
    khats: list[float]
    shifts: np.ndarray | None
    log_sd_ratios: np.ndarray | None

    @classmethod
    def weighed(cls, guide, log_target, draws: int) -> "PosteriorComparison":
        khats, shifts, log_ratios = [], [], []
        for _ in range(WEIGHINGS):
            u, weights, report = weigh(guide, log_target, draws)
            khats.append(report.khat)
            if weights is not None:
                shift, log_ratio = _weighted_moments(u.double().cpu().numpy(), weights)
                shifts.append(shift)
                log_ratios.append(log_ratio)
        return cls(draws, sorted(khats), _column_mean(shifts), _column_mean(log_ratios))

    @property
    def khat(self) -> float:
        return self.khats[len(self.khats) // 2]

    def worst(self) -> int | None:
        """The coordinate whose moments differ most beyond their bounds (None: none)."""
        if self.shifts is None:
            return None
        excess = np.maximum(np.abs(self.shifts) / DRIFT_SDS, np.abs(self.log_sd_ratios) / SD_TOLERANCE)
        return int(excess.argmax()) if excess.max() > 1 else None

    def describe(self) -> str:
        return (f"the median of {len(self.khats)} weighings of {self.draws:,} draws, "
                f"{self.khats[0]:.2f} to {self.khats[-1]:.2f}")

    def describe_moments(self, i: int) -> str:
        return (f"a posterior {math.exp(self.log_sd_ratios[i]):.2f} times as wide as q, its mean "
                f"{self.shifts[i]:+.2f} of q's sd from q's")

    def to_dict(self, labels: list[str]) -> dict:
        out = {"draws": self.draws, "khats": [round(k, 3) if math.isfinite(k) else None for k in self.khats]}
        if self.shifts is not None:
            out["mean_shift_in_q_sd"] = dict(zip(labels, np.round(self.shifts, 3).tolist()))
            out["sd_ratio"] = dict(zip(labels, np.round(np.exp(self.log_sd_ratios), 3).tolist()))
        return out


def _column_mean(rows: list[np.ndarray]) -> np.ndarray | None:
    """The mean of equal-length rows (None for no rows: every weighing's weights failed)."""
    return np.mean(rows, axis=0) if rows else None


def _weighted_moments(u: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weighted draws' mean less the draws' own, in the draws' sds, and the log
    of the weighted sd over theirs, per column of u [S, D]."""
    mean, sd = u.mean(0), u.std(0)
    weighted_mean = weights @ u
    weighted_sd = np.sqrt(weights @ np.square(u - weighted_mean))
    return (weighted_mean - mean) / sd, np.log(weighted_sd / sd)


def centred_target(trainer, guide, log_posterior_u):
    """The posterior a centred q follows (objective.py, "Centred score"): the ratio's,
    less N times the integral of its mean score on its own simulations, fitted as a
    plane over q's draws (identity.py); `log_posterior_u` itself without centring."""
    if not trainer.plan.score_centring:
        return log_posterior_u
    with forked_rng(trainer.view.device):
        report = information_identity(trainer)
    if report is None:
        return log_posterior_u
    integral = report.centring(trainer.view.n_rows, sum(math.prod(s) for s in guide.u_shapes.values()))
    return lambda u: log_posterior_u(u) - integral(u)


def ratio_is_a_likelihood(trainer) -> Check | None:
    """Fisher's information identity on the ratio (module docstring); like q settled,
    not for a smoke run, whose ratio has not trained."""
    if smoke_run(trainer):
        return None
    with forked_rng(trainer.view.device):
        report = information_identity(trainer)
    if report is None:
        return None
    # how far each eigenvalue's interval of ± IDENTITY_ERRORS standard errors lies
    # outside [e^-T, e^T], in log units (≤ 0 inside)
    low = np.log(np.clip(report.values + IDENTITY_ERRORS * report.errors, 1e-6, None))
    high = np.log(np.clip(report.values - IDENTITY_ERRORS * report.errors, 1e-6, None))
    excess = np.maximum(-low, high) - IDENTITY_TOLERANCE
    worst = int(np.argmax(excess))
    value, error = float(report.values[worst]), float(report.errors[worst])
    detail = {"eigenvalues": report.values.tolist(), "errors": report.errors.tolist(),
              "direction": report.direction(worst), "rows": report.rows}
    if report.scatter is not None:
        detail["row_scatter_in_q_sd"] = dict(zip(report.labels, np.round(report.scatter, 3).tolist()))
        detail["row_scatter_errors"] = dict(zip(report.labels, np.round(report.scatter_errors, 3).tolist()))
    shown = f"{value:.2f} ± {error:.1g}"
    if excess[worst] <= 0:
        return Check("ratio is a likelihood", True, value,
                     f"Fisher's information identity holds: eigenvalues {report.values.min():.2f} to "
                     f"{report.values.max():.2f} (1 for a likelihood)", detail=detail)
    off = (f"off, by a factor of about {math.exp(abs(math.log(value)) / 2):.1f} in its sd, most likely "
           + ("too wide (a ratio that curves less than its score varies" if value > 1 else
              "too narrow (a ratio that curves more than its score varies")
           + ": the usual case in docs/accuracy.md), or moved by that order"
           if value > 0 else "not defined by it: the ratio curves upward there, as no log likelihood "
           "does on average")
    return Check("ratio is a likelihood", False, value,
                 f"the ratio is not a likelihood along {report.describe(worst)}: on rows simulated at "
                 f"q's draws its score's variance is {shown} times its curvature there, where a "
                 "likelihood's is 1 (Fisher's information identity), so the posterior along that "
                 f"direction is {off}. A longer fit (`--resume --steps`, twice as many) may resolve it, "
                 "and is judged again; where it does not, the data tell that direction apart too "
                 "weakly for the ratio", detail=detail)


def ratio_score_unbiased(trainer) -> Check | None:
    """The ratio's mean score on its own simulations, summed over the data's rows,
    moves q's mean by less than DRIFT_SDS of q's sd beyond IDENTITY_ERRORS standard
    errors (identity.py, `score_bias`); not for a smoke run, nor where q's score is
    centred, which takes that mean out."""
    if smoke_run(trainer) or trainer.plan.score_centring:
        return None
    with forked_rng(trainer.view.device):
        bias = score_bias(trainer)
    if bias is None:
        return None
    excess = np.abs(bias.shift) - IDENTITY_ERRORS * bias.errors
    worst = int(np.argmax(excess))
    shift, error, label = float(bias.shift[worst]), float(bias.errors[worst]), bias.labels[worst]
    rows = trainer.view.n_rows
    if excess[worst] <= DRIFT_SDS:
        return Check("ratio's score unbiased", True, shift,
                     f"on rows simulated at q's draws the ratio's score has mean zero within {DRIFT_SDS} of "
                     f"q's sd, as a likelihood's does: summed over {rows:,} rows, its mean moves q by "
                     f"{shift:+.2f} ± {error:.2f} of q's sd along `{label}`, the furthest", detail=bias.to_dict())
    return Check("ratio's score unbiased", False, shift,
                 f"the ratio's score is biased along `{label}`: on rows simulated at q's draws its mean, "
                 f"where a likelihood's is zero, summed over {rows:,} rows moves the posterior by "
                 f"{shift:+.2f} ± {error:.2f} of q's sd, so q is most likely off by about that much there "
                 "(the ratio's error along a direction each row tells little about, summed over the rows). "
                 "A longer fit (`--resume --steps`, twice as many) may resolve it, and is judged again",
                 detail=bias.to_dict())


# Every check, in the order the verdict lists them; each returns None where it does not apply.
CHECKS = (ratio_separation, q_drift, q_collapse, q_within_prior, simulation_failures, data_in_range, q_matches_ratio,
          ratio_is_a_likelihood, ratio_score_unbiased)
