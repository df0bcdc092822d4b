"""The verdict's advisory lines: evidence for every fit, good or bad, each saying OK
or what to do. Unlike the trust checks (checks.py) they do not fail a fit: each is
a symptom worth a look rather than proof that the posterior is wrong.

* **long enough to judge** (a smoke run only): a fit whose final quarter is too
  short to trace q (under 64 steps) is not judged by "q settled" or "ratio is a
  likelihood"; its draws test the model and the files, and this line says so
  (`fit` repeats it as a warning), where a reader of the checks passed alone would
  take them for a posterior.

* **ratio calibration**: on fresh simulations at draws from q, which the ratio
  never trained on, a classifier at its optimum is calibrated: among the answers
  it gives with confidence c, a fraction c is right. The expected calibration
  error (ECE: the gap between confidence and accuracy, averaged over
  CALIBRATION_BINS bins weighted by their counts) measures how far the ratio is
  from that optimum, so how far its log ratio is from the likelihood's.
* **ELBO settled**: q's ELBO, averaged over the second half of the final quarter,
  against the first half's, both under the final ratio with common random numbers
  (the logged surrogate drifts with the ratio's own free part, so it cannot say).
* **q at the support's edge**: the share of q's draws of a bounded global beyond
  EDGE_SDS prior sds (unconstrained) from the prior's centre: a posterior piled
  against a bound is often a prior that excludes the data's explanation.
* **locals' means**: each row's ELBO, differentiated in the Gaussian local
  guide's mean μ (at draws of q(β) and of the row's locals), points to its optimum:
  near a Gaussian posterior the gradient is Σ⁻¹ (μ* − μ), so Σ times it (q's
  covariance) is the mean's error, one Newton step, which each local's marginal sd
  puts in its units. Its root mean square over rows and locals (less the draws'
  noise) above LOCAL_STEP_SDS, the locals' accuracy target, says the guide had not
  converged: a nearly collinear intercept and slope per group converge that slowly
  along their ridge.
* **q against the exact posterior** (method vi: every density is known): the Pareto
  k̂ of the exact importance weights p(x, z, β) / q(z, β) (exact_weights.py) at up to
  EXACT_DRAWS draws of q. Above min(1 − 1 / log10 S, 0.7) q misses part of the
  posterior, typically a skewed global's tail that a normal q leaves out; `himdsl
  diagnose` shows how far reweighting moves each mean. k̂ from 1,000 draws scatters
  by about ±0.1, and with many local latents it also grows with their number, so
  this advises and does not fail; a q somewhat too narrow can read below the bound.
* **posterior predictive**: the data's mean and sd of every observed feature
  against the same summaries of data sets simulated at q's draws (a posterior
  predictive p-value); outside [PPC_TAIL, 1 - PPC_TAIL] the fitted model does
  not reproduce that summary.
"""
from __future__ import annotations

import math

import torch

from .checks import EDGE_SDS, MOMENT_POINTS, Check, edge_shares, forked_rng, predictive_features, smoke_run
from .exact_weights import log_weights, unavailable
from .importance import khat_threshold, psis

CALIBRATION_BINS = 10
CALIBRATION_BATCHES = 4
MAX_ECE = 0.05
# "ELBO settled": a change between the final quarter's halves is flagged beyond
# ELBO_GAIN_T standard errors and ELBO_GAIN_NATS, what shifting one coordinate of a
# Gaussian q by its own sd costs (KL = 1/2): a smaller change is no reason to run on
ELBO_GAIN_NATS = 0.5
ELBO_GAIN_T = 3.0
ELBO_DRAWS = 256
ELBO_ROWS = 512
MAX_EDGE_SHARE = 0.01
# the locals' means' error, in their sds, that the check accepts (the suite's target)
LOCAL_STEP_SDS = 0.1
LOCAL_DRAWS = 256
LOCAL_CHUNK = 32
LOCAL_ROWS = 256
# "q against the exact posterior": S draws of q, fewer where the rows are many (at most
# EXACT_WORK row evaluations in all), and not run with fewer than EXACT_MIN_DRAWS
EXACT_DRAWS = 1000
EXACT_MIN_DRAWS = 200
EXACT_WORK = 2 ** 24
PPC_DRAWS = 100
PPC_ROWS = 256
# Two-sided tail for the whole family of summaries (Bonferroni over their number):
# with one fixed tail per summary, a model with many features would flag good fits.
PPC_TAIL = 0.005


