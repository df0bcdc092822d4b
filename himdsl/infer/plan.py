"""The plan of a fit: every automatic choice, resolved once from the model's
structure and the data's size, with the reason for it.

    plan = make_plan(view, FitSettings())
    plan.method, plan.ratio            # "lfvi", "contrastive"
    print(plan.describe())             # the block `himdsl fit` prints
    plan.to_dict()                     # what fit.json records

The trainer only executes a plan. Each rule below is stated in terms of the model
(its densities, plate, locals, dimensions) and the data (N), never of a benchmark;
docs/lfvi.md explains them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .data import ModelView
from .families import AUTO_FLOW_MAX_DIMS, FlowSpec, global_blocks
from .settings import FitSettings, LocalGuideSpec

# Ratio updates per step: the contrastive ratio's target, log p(x | θ) + c(x), does not
# move with q, so extra updates only sharpen it; the empirical ratio's (which contrasts
# the data with q) moves with q every step (the paper's Algorithm 1: one update).
CONTRASTIVE_RATIO_UPDATES = 4
EMPIRICAL_RATIO_UPDATES = 1
# The q step reads an exponential average of the contrastive ratio's parameters
# (docs/lfvi.md, "The contrastive ratio": ratio average).
CONTRASTIVE_EMA = 0.998
# The networks' input scaling is fitted from SCALING_DRAWS prior draws of the globals,
# each simulated on SCALING_ROWS data rows (trainer.py).
SCALING_DRAWS = 1024
SCALING_ROWS = 16
# q(β) starts at the prior's median with this fraction of its spread when it
# maximises the ELBO (plan.init_scale).
ELBO_INIT_SCALE = 0.1
# Evaluating the ratio's posterior on every row for every particle of the covering
# population costs N · K ratio evaluations a move: a population forced on a plate
# (`covering = "on"`) has at most this many over its particles ...
POPULATION_MAX_ROW_EVALUATIONS = 2 ** 15
# ... and no fewer particles than this, which would not represent a posterior.
MIN_PARTICLES = 64
# On a plate, the check "q matches the ratio" weighs this many of q's draws against
# the ratio's posterior, fewer where N rows would cost more than WEIGH_ROW_EVALUATIONS
# network passes in all, and none below MIN_WEIGHED (k̂'s bound is then too loose)
WEIGH_DRAWS = 4000
WEIGH_ROW_EVALUATIONS = 2 ** 21
MIN_WEIGHED = 500
# The local guide's β inputs, and the contrastive ratio's inputs, are standardised
# anew this often (steps), so that they follow q as it narrows from the prior to the
# posterior (the guide by q's draws, the ratio by its training pairs).
RESCALE_EVERY = 100
# Draws of q(z | x, β) per row where the locals' density is known: the importance-
# weighted bound's gap to log p(x | β) falls roughly as 1/L (Burda et al. 2016), so
# 8 draws leave an eighth of the one-draw ELBO's gap, the part of q(β)'s error that
# comes from the local guide, for 8 times the per-row work of q's step (the ratio's
# training, which dominates a step, is unchanged).
LOCAL_SAMPLES = 8
# A row's local coordinates are correlated in q up to this many of them; beyond, the
# factor's d(d − 1)/2 outputs a row outgrow the guide's network, and q is diagonal.
FULL_COVARIANCE_MAX_DIMS = 32
# Networks no wider than this train fastest on one CPU thread (benchmarks/threads.py).
SINGLE_THREAD_MAX_WIDTH = 256


@dataclass(frozen=True)
class Plan:
    """What a fit does, decided before it starts (see `make_plan`)."""

    method: str                      # "vi": exact likelihood; "lfvi": a ratio estimates it
    ratio: str | None                # None | "empirical" | "contrastive"
    ratio_inputs: str                # "parents" | "inputs" | "prediction" (settings.py)
    ratio_globals: tuple[str, ...]   # the globals the ratio reads (its likelihood parents)
    ratio_locals: tuple[str, ...]    # the locals the ratio reads
    ratio_reads: tuple[str, ...]     # the model's nodes the ratio reads (its θ)
    # (observed array, *its element covariates) when the ratio reads one value of the
    # row at a time (its values independent given the row: graph/elements.py); else ()
    ratio_elements: tuple[str, ...]
    ratio_covariates: tuple[str, ...]  # the data arrays the ratio reads beside the observations
    exact_local_prior: bool          # log p(z | β) enters the objective exactly
    local_guide: str | None          # None | "gaussian" | "implicit"
    local_coordinates: tuple[str, ...]   # locals whose guide works in their prior's coordinates
    global_families: tuple[tuple[tuple[str, ...], str], ...]
    ratio_updates: int
    ratio_simulations: int           # simulations per ratio update
    population: int                  # particles tracking the ratio's posterior (0: none)
    q_objective: str                 # "elbo" | "covering" (forward KL to the population)
    init_scale: float                # q(β) starts with this fraction of the prior's spread
    global_gradient: str             # "elbo" | "fisher": how q(β) learns with locals (objective.py)
    local_samples: int               # draws of q(z | x, β) per row in q's objective (1: the ELBO)
    # the local guide's β inputs are standardised anew by q's draws every this many
    # steps until the average starts (0: never; LocalGuide.rescale_globals)
    guide_rescale_every: int
    # the ratio's inputs are standardised anew by its training pairs every this many
    # steps (0: never; RatioLearner.restandardise)
    ratio_rescale_every: int
    # until this step a rescale may start a new stage of the ratio in its pairs'
    # units (0: never; ratio.StagedRatio)
    ratio_stages_until: int
    ratio_ema: float
    reuse: int
    budget: int | None               # total simulations (None: no limit)
    # rows the ratio's training will simulate in all, the scaling pilot included
    simulations: int
    encodings: tuple[tuple[str, str], ...]
    warmup_steps: int
    average_from: int
    rows: int
    steps: int = 0
    threads: int | None = None       # CPU threads for torch (None: torch's choice)
    untrained: tuple[str, ...] = ()  # point estimates no gradient reaches: left at their start
    # "full": the Gaussian local guide correlates a row's locals (local_guide.py)
    local_covariance: str = "diagonal"
    # the Gaussian local guide trains on after the loop, q(β) held, until its means
    # are within 0.1 sd of each row's optimum (polish.py)
    polish_locals: bool = False
    # the posterior draws are q's importance-resampled to the ratio's posterior of the
    # globals, known up to a constant where the covering population is, on one row (importance.py)
    resample: bool = False
    # q's draws weighed against the ratio's posterior on a plate, for the check "q
    # matches the ratio" alone (0: none; checks.py)
    weigh_draws: int = 0
    # q's flows fit their normal part alone until this step, then their splines shape
    # it too (0: from the start, or no flow; families.NormalizingFlow)
    flow_shape_from: int = 0
    # q's gradient from the ratio has its mean on the ratio's own simulations at q's
    # draw taken out (objective.py, "Centred score")
    score_centring: bool = False
    reasons: dict[str, str] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        """Plain data for fit.json and checkpoints."""
        out = asdict(self)
        out["global_families"] = [{"globals": list(b), "family": f} for b, f in self.global_families]
        out["encodings"] = dict(self.encodings)
        return out

    def describe(self, seconds_per_simulation: float | None = None) -> str:
        """A short block for the terminal: each choice and why. With the simulator's
        measured cost per row, the simulations' line says how long they will take."""
        lines = ["plan:"]
        for key, value in self._shown(seconds_per_simulation):
            reason = self.reasons.get(key, "")
            lines.append(f"  {key:<16} {value}" + (f"  ({reason})" if reason else ""))
        return "\n".join(lines)

    def _shown(self, seconds_per_simulation: float | None) -> list[tuple[str, str]]:
        families = ", ".join(f"{'+'.join(b)}: {f}" for b, f in self.global_families) or "none"
        rows = [("method", self.method), ("q(globals)", families)]
        if self.local_guide:
            rows.append(("q(locals)", self.local_guide
                          + (", full covariance" if self.local_covariance == "full" else "")
                          + (" in prior coordinates" if self.local_coordinates else "")
                          + (", reads β in q's units" if self.guide_rescale_every else "")
                          + (f", {self.local_samples} draws a row" if self.local_samples > 1 else "")
                          + (", trained on to its optimum" if self.polish_locals else "")))
            if self.global_gradient == "fisher":
                held = "their weighted draws" if self.local_samples > 1 else "the guide's draws"
                rows.append(("q(β) gradient", f"fisher, the locals held at {held}"))
        if self.ratio:
            reads = {"parents": ", ".join(self.ratio_locals + self.ratio_globals) or "x only",
                     "inputs": ", ".join(self.ratio_reads), "prediction": "the prediction"}[self.ratio_inputs]
            if self.ratio_elements:
                observed, *covariates = self.ratio_elements
                beside = f" with its {', '.join(covariates)}" if covariates else ""
                reads += f"; one value of {observed}{beside} at a time"
            elif self.ratio_covariates:
                reads += f" with the row's {', '.join(self.ratio_covariates)}"
            if self.ratio_rescale_every:
                reads += ", in its pairs' units"
            rows += [("ratio", f"{self.ratio}, reads {reads}"),
                     ("ratio updates", f"{self.ratio_updates} x {self.ratio_simulations} simulations"),
                     ("simulations", self._simulations_line(seconds_per_simulation))]
            if self.population:
                rows.append(("q objective", f"{self.q_objective}, {self.population} particles"))
            elif "q objective" in self.reasons:     # a population the plan chose not to run
                rows.append(("q objective", self.q_objective))
            if self.score_centring:
                rows.append(("q's score", "centred on simulations at q's draw, every step"))
            elif "q's score" in self.reasons:
                rows.append(("q's score", "not centred"))
        rows.append(("posterior draws", "q's, importance-resampled to the ratio's posterior"
                     if self.resample else "q's"))
        rows.append(("start", f"q at the prior's median, {self.init_scale:g} of its spread"))
        shape = f", the flow's shape from step {self.flow_shape_from}" if self.flow_shape_from else ""
        rows.append(("schedule", f"warm-up {self.warmup_steps} steps{shape}, average from step {self.average_from}"))
        if self.threads:
            rows.append(("threads", str(self.threads)))
        if self.untrained:
            rows.append(("untrained", ", ".join(self.untrained)))
        return rows


    def _simulations_line(self, seconds_per_simulation: float | None) -> str:
        line = f"{self.simulations:,} rows in all"
        if self.budget:
            line += " (the budget), stored and reused"
        if seconds_per_simulation is not None:
            line += (f", {_wait(self.simulations * seconds_per_simulation)} of simulating (the simulator "
                     "alone; training the networks comes on top)")
        if not self.budget and self.ratio == "contrastive":
            line += "; `budget` caps them"
        return line