def expected_calibration_error(margins: torch.Tensor, bins: int = CALIBRATION_BINS
                               ) -> tuple[float, float, list[tuple[float, float, int]]]:
    """(ECE, accuracy, reliability curve [(confidence, accuracy, count)]) of a
    classifier from the logits of the right answers (`margins`)."""
    confidence = torch.sigmoid(margins.abs())            # of the answer it gives
    correct = (margins > 0).float()
    edges = torch.linspace(0.5, 1.0, bins + 1, device=margins.device)
    which = torch.bucketize(confidence, edges[1:-1])
    curve, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        if count:
            conf, acc = float(confidence[mask].mean()), float(correct[mask].mean())
            curve.append((conf, acc, count))
            ece += count * abs(conf - acc)
    return ece / max(len(margins), 1), float(correct.mean()), curve


SMOKE_TEST = "long enough to judge"


def smoke_test(trainer) -> Check | None:
    if not smoke_run(trainer):
        return None
    steps = trainer.settings.steps
    unjudged = "q settled" + (", ratio is a likelihood and ratio's score unbiased need"
                              if trainer.plan.ratio == "contrastive" else " needs")
    return Check(SMOKE_TEST, False, float(steps),
                 f"{steps} steps are too few to judge this fit ({unjudged} a final quarter of "
                 f"{MOMENT_POINTS} steps or more): its draws are a "
                 "smoke test of the model and the files, not a posterior", advisory=True)


def ratio_calibration(trainer) -> Check | None:
    ratio = trainer.ratio
    if ratio is None or not hasattr(ratio, "held_out_margins"):
        return None
    margins = torch.cat([ratio.held_out_margins(_q_draws(trainer)) for _ in range(CALIBRATION_BATCHES)])
    if len(margins) < 100:
        return None
    ece, accuracy, curve = expected_calibration_error(margins)
    ok = ece <= MAX_ECE
    reliability = {"accuracy": round(accuracy, 4), "simulations": len(margins),
                   "reliability": [{"confidence": round(c, 4), "accuracy": round(a, 4), "count": n}
                                   for c, a, n in curve]}
    return Check("ratio calibration", ok, ece,
                 f"on fresh simulations the ratio is calibrated (ECE {ece:.3f}, accuracy "
                 f"{accuracy:.2f})" if ok else
                 f"the ratio is miscalibrated on fresh simulations (ECE {ece:.3f}, accuracy "
                 f"{accuracy:.2f}): its log ratio is off the likelihood's; train it longer "
                 "(`--resume --steps N`, N above this fit's steps) or give it a wider network "
                 "(`ratio { hidden }`)",
                 advisory=True, detail=reliability)


def _q_draws(trainer) -> torch.Tensor | None:
    if not trainer.view.g_shapes:
        return None
    with torch.no_grad():
        return trainer.result().global_guide.rsample(trainer.plan.ratio_simulations)[2]


def elbo_settled(trainer) -> Check | None:
    """q's ELBO averaged over the second half of the final quarter against the
    first half's, both under the final ratio and with the same random numbers: the
    logged surrogate also moves with the ratio's free h(x) (contrastive), so its
    trend is no measure of q."""
    halves = trainer.average.halves(trainer.guides())
    if halves is None or trainer.q_opt is None:
        return None
    gains = _paired_elbo_gain(trainer, halves)
    # a model without globals gives one paired value: its noise is then unmeasured
    se = float(gains.std()) / math.sqrt(len(gains)) if len(gains) > 1 else 0.0
    gain = float(gains.mean())
    ok = abs(gain) <= max(ELBO_GAIN_NATS, ELBO_GAIN_T * se)
    if ok:
        message = f"q's ELBO changed {gain:+.3g} between the final quarter's halves, within its noise"
    elif gain > 0:
        message = (f"q's ELBO rose {gain:.3g} (± {se:.2g}) between the final quarter's halves: "
                   "q was still improving; run more steps")
    else:
        message = (f"q's ELBO fell {-gain:.3g} (± {se:.2g}) between the final quarter's halves: "
                   "q moved away from its optimum; a lower `lr` or more steps may settle it")
    return Check("ELBO settled", ok, gain, message, advisory=True)


@torch.no_grad()
def _paired_elbo_gain(trainer, halves: tuple[dict, dict]) -> torch.Tensor:
    """Per draw [ELBO_DRAWS], the second half's q's ELBO minus the first half's, on
    the same rows (at most ELBO_ROWS) and draws of the base noise; from a forked random
    stream, so that a resumed fit is not changed by its verdict."""
    view = trainer.view
    with forked_rng(view.device):
        rows = view.random_rows(ELBO_ROWS)
        seed = int(torch.randint(2 ** 31, ()))
        elbos = []
        for guides in halves:
            torch.manual_seed(seed)
            draws = (guides["global"].rsample(ELBO_DRAWS) if view.g_shapes
                     else ({}, 0.0, None))
            objective = trainer.objective.with_guides(guides["global"], guides.get("local"))
            elbos.append(torch.as_tensor(objective.elbo(draws, rows), dtype=torch.float64))
    return (elbos[1] - elbos[0]).reshape(-1)


def support_edge(trainer) -> Check | None:
    if not trainer.view.g_shapes or trainer.proposal is None:
        return None
    with torch.no_grad():
        u = trainer.result().global_guide.rsample(1024)[2]
    shares = edge_shares(trainer, u)
    if not shares:
        return None
    name, share = max(shares.items(), key=lambda item: item[1])
    ok = share <= MAX_EDGE_SHARE
    return Check("q at the support's edge", ok, share,
                 f"{share:.1%} of q's draws of a bounded global lie near its bound" if ok else
                 f"{share:.0%} of q's draws of `{name}` lie more than {EDGE_SDS:g} prior sds towards "
                 "its bound: the data may want values the prior excludes; check the prior's range",
                 advisory=True)


def local_means(trainer) -> Check | None:
    """The Gaussian local guide's distance to each row's ELBO optimum (module
    docstring), for the fit's guides."""
    error = getattr(trainer, "local_error", None)       # measured by the polish already
    if error is None:
        result = trainer.result()
        error = local_mean_error(trainer, result.global_guide, result.local_guide)
    if error is None:
        return None
    ok = error <= LOCAL_STEP_SDS
    polish = getattr(trainer, "polish", None)
    after = (f" after {polish.steps:,} more steps of the local guide alone (from {polish.before:.2f})"
             if polish is not None else "")
    return Check("locals' means", ok, error,
                 f"the locals' means are {error:.2f} of their sds from where each row's ELBO points "
                 f"(one Newton step with q's covariance){after}: the local guide had not converged; "
                 "run more steps" if not ok
                 else f"the local guide converged: its means are within {error:.2f} of their sds of each "
                 f"row's optimum under the ratio{after} (how near that is the exact posterior rests "
                 "on the ratio)",
                 advisory=True)