def _wait(seconds: float) -> str:
    """"under a second", "about 12 min", "about 2.5 h": a wait as a user reads it."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def make_plan(view: ModelView, settings: FitSettings, has_params: bool) -> Plan:
    """Resolve every `auto` choice of `settings` for this model and data."""
    reasons: dict[str, str] = {}
    model = view.model
    method = _method(model, settings, reasons)
    ratio = _ratio_mode(model, view, settings, method, has_params, reasons)
    inputs = _ratio_inputs(model, view, settings, ratio, reasons)
    exact_prior = bool(view.z_blocks) and set(model.local_names) <= set(model.explicit_locals)
    local_guide = _local_guide(model, view, settings, method, reasons)
    coordinates = _coordinates(model, local_guide)
    population = _population(view, settings, ratio, method, reasons)
    warmup = int(settings.warmup * settings.steps) if ratio else 0
    local_samples = _local_samples(settings, local_guide, ratio, reasons)
    families = _global_families(view, settings, reasons)
    updates = _ratio_updates(settings, ratio, reasons)
    return Plan(
        method=method, ratio=ratio, ratio_inputs=inputs,
        ratio_globals=_ratio_globals(model, ratio),
        ratio_locals=_ratio_locals(model, ratio),
        ratio_reads=_ratio_reads(model, ratio, inputs),
        ratio_elements=_ratio_elements(model, settings, ratio, _ratio_reads(model, ratio, inputs), reasons),
        ratio_covariates=tuple(model.covariate_names) if ratio else (),
        exact_local_prior=exact_prior and ratio != "empirical" or method == "vi",
        local_guide=local_guide, local_coordinates=coordinates,
        global_families=families,
        ratio_updates=updates,
        ratio_simulations=settings.simulations,
        population=population,
        q_objective="covering" if population else "elbo",
        init_scale=_init_scale(population, reasons),
        global_gradient=_global_gradient(view, settings, local_guide, exact_prior, ratio, local_samples, reasons),
        local_samples=local_samples,
        guide_rescale_every=_guide_rescale(view, local_guide, reasons),
        ratio_rescale_every=_ratio_rescale(ratio, reasons),
        ratio_stages_until=settings.steps // 2 if ratio == "contrastive" else 0,
        ratio_ema=_ema(settings, ratio),
        reuse=settings.reuse if ratio == "contrastive" else 0,
        budget=_budget(view, settings, ratio),
        simulations=_planned_simulations(view, settings, ratio, updates, has_params, warmup),
        encodings=tuple((b.name, b.encoding) for b in view.x_blocks + view.c_blocks),
        warmup_steps=warmup,
        average_from=int(settings.steps * (1 - settings.average)),
        rows=view.n_rows,
        steps=settings.steps,
        threads=_threads(view, settings, reasons),
        untrained=_untrained(model, reasons),
        local_covariance=_local_covariance(view, local_guide, reasons),
        polish_locals=_polish_locals(local_guide, ratio, reasons),
        resample=_resample(view, settings, population, families, reasons),
        weigh_draws=_weigh_draws(view, ratio, families),
        flow_shape_from=_flow_shape_from(families, warmup, settings.steps, population),
        score_centring=_score_centring(view, settings, ratio, reasons),
        reasons=reasons,
    )


def _untrained(model, reasons: dict) -> tuple[str, ...]:
    names = tuple(getattr(model, "untrained_params", ()))
    if names:
        reasons["untrained"] = ("the data reach them only through argmax, comparisons or rounding, "
                                "which have no gradient: they keep their initial values (W0171)")
    return names


def _threads(view, settings: FitSettings, reasons: dict) -> int | None:
    """One CPU thread when every network is narrow: a step is then many small
    matrix products, and threads spend more time meeting than computing (on a
    shared machine they wait for each other's cores). Wide networks get torch's
    choice (benchmarks/threads.py measures both)."""
    if view.device.type != "cpu":
        return None
    widest = max(network_widths(view, settings))
    if widest <= SINGLE_THREAD_MAX_WIDTH:
        reasons["threads"] = f"the widest network layer has {widest} units: one thread is fastest"
        return 1
    return None


def network_widths(view, settings: FitSettings) -> list[int]:
    """Every layer width the fit trains: the ratio's, the guides', the model's layers."""
    widths = list(settings.ratio.hidden) + [LocalGuideSpec.hidden[0]]
    for spec in settings.guide.values():
        widths += list(getattr(spec, "hidden", ()))
    widths += [max(p.shape) for p in view.model.parameters() if p.dim() == 2]
    return widths


def _method(model, settings: FitSettings, reasons: dict) -> str:
    if settings.method != "auto":
        if settings.method == "vi" and not model.explicit:
            raise ValueError("method vi needs a model where every local latent and observation has "
                             "a density written with `~` and no noise or extern in its arguments; "
                             "this one is implicit (use lfvi)")
        reasons["method"] = "as set"
        return settings.method
    if model.explicit:
        reasons["method"] = "every observation and local latent has a known density: exact, no ratio"
        return "vi"
    reasons["method"] = "the likelihood is implicit: a ratio estimates it"
    return "lfvi"


def _ratio_mode(model, view, settings, method, has_params, reasons) -> str | None:
    if method == "vi":
        return None
    mode = settings.ratio.mode
    implicit_locals = [n for n in model.local_names if n not in model.explicit_locals]
    implicit_guide = _asked_local_family(model, settings) == "implicit"
    if mode == "auto":
        if implicit_guide:
            reasons["ratio"] = ("the implicit local guide has no density: the ratio contrasts the "
                                "model's rows and locals with the data's rows and q's locals")
            return "empirical"
        if implicit_locals:
            reasons["ratio"] = (f"local `{implicit_locals[0]}` has no density: the ratio contrasts "
                                "the model with the data's rows")
            return "empirical"
        if has_params:
            reasons["ratio"] = "point parameters learn from the ratio against the data's rows"
            return "empirical"
        reasons["ratio"] = "per row, p(x | its latent parents) from pairs of simulations"
        return "contrastive"
    if mode == "contrastive" and (implicit_locals or has_params or implicit_guide):
        what = (f"local latents without a density ({', '.join(implicit_locals)})" if implicit_locals
                else "point-estimated parameters" if has_params
                else "an implicit local guide (no density for q's locals)")
        raise ValueError(f"the contrastive ratio needs every latent to have a density and no "
                         f"point-estimated parameters; this model has {what}: use "
                         "ratio { mode = empirical }")
    reasons["ratio"] = "as set"
    return mode


def _ratio_inputs(model, view, settings, ratio, reasons) -> str:
    """What the ratio reads of the latents. The likelihood's noise-free inputs carry
    everything the latents tell the data (structure.py), so the contrastive ratio
    reads them unless they are wider than the latents themselves. Network weights
    (Bayesian layers) are read through the model's prediction, noise at its mean,
    which a ratio network can use where it cannot use the weights (docs/lfvi.md)."""
    setting = "parents" if settings.ratio_inputs == "globals" else settings.ratio_inputs
    offered = ratio is not None and view.has_plate and view.prediction_dim > 0 and not view.z_blocks
    if setting == "prediction" and not offered:
        raise ValueError("ratio_inputs prediction needs a plate whose observations are computed "
                         "from `let` values (and no extern or local latent); this model has none")
    if setting == "inputs" and ratio != "contrastive":
        raise ValueError("ratio_inputs inputs needs the contrastive ratio")
    if setting != "auto" or ratio is None:
        return setting if setting != "auto" else "parents"
    weights = set(getattr(model, "bayesian_weights", ()))
    if offered and weights & set(model.likelihood_parents):
        reasons["ratio_inputs"] = "the globals are network weights: the ratio reads their prediction"
        return "prediction"
    parents = sum(math.prod(model.nodes[n].shape) for n in model.likelihood_parents)
    inputs = set(model.likelihood_inputs)
    if ratio == "contrastive" and inputs and inputs != set(model.likelihood_parents) \
            and view.input_dim <= parents:
        reasons["ratio_inputs"] = (f"the likelihood is computed from {', '.join(model.likelihood_inputs)}, "
                                   "no wider than its latent parents: the ratio reads them")
        return "inputs"
    return "parents"


def _ratio_globals(model, ratio) -> tuple[str, ...]:
    if ratio == "contrastive":
        return tuple(n for n in model.global_names if n in model.likelihood_parents)
    return tuple(model.global_names) if ratio else ()


def _ratio_locals(model, ratio) -> tuple[str, ...]:
    if ratio == "contrastive":
        return tuple(n for n in model.local_names if n in model.likelihood_parents)
    return tuple(model.local_names) if ratio else ()


def _ratio_reads(model, ratio, inputs) -> tuple[str, ...]:
    if ratio is None:
        return ()
    if inputs == "inputs":
        return tuple(model.likelihood_inputs)
    if inputs == "prediction":
        return tuple(model.prediction_names)
    return _ratio_locals(model, ratio) + _ratio_globals(model, ratio)


def _ratio_elements(model, settings, ratio, reads, reasons) -> tuple[str, ...]:
    """The contrastive ratio learns p(one value | θ, its covariates) when the values
    of a row are independent given it: K times the simulations, one dimension instead
    of K. Only where θ is the row's alone (globals, or a local or input of shape []),
    so each value's likelihood reads all of it."""
    elements = getattr(model, "observed_elements", {})
    if ratio != "contrastive" or settings.elements == "row" or not elements:
        return ()
    (name, covariates), = elements.items()
    row_level = all(n in model.global_names or model.nodes[n].shape == () for n in reads)
    if not row_level or model.nodes[name].dtype == "cat":
        return ()
    size, *value = model.nodes[name].shape
    values = f"{size} values of {name}" + (f" ({name}[k], {list(value)} each)" if value else "")
    reasons["ratio_elements"] = f"the {values} are independent given the row: the ratio scores one value at a time"
    return (name, *covariates)


def _asked_local_family(model, settings) -> str:
    """The local guide's family as set (guide_entries.py makes the entries agree)."""
    specs = [settings.guide[n] for n in model.local_names if n in settings.guide]
    spec = specs[0] if specs else LocalGuideSpec()
    return spec if isinstance(spec, str) else spec.family


def _local_guide(model, view, settings, method, reasons) -> str | None:
    if not view.z_blocks:
        return None
    family = _asked_local_family(model, settings)
    if family == "auto":
        if model.local_activations and method == "lfvi":
            _add_reason(reasons, "q(locals)", "a local's definition bounds its support (relu, ...): "
                                              "implicit q shares it")
            return "implicit"
        return "gaussian"
    if family == "implicit" and method == "vi":
        raise ValueError("method vi needs local guides with a density (gaussian)")
    return family


def _local_covariance(view, local_guide, reasons) -> str:
    if local_guide != "gaussian" or not 2 <= view.z_dim <= FULL_COVARIANCE_MAX_DIMS:
        return "diagonal"
    _add_reason(reasons, "q(locals)", f"full covariance over a row's {view.z_dim} local coordinates: "
                                      "they read the same data, so their posterior is correlated")
    return "full"


def _polish_locals(local_guide, ratio, reasons) -> bool:
    if local_guide != "gaussian" or ratio == "empirical":
        return False
    _add_reason(reasons, "q(locals)", "after the loop the guide trains on, q(β) held, while one Newton "
                                      "step of a row's ELBO is over 0.1 of its sds")
    return True


def _guide_rescale(view, local_guide, reasons) -> int:
    if local_guide is None or not view.g_shapes:
        return 0
    _add_reason(reasons, "q(locals)", "β standardised by q's draws: the guide learns how a row's "
                                      "posterior moves across q's range, not the prior's")
    return RESCALE_EVERY


def _ratio_rescale(ratio, reasons) -> int:
    if ratio != "contrastive":
        return 0
    _add_reason(reasons, "ratio", "the pairs follow q, and the likelihood's detail lies at the posterior's scale")
    return RESCALE_EVERY


def _add_reason(reasons: dict, key: str, text: str) -> None:
    reasons[key] = f"{reasons[key]}; {text}" if key in reasons else text


def _coordinates(model, local_guide) -> tuple[str, ...]:
    """Locals whose Gaussian guide works in their prior's coordinates: those with a
    density whose prior reads no other local (its parameters are then known at a
    draw of β before any local is drawn)."""
    if local_guide != "gaussian":
        return ()
    locals_ = set(model.local_names)
    return tuple(n for n in model.explicit_locals
                 if not set(model.local_prior_parents.get(n, ())) & locals_)


def full_batch(view, settings) -> bool:
    """Every q step sees every row (no plate, or N ≤ batch)."""
    return not view.has_plate or settings.batch >= view.n_rows


def _global_families(view, settings, reasons) -> tuple[tuple[tuple[str, ...], str], ...]:
    families = {n: ("flow" if isinstance(f, FlowSpec) else f) for n, f in settings.guide.items()
                if n in view.g_shapes}
    whole = full_batch(view, settings)
    blocks = global_blocks(list(view.g_shapes), view.u_dims, families, whole)
    auto = [(b, f) for b, f in blocks if not set(b) & set(families)]
    if auto:
        dims = sum(view.u_dims[n] for n in auto[0][0])
        if dims > AUTO_FLOW_MAX_DIMS:
            why = f"more than {AUTO_FLOW_MAX_DIMS} unconstrained dimensions"
        elif whole:
            why = f"{dims} unconstrained dimensions and every step sees every row"
        else:
            why = f"steps see {settings.batch} of {view.n_rows} rows: a flow would chase the minibatch noise"
        reasons["q(globals)"] = why
    return tuple(blocks)


def _flow_shape_from(families, warmup: int, steps: int, population: int) -> int:
    """The step from which q's flows shape q beyond their normal part where q is fitted
    by the ELBO from its narrow start: after the first third of q's steps, by which the
    normal part's location and scale have settled (moments first, then shape:
    families.NormalizingFlow). Under the covering objective q starts with the prior's
    whole spread and mostly follows the forward KL to a population, which charges for
    any mass q leaves out: from the first step (0)."""
    if population or not any(f == "flow" for _, f in families):
        return 0
    return warmup + (steps - warmup) // 3


def _ratio_updates(settings, ratio, reasons) -> int:
    if ratio is None:
        return 0
    if settings.ratio_updates is not None:
        return settings.ratio_updates
    if ratio == "contrastive":
        reasons["ratio updates"] = "the pair ratio's target does not move with q"
        return CONTRASTIVE_RATIO_UPDATES
    reasons["ratio updates"] = "the empirical ratio's target moves with q (Algorithm 1)"
    return EMPIRICAL_RATIO_UPDATES


def _population(view, settings, ratio, method, reasons) -> int:
    """Particles of the covering population: the ratio then gives the posterior of
    the globals up to a constant (contrastive, no locals), and the population tracks
    it while q is fitted to it by forward KL, which keeps every mode.

    Only where the data are one row. On a plate that posterior sums N rows' ratios,
    so an error of one sign in each adds up N-fold, and the population, which
    explores the whole prior, finds where the errors add up most: regions the pairs
    have barely reached, whose simulations are nothing like the data. q, fitted to
    the population, follows it there, the pairs follow q, and nothing brings them
    back (a chain-binomial SIR in 40 towns: a mode at R0 ≈ 12 whose exact
    log-likelihood is thousands of nats below the truth's; docs/accuracy.md). The
    ELBO's gradient moves q only where its pairs have trained the ratio.
    `covering = "on"` forces the population on a plate, sized to N (the ratio on
    every row for every particle)."""
    if settings.covering == "off" or ratio != "contrastive" or view.z_blocks or not view.g_shapes:
        return 0
    if settings.covering == "auto" and view.has_plate:
        reasons["q objective"] = (f"no covering population: the ratio's posterior sums {view.n_rows} "
                                  "rows' errors, and a population would find where they add up most")
        return 0
    reasons["q objective"] = "the ratio's posterior is known up to a constant: q covers every mode"
    affordable = POPULATION_MAX_ROW_EVALUATIONS // max(view.n_rows, 1)
    return min(settings.simulations, max(affordable, MIN_PARTICLES))


def _resample(view, settings, population: int, families, reasons: dict) -> bool:
    """Importance-resample q's draws to the ratio's posterior where it is known up to a
    constant and affordable on every row (the covering population's condition) and
    the data are one row: q, fitted to a population of particles, is broader than
    it, which is what a proposal should be (importance.py). On a plate π sums the
    ratio over N rows, and the final network's error in each adds up N-fold in its
    mean while its sd shrinks as 1/√N; q, averaged over the final steps, averages
    that error out (docs/accuracy.md, "The ratio's posterior, resampled"). A
    point-estimated global has no density to weigh against."""
    if not (settings.resample and population) or any(f == "point" for _, f in families):
        return False
    if view.has_plate:
        reasons["posterior draws"] = (f"q's: the ratio's posterior sums {view.n_rows} rows' ratios, "
                                      "whose error q's averaged steps average out")
        return False
    reasons["posterior draws"] = ("the ratio's posterior is known up to a constant; q, broader "
                                  "than it, is the proposal; PSIS's k̂ checks the weights")
    return True


def _score_centring(view, settings, ratio, reasons: dict) -> bool:
    """Centre q's score on a plate (objective.py, "Centred score"): N rows share the
    globals, so a systematic error in the ratio's score moves the posterior by √N of
    its own sds, where one row's is one error among the ratio's others. Each step
    simulates a batch of rows at q's draw, which a simulation budget (an expensive
    simulator, its pairs stored and reused) cannot pay for; and locals held at q's
    draws, which only a local declared with `~` can be. Asked for with
    `score_centring` (off by default: docs/accuracy.md says where it is measured)."""
    if not settings.score_centring:
        return False
    model = view.model
    why_not = ("it needs the contrastive ratio" if ratio != "contrastive" else
               "one row of data: no error adds up over rows" if not view.has_plate else
               "a local without a `~` prior cannot be held at q's draws"
               if not set(model.local_names) <= set(model.explicit_locals) else None)
    if why_not:
        reasons["q's score"] = f"score_centring asked for, but {why_not}"
        return False
    if settings.budget is not None:
        raise ValueError("score_centring simulates a batch of rows at every q step, which a simulation "
                         "budget cannot pay for: set one or the other")
    reasons["q's score"] = (f"{view.n_rows} rows share the globals: an error in the ratio's score that "
                            "its own simulations show is taken out before it adds up over the rows")
    return True


def _weigh_draws(view, ratio, families) -> int:
    """q's draws to weigh against the ratio's posterior on a plate, where it is known
    up to a constant (a contrastive ratio in a model without locals, no global a point
    estimate): q is fitted to it by the ELBO, which leaves out what a Gaussian q
    cannot hold (a skewed global's tail), and PSIS's k̂ sees that. The posterior
    draws stay q's (`_resample` says why); a k̂ beyond its bound fails the fit."""
    known = ratio == "contrastive" and not view.z_blocks and view.g_shapes
    if not (known and view.has_plate) or any(f == "point" for _, f in families):
        return 0
    draws = min(WEIGH_DRAWS, WEIGH_ROW_EVALUATIONS // view.n_rows)
    return draws if draws >= MIN_WEIGHED else 0


def _budget(view, settings, ratio) -> int | None:
    """The simulation budget, which the contrastive ratio's stored pairs make
    meaningful: it must pay for the inputs' scaling pilot and one batch of pairs."""
    if settings.budget is None:
        return None
    if ratio != "contrastive":
        raise ValueError("a simulation budget needs the contrastive ratio (the empirical one "
                         "simulates at the current q every step)")
    least = scaling_simulations(view) + settings.simulations
    if settings.budget < least:
        raise ValueError(f"budget {settings.budget:,} is below the {least:,} simulations of the inputs' "
                         f"scaling and one batch of {settings.simulations} pairs")
    return settings.budget


def _planned_simulations(view, settings, ratio, updates: int, has_params: bool, warmup: int) -> int:
    """Rows simulated in all: the scaling pilot, then every ratio update's pairs
    (contrastive: `simulations` rows, up to the budget) or its `particles` draws of
    `batch` rows (empirical; one row and `simulations` draws without a plate), and
    under the empirical ratio with point-estimated weights as many again at every q
    step after the warmup (the generator gradient). What a costly simulator's wait
    is made of."""
    if ratio is None:
        return 0
    if ratio == "contrastive":
        per_update = 2 * (settings.simulations // 2)
    elif view.has_plate:
        per_update = (settings.particles if view.g_shapes else 1) * min(settings.batch, view.n_rows)
    else:
        per_update = settings.simulations if view.g_shapes else 1
    planned = scaling_simulations(view) + settings.steps * updates * per_update
    if ratio == "empirical" and has_params:
        planned += (settings.steps - warmup) * per_update
    return min(planned, settings.budget) if settings.budget is not None else planned


def scaling_simulations(view) -> int:
    """Simulations the networks' input scaling draws (prior draws × a few rows)."""
    draws = SCALING_DRAWS if view.g_shapes else 1
    return draws * (min(SCALING_ROWS, view.n_rows) if view.has_plate else 1)


def _global_gradient(view, settings, local_guide, exact_prior, ratio, local_samples, reasons) -> str:
    """How q(β) learns beside local latents (objective.py). With several draws of the
    locals a row, Fisher's identity: the locals are held at their draws and weighted
    by their importance weights, a consistent estimate of ∇_β log p(x_m | β). The
    bound's own gradient adds a part through the guide's dependence on β whose mean
    vanishes as the draws grow while its noise does not (the reason the guide does
    not learn from the bound either, Rainforth et al. 2018): it slowed q's sds so
    that they were still 1.1–1.2× too wide after 3,000 steps. With one draw the
    ELBO's gradient: held at one unweighted draw, the locals give the complete-data
    gradient at the guide's draw, which a poor guide biases (a logistic model's
    location collapsed; docs/accuracy.md)."""
    possible = view.g_shapes and local_guide == "gaussian" and exact_prior and ratio != "empirical"
    if settings.global_gradient == "fisher" and not possible:
        raise ValueError("global_gradient fisher needs globals and local latents with a known prior "
                         "and a gaussian local guide")
    chosen = settings.global_gradient or ("fisher" if possible and local_samples > 1 else "elbo")
    if chosen == "fisher":
        reasons["q(β) gradient"] = ("Fisher's identity; the bound's gradient through the guide is noise"
                                    if local_samples > 1 else "Fisher's identity")
    return chosen


def _local_samples(settings, local_guide, ratio, reasons) -> int:
    """L draws of q(z | x, β) per row make each row's term an importance-weighted
    bound (objective.py); the weights need q's density of the locals, which an
    implicit guide does not have, and the likelihood of the locals as drawn, which
    the empirical ratio does not give. Where both are at hand, LOCAL_SAMPLES."""
    if local_guide is None or settings.local_samples == 1:
        return 1
    possible = local_guide == "gaussian" and ratio != "empirical"
    if settings.local_samples is None:
        if not possible:
            return 1
        _add_reason(reasons, "q(locals)", "draws importance-weighted: the guide's error "
                                          "biases q(globals) less")
        return LOCAL_SAMPLES
    if not possible:
        raise ValueError("local_samples above 1 needs a gaussian local guide (a density of the "
                         "locals) and no empirical ratio")
    _add_reason(reasons, "q(locals)", "draws importance-weighted: a tighter bound than the ELBO")
    return settings.local_samples


def _init_scale(population: int, reasons: dict) -> float:
    """Where q starts: fitted to the covering population, which starts as prior
    draws, q starts as wide as the prior (narrower, the forward KL to far particles
    blew up its first steps). Maximising the ELBO, q starts at a tenth of the prior's
    spread, as NumPyro's AutoNormal does: as wide as the prior it reaches into the
    tails at once, where a likelihood can be so extreme that the first gradients
    throw q into a corner it never leaves (a random-effects scale pinned near 0)."""
    if population:
        reasons["start"] = "the covering population starts as prior draws"
        return 1.0
    reasons["start"] = "narrow: the ELBO's first gradients in the prior's tails can be extreme"
    return ELBO_INIT_SCALE


def _ema(settings, ratio) -> float:
    if settings.ratio_ema is not None:
        return settings.ratio_ema if ratio else 0.0
    return CONTRASTIVE_EMA if ratio == "contrastive" else 0.0