def local_mean_error(trainer, global_guide, local_guide) -> float | None:
    """The root mean square, over rows and locals, of one Newton step of each row's
    ELBO in the local guide's mean, in the locals' sds, less the draws' noise (None
    without a Gaussian local guide; the empirical ratio's row terms read q's density)."""
    if local_guide is None or not hasattr(local_guide, "mean_as_input") or trainer.plan.ratio == "empirical":
        return None
    view = trainer.view
    objective = trainer.objective.with_guides(global_guide, local_guide)
    with forked_rng(view.device):
        rows = view.random_rows(LOCAL_ROWS)
        steps = torch.cat([_newton_steps(objective, view, rows, LOCAL_CHUNK)
                           for _ in range(LOCAL_DRAWS // LOCAL_CHUNK)]).double()
    square = steps.mean(0).pow(2) - steps.var(0) / steps.shape[0]
    return math.sqrt(max(0.0, float(square.mean())))


def _newton_steps(objective, view, rows: dict, draws: int) -> torch.Tensor:
    """Σ ∇_μ ℓ / √diag Σ per draw of β (and of the locals) and row: [draws, R, Dz]."""
    guide = objective.local_guide
    globals = ({k: v.detach() for k, v in objective.global_guide.rsample(draws)[0].items()}
               if view.g_shapes else {})
    with guide.mean_as_input() as kept:
        terms = objective.row_terms(globals, rows, draws)
    mean, log_sd, mix = kept[0]
    grad, = torch.autograd.grad(terms.sum(), mean)
    step = log_sd.exp() * grad      # Σ = S C Cᵀ S: Σ g / √diag Σ = C Cᵀ S g / √diag C Cᵀ
    if mix is None:
        return step
    step = (mix @ (mix.transpose(-1, -2) @ step.unsqueeze(-1))).squeeze(-1)
    return step / mix.pow(2).sum(-1).sqrt()


@torch.no_grad()
def exact_importance(trainer) -> Check | None:
    """Pareto k̂ of q's importance weights to the exact posterior (module docstring)."""
    if trainer.plan.method != "vi":
        return None
    result = trainer.result()
    draws = min(EXACT_DRAWS, EXACT_WORK // max(trainer.view.n_rows, 1))
    if draws < EXACT_MIN_DRAWS or unavailable(trainer.model, result.global_guide, result.local_guide):
        return None
    with forked_rng(trainer.view.device):
        log_w, _ = log_weights(trainer.model, trainer.view, trainer.plan, result.global_guide,
                               result.local_guide, draws)
    if not bool(torch.isfinite(log_w).all()):
        return None
    _, khat = psis(log_w.double().cpu().numpy())
    threshold = khat_threshold(draws)
    ok = khat <= threshold
    return Check("q against the exact posterior", ok, float(khat),
                 f"importance weights to the exact posterior have Pareto k̂ {khat:.2f} <= {threshold:.2f}"
                 if ok else
                 f"importance weights to the exact posterior have Pareto k̂ {khat:.2f} > {threshold:.2f}: "
                 "q misses part of it (a skewed global's tail, most often), so its sds and intervals "
                 "may be too narrow; `himdsl diagnose FIT_DIR` shows how far reweighting moves "
                 "each mean", advisory=True)


def posterior_predictive(trainer) -> Check | None:
    """Posterior predictive p-values of the data's mean and sd per observed feature."""
    view = trainer.view
    if not (view.g_shapes or view.has_plate):
        return None
    rows = view.random_rows(PPC_ROWS)
    simulated = predictive_features(trainer, rows, PPC_DRAWS)
    data = view.x_features(view.with_data(rows, 1))[..., :simulated.shape[-1]]
    worst, where, tested = _ppc_extreme(simulated, data, _feature_names(view))
    if worst is None:
        return None
    tail = PPC_TAIL / tested
    ok = tail <= worst <= 1 - tail
    return Check("posterior predictive", ok, worst,
                 "the data's means and sds lie within what the fitted model simulates" if ok else
                 f"the data's {where} lies outside what the fitted model simulates (posterior "
                 f"predictive p = {worst:.3f}): the model misses a feature of the data; `himdsl "
                 "diagnose FIT_DIR` compares them", advisory=True)


def _feature_names(view) -> list[str]:
    """`x` or `x[j]` for every feature of the observed arrays, in the features' order."""
    names = []
    for block in view.x_blocks:
        names += [block.name] if block.width == 1 else [f"{block.name}[{j}]" for j in range(block.width)]
    return names


def _ppc_extreme(simulated: torch.Tensor, data: torch.Tensor, names: list[str]
                 ) -> tuple[float | None, str, int]:
    """The p-value farthest from 1/2 over the mean and sd of every feature, where it
    is, and how many were tested. Each p is P(replicated >= observed) under a normal
    fitted to the replicates (a mean or sd of many rows is near normal): the share of
    100 replicates cannot resolve the small tails that many summaries call for."""
    finite = torch.isfinite(simulated).all(-1).all(-1)
    simulated = simulated[finite].double()
    if len(simulated) < 10:
        return None, "", 0
    worst, where, tested = 0.5, "", 0
    stats = {"mean": lambda t: t.mean(-2), "sd": lambda t: t.std(-2) if t.shape[-2] > 1 else None}
    for label, stat in stats.items():
        rep, obs = stat(simulated), stat(data.double())
        if rep is None:
            continue
        p = _upper_tail(rep, obs.reshape(-1))
        tested += len(p)
        for j, value in enumerate(p.tolist()):
            if abs(value - 0.5) > abs(worst - 0.5):
                worst, where = value, f"{label} of {names[j] if j < len(names) else j}"
    return worst, where, tested


def _upper_tail(replicates: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """P(R >= observed) per feature for R normal with the replicates' mean and sd; a
    feature the replicates never vary is 1/2 where the data equal it, else 0 or 1."""
    centre, spread = replicates.mean(0), replicates.std(0)
    z = (observed - centre) / spread.clamp_min(1e-300)
    p = 0.5 * torch.erfc(z / math.sqrt(2.0))
    tolerance = 1e-12 * centre.abs().clamp_min(1.0)
    apart = observed - centre
    exact = 0.5 - 0.5 * torch.sign(apart) * (apart.abs() > tolerance)
    return torch.where(spread <= tolerance, exact, p)


ADVICE = (smoke_test, ratio_calibration, elbo_settled, support_edge, local_means, exact_importance,
          posterior_predictive)
