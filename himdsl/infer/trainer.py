"""The LFVI training loop: init / step / run, with checkpoints and a progress hook.

    trainer = Trainer(model, {"x": x}, FitSettings(steps=3000))
    result = trainer.run(callback=lambda row: print(row.step))   # -> FitResult

One step draws S = `particles` globals from q(β) and M = `batch` data rows, so its
cost does not depend on N. It updates the ratio estimator (`ratio_updates` times)
and then q(β), q(z | x, β) and point parameters. See docs/lfvi.md.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field

import torch

from .data import ModelView
from .families import GlobalGuide
from .local_guide import LOCAL_FAMILIES
from .particles import ParticlePosterior
from .ratio import RatioEstimator, classifier_loss, pair_loss
from .result import FitResult, TraceRow
from .settings import FitSettings, LocalGuideSpec

Tensor = torch.Tensor
DEFAULT_LOCAL_FAMILY = "gaussian"
# Data rows simulated per prior draw to standardise the networks' inputs (1,024 draws).
SCALING_ROWS = 16
# `ratio_inputs = auto` feeds the ratio the model's noise-free prediction instead of
# β beyond this many global dimensions (docs/lfvi.md, "ratio inputs").
PREDICTION_MIN_DIMS = 64
# p-side logits are clamped here in the point-parameter gradient exp(−r).
MIN_GENERATOR_LOGIT = -10.0


# Width (in prior sds, unconstrained) of the band of globals the ratio is trained on
# around a point-mass q (MAP): measured on examples/bayes_gan (crabs test error
# 0.46 with no band, 0.04 with 0.3).
POINT_BAND = 0.3
# Gradient-norm clip of the ratio estimator's updates (guards against the rare
# blow-up of the classifier on draws far from q).
RATIO_GRAD_CLIP = 10.0
# EMA decay of the ratio's parameters read by the q step in contrastive mode; at step
# k the decay is min(this, (1 + k) / (10 + k)), so over a 3,000-step fit the average
# spans roughly the last k / 9 steps: docs/lfvi-notes.md, "pair loss and ratio EMA".
DEFAULT_CONTRASTIVE_EMA = 0.998
# Fraction of a ratio update's globals that are local pairs around the particle
# population (models without a plate; docs/lfvi-notes.md, "two_moons, session 3").
LOCAL_PAIRS = 0.5
# Fraction of prior draws in the population's independence proposal (q otherwise).
DEFENSIVE_PRIOR = 0.1
# Ratio batches (the latest ones) whose simulations `replay_step` draws from (setting `reuse`).
REPLAY_STEPS = 50


# Settings a resumed fit may change: `steps` continues a run to a new length.
RESUMABLE_CHANGES = ("steps", "samples", "log_every", "checkpoint_every")


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN or inf."""


@dataclass
class TrainState:
    """Where training stands: the step counter, the trace and parameter averages."""

    step: int = 0
    trace: list[TraceRow] = field(default_factory=list)
    seconds: float = 0.0
    averages: dict[str, Tensor] = field(default_factory=dict)
    averaged_steps: int = 0
    # the q step's rows: a random permutation of the rows and how far it is used
    row_order: Tensor | None = None
    row_pos: int = 0


def resolve_mode(mode: str, view: ModelView, has_params: bool = False) -> str:
    """`auto` -> contrastive without a plate, or when the model has neither local
    latents nor point-estimated parameters (rows are then independent given β);
    empirical otherwise (docs/lfvi.md, "auto")."""
    if mode != "auto":
        return mode
    per_row = not view.z_blocks and not has_params
    return "contrastive" if (not view.has_plate or per_row) else "empirical"


def resolve_ratio_inputs(setting: str, view: ModelView) -> str:
    """"globals" or "prediction" (what the ratio reads of β). `auto` takes the
    prediction when the globals have more than `PREDICTION_MIN_DIMS` dimensions
    (network weights, which a ratio network cannot read usefully) and the model
    offers one (a plate, no extern)."""
    offered = view.has_plate and view.prediction_dim > 0
    if setting == "prediction" and not offered:
        raise ValueError("ratio_inputs prediction needs a plate whose observations are computed "
                         "from `let` values (and no extern); this model has none")
    if setting == "auto":
        return "prediction" if offered and view.g_dim > PREDICTION_MIN_DIMS else "globals"
    return setting


class Trainer:
    """Builds guides, ratio and optimisers for a model and its data, and trains them."""

    def __init__(self, model, data: dict, settings: FitSettings | None = None):
        self.settings = settings or FitSettings()
        self.settings.validate()
        torch.manual_seed(self.settings.seed)
        self.model = model
        self.view = ModelView(model, data)
        self.mode = resolve_mode(self.settings.ratio.mode, self.view,
                                 any(p.requires_grad for p in model.parameters()))
        self.ratio_inputs = resolve_ratio_inputs(self.settings.ratio_inputs, self.view)
        self._check_supported()
        self.global_guide = GlobalGuide(model, self._global_families()).to(self.view.device)
        self.local_guide = self._make_local_guide()
        self.ratio = self._make_ratio()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.state = TrainState()
        self._init_scaling()
        self.ratio_avg = self._make_ratio_average()
        self.population = self._make_population()
        self._make_optimisers()
        self._replay: list[tuple[Tensor, Tensor]] = []
        self._bad_step = torch.full((), -1, dtype=torch.long, device=self.view.device)

    # ------------------------------------------------------------ construction
    def _check_supported(self) -> None:
        s, view = self.settings, self.view
        if s.method == "vi" and not self.model.explicit:
            raise ValueError("method vi needs a model where every local latent and "
                             "observation has a density; this one is implicit (use lfvi)")
        if s.method == "lfvi" and self.mode == "contrastive" and view.z_blocks:
            raise ValueError("the contrastive ratio infers globals only, and this model has "
                             f"local latents ({', '.join(b.name for b in view.z_blocks)}); "
                             "use ratio { mode = empirical }")
        if s.method == "lfvi" and self.mode == "contrastive" and list(self.model.parameters()):
            raise ValueError("point-estimated parameters need the empirical ratio; give "
                             "them a prior or use ratio { mode = empirical }")

    def _global_families(self) -> dict[str, str]:
        return {n: f for n, f in self.settings.guide.items() if n in self.model.global_names}

    def _local_spec(self) -> LocalGuideSpec:
        specs = [self.settings.guide[n] for n in self.model.local_names if n in self.settings.guide]
        spec = specs[0] if specs else LocalGuideSpec()
        return spec if isinstance(spec, LocalGuideSpec) else LocalGuideSpec(spec)

    def _make_local_guide(self):
        if not self.view.z_blocks:
            return None
        spec = self._local_spec()
        activations = self._local_activations()
        family = spec.family if spec.family != "auto" else (
            "implicit" if activations and self.settings.method == "lfvi" else DEFAULT_LOCAL_FAMILY)
        kwargs = {"noise": spec.noise, "activations": activations} if family == "implicit" else {}
        if family == "implicit" and self.settings.method == "vi":
            raise ValueError("method vi needs local guides with a density (gaussian)")
        guide = LOCAL_FAMILIES[family](self.view.x_dim, self.view.g_dim, self.view.z_dim,
                                       tuple(spec.hidden), **kwargs)
        return guide.to(self.view.device)

    def _local_activations(self) -> tuple[tuple[int, int, str], ...]:
        """(start, stop, function) of every local latent whose definition bounds its
        support (`HimModule.local_activations`), as slices of the flat z. With any, the
        `auto` local guide is implicit with those output functions: a Gaussian cannot
        put an atom at 0 as relu units do."""
        out, start = [], 0
        for block in self.view.z_blocks:
            name = self.model.local_activations.get(block.name)
            if name:
                out.append((start, start + block.width, name))
            start += block.width
        return tuple(out)

    def _make_ratio(self):
        if self.settings.method == "vi":
            return None
        z_dim = self.view.z_dim if self.mode == "empirical" else 0
        b_dim = self.view.prediction_dim if self.ratio_inputs == "prediction" else self.view.g_dim
        ratio = RatioEstimator(self.view.x_dim + z_dim + b_dim, self.settings.ratio.hidden)
        return ratio.to(self.view.device)

    @torch.no_grad()
    def _init_scaling(self) -> None:
        """Start q(β) at the prior's moments; standardise network inputs from
        prior simulations and the data."""
        view, s = self.view, self.settings
        prior = view.prior_globals(1024)
        if view.g_shapes:
            self.global_guide.init_from_prior(prior)
            u_prior = torch.cat(list(self.global_guide.unconstrain(prior).values()), -1)
            self._u_prior_sd = _robust_sd(u_prior)
        idx = (torch.randint(view.n_rows, (min(1024, 64 * view.n_rows),), device=view.device)
               if view.has_plate else None)
        rows = view.rows(idx)
        # 1,024 prior draws × a few rows: enough for moments, cheap for costly externs
        sim_rows = view.rows(idx[:SCALING_ROWS]) if view.has_plate else rows
        sim = self._simulate(prior, sim_rows, 1024 if view.g_shapes else 1)
        g = view.g_flat(prior)
        x_data = view.x_features(view.with_data(rows, 1))
        if self.local_guide is not None:
            self.local_guide.fit_scaling(x_data, g)
        if self.ratio is not None:
            x_sim = view.x_features(sim)
            blocks = [torch.cat([x_sim.reshape(-1, view.x_dim), x_data.reshape(-1, view.x_dim)])]
            if self.mode == "empirical" and view.z_blocks:
                blocks.append(view.z_flat(sim))
            b = self._beta_inputs(prior, sim_rows, g)
            self.ratio.fit_scaling(blocks + [b.flatten(0, -2)])

    def _make_ratio_average(self):
        """An exponential moving average of the ratio's parameters, which the q step
        reads: it damps the optimiser's noise in r (docs/lfvi-notes.md)."""
        if self.ratio is None or self._ema_decay() <= 0:
            return self.ratio
        avg = copy.deepcopy(self.ratio)
        for p in avg.parameters():
            p.requires_grad_(False)
        return avg

    def _ema_decay(self) -> float:
        ema = self.settings.ratio_ema
        return (DEFAULT_CONTRASTIVE_EMA if self.mode == "contrastive" else 0.0) if ema is None else ema

    @torch.no_grad()
    def _update_ratio_average(self) -> None:
        if self.ratio_avg is self.ratio:
            return
        k = self.state.step
        decay = min(self._ema_decay(), (1 + k) / (10 + k))
        torch._foreach_lerp_(list(self.ratio_avg.parameters()), list(self.ratio.parameters()),
                             1 - decay)

    def _make_optimisers(self) -> None:
        s = self.settings
        q_params = list(self.global_guide.parameters())
        if self.local_guide is not None:
            q_params += list(self.local_guide.parameters())
        groups = [{"params": p} for p in (q_params, self.params) if p]
        # fused: one kernel for all tensors (the per-tensor loop cost ~2 ms a step, the
        # foreach update 0.3 ms per optimiser on CPU, fused 0.12 ms; docs/benchmarks.md)
        self.q_opt = torch.optim.Adam(groups, lr=s.lr, fused=True) if groups else None
        self.r_opt = self._ratio_optimiser()

    def _ratio_optimiser(self):
        """AdamW. In contrastive mode with a plate the MLP's weights decay and the head
        learns faster (ratio.py, MLP_WEIGHT_DECAY): the pair ratio's target leaves c(x)
        free, so the MLP never has to hold a fixed function of x. Elsewhere every
        parameter is trained alike (plain Adam): the empirical ratio's MLP has to hold
        −log q(x) of the data, which the decay would bias (point regression: a = 1.39
        for 1.5), and without a plate the MLP carries the posterior's fine structure,
        which the decay blurs (two_moons C2ST 0.584 -> 0.637, lfvi-notes.md)."""
        if self.ratio is None:
            return None
        decayed = self.mode == "contrastive" and self.view.has_plate
        groups = (self.ratio.param_groups() if decayed
                  else [{"params": list(self.ratio.parameters()), "weight_decay": 0.0}])
        return torch.optim.AdamW(groups, lr=self.settings.ratio_lr, fused=True)

    # ------------------------------------------------------------ sampling helpers
    def _simulate(self, globals: dict, rows: dict, draws: int) -> dict[str, Tensor]:
        """A simulation merged with the rows' covariates: {name: [S, M, ...]}."""
        sim = self.view.simulate(globals, rows, draws)
        covs = {b.name: rows[b.name] for b in self.view.c_blocks}
        return {**self.view.with_data(covs, draws), **sim}

    def _batch_rows(self, reshuffled: bool = False) -> dict[str, Tensor]:
        """M data rows: drawn with replacement, or (`reshuffled`) the next M of a
        random permutation of all rows (see `_next_rows`)."""
        view = self.view
        if not view.has_plate:
            return view.rows(None)
        m = min(self.settings.batch, view.n_rows)
        idx = (self._next_rows(m) if reshuffled
               else torch.randint(view.n_rows, (m,), device=view.device))
        return view.rows(idx)

    def _next_rows(self, m: int) -> Tensor:
        """The next m rows of a random permutation, redrawn when used up (random
        reshuffling), for the q step: every row then enters q's fit equally often. With
        replacement the rows' counts over the averaged steps vary by ±10 %, and the
        averaged q is the posterior of that randomly reweighted data set (≈ 0.1 sd
        error on linear regression even with the exact likelihood, lfvi-notes.md)."""
        st, parts = self.state, []
        while m > 0:
            if st.row_order is None or st.row_pos >= self.view.n_rows:
                st.row_order = torch.randperm(self.view.n_rows, device=self.view.device)
                st.row_pos = 0
            take = st.row_order[st.row_pos:st.row_pos + m]
            st.row_pos += len(take)
            m -= len(take)
            parts.append(take)
        return torch.cat(parts)

    def _ratio_batch(self) -> tuple[dict[str, Tensor], int]:
        """A ratio update's data rows and number of global draws: `particles` draws
        × `batch` rows; without a plate, or in contrastive mode over rows that carry
        no covariates (exchangeable given β), `simulations` draws of one row each,
        so the ratio sees as many distinct β as simulations."""
        s, view = self.settings, self.view
        if not view.g_shapes:
            return self._batch_rows(), 1
        if not view.has_plate:
            return self._batch_rows(), s.simulations
        if self.mode == "contrastive" and not view.c_blocks:
            return view.rows(torch.zeros(1, dtype=torch.long, device=view.device)), s.simulations
        return self._batch_rows(), s.particles

    @torch.no_grad()
    def _broad_u(self, num: int, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Unconstrained globals for ratio training, [num, Du], and their widening sd:
        q draws widened by spread · sd(q) · √N, at most the prior's spread (the scale
        on which one row's likelihood changes; docs/lfvi.md, "where the ratio is
        trained"); in contrastive mode a `prior_mix` fraction are prior draws, so the
        ratio keeps learning where q has no mass. `u`: q's unconstrained draws of
        this step when the q step already made them (saves a pass of the flow)."""
        if u is None or u.shape[0] != num:
            _, _, u = self.global_guide.rsample(num)
        u = u.detach()
        q_sd = self.global_guide.u_sd(u)
        sd = self.settings.spread * q_sd * math.sqrt(self.view.n_rows)
        # a point mass has no spread of its own: train the ratio over a band around it
        sd = torch.where(q_sd > 0, sd, POINT_BAND * self._u_prior_sd)
        sd = torch.minimum(sd, self._u_prior_sd)
        u = u + sd * torch.randn_like(u)
        k = int(self.settings.prior_mix * num) if self.mode == "contrastive" else 0
        if k:
            u[num - k:] = self.global_guide.flat_u(self.view.prior_globals(k))
        return u, sd

    def _features(self, x: Tensor, z: Tensor | None, b: Tensor) -> Tensor:
        """The ratio's input [S, M, F]: x, z and β's inputs `b` ([S, D] or per row [S, M, D])."""
        b = b if b.dim() == 3 else b[:, None, :].expand(*x.shape[:2], -1)
        return torch.cat([x] + ([z] if z is not None else []) + [b], -1)

    def _beta_inputs(self, globals: dict, rows: dict, g: Tensor) -> Tensor:
        """What the ratio reads of β: the flat globals `g` [S, Dg], or with
        `ratio_inputs` "prediction" the model's noise-free prediction at β for
        each row [S, M, P] (docs/lfvi.md, "ratio inputs")."""
        if self.ratio_inputs == "prediction":
            return self.view.prediction(globals, rows)
        return g

    def _joint_logit(self, x: Tensor, z: Tensor | None, g: Tensor, b: Tensor) -> Tensor:
        """Estimated log p(x, z | β) − log q(x, z | β) (empirical mode): the network
        plus, with an explicit local guide, the exact −log q(z | x, β) offset.
        `b`: the ratio's inputs for β (`_beta_inputs`)."""
        logit = self.ratio_avg(self._features(x, z, b))
        if z is not None and self.local_guide.has_density:
            logit = logit - self.local_guide.log_prob(z, x, g)
        return logit

    # ------------------------------------------------------------ one step
    def ratio_step(self, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One update of the ratio estimator: (loss, accuracy). `u`: this step's
        unconstrained q draws, reused (detached) as the centres of the widened globals."""
        view = self.view
        rows, draws = self._ratio_batch()
        with torch.no_grad():
            globals, partner = self._ratio_globals(draws, u)
            sim = self._simulate(globals, rows, draws)
            g = view.g_flat(globals)
            b = self._beta_inputs(globals, rows, g)
            xp = view.x_features(sim)
        if self.mode == "contrastive":
            self._remember(xp, b, partner)
            logit_p, logit_q = self._contrastive_logits(xp, b, partner)
            judge = self._contrastive_judge()
        else:
            logit_p, logit_q = self._empirical_logits(sim, rows, g, b, draws)
            judge = classifier_loss
        return self._ratio_update(*judge(logit_p, logit_q, self.settings.ratio.loss))

    def replay_step(self) -> tuple[Tensor, Tensor]:
        """A ratio update on simulations of an earlier step (contrastive mode). With
        the pair loss the target log p(x | β) + c(x) does not depend on where β was
        drawn, so old simulations stay valid training data: an expensive simulator
        then feeds several ratio updates per draw (setting `reuse`)."""
        xp, g, partner = self._replay[int(torch.randint(len(self._replay), ()))]
        logit_p, logit_q = self._contrastive_logits(xp, g, partner)
        return self._ratio_update(*self._contrastive_judge()(logit_p, logit_q, self.settings.ratio.loss))

    def _ratio_updates(self) -> int:
        """Ratio updates per step: the setting, or 5 without a plate, 1 with one."""
        if self.settings.ratio_updates is not None:
            return self.settings.ratio_updates
        return 1 if self.view.has_plate else 5

    def _contrastive_judge(self):
        return pair_loss if self.settings.contrast == "pair" else classifier_loss

    def _contrastive_logits(self, xp: Tensor, b: Tensor, partner: Tensor) -> tuple[Tensor, Tensor]:
        # b[partner]: the other globals of each pair, exchangeable with b (see _ratio_globals)
        return (self.ratio(self._features(xp, None, b)),
                self.ratio(self._features(xp, None, b[partner])))

    def _ratio_globals(self, num: int, u: Tensor | None) -> tuple[dict[str, Tensor], Tensor]:
        """Globals for a ratio update and, for each, the index of its pair partner
        (contrastive mode). Widened q draws are paired with the next draw of the
        batch. With a particle population, a `LOCAL_PAIRS` fraction are pairs
        c ± δ around particles c, δ at the population's Metropolis scale, where
        the ratio's posterior changes by about one nat: they teach the ratio the
        posterior's fine structure (two_moons' thin crescents), which pairs of
        independent draws, almost always told apart at once, do not. Both kinds
        of pair are exchangeable, so the pair loss's optimum is unchanged."""
        if not self.view.g_shapes:
            return {}, torch.zeros(num, dtype=torch.long, device=self.view.device)
        k = 2 * int(LOCAL_PAIRS * num / 2) if self.population is not None else 0
        broad = self._broad_u(num - k, u)[0]
        partner = torch.arange(num, device=broad.device)
        partner[:num - k] = partner[:num - k].roll(1)
        if k:
            broad = torch.cat([broad, self.population.local_pairs(k // 2)])
            partner[num - k:] = partner[num - k:].roll(k // 2)
        return self.global_guide.constrain(broad)[0], partner

    def _remember(self, xp: Tensor, g: Tensor, partner: Tensor) -> None:
        if self.settings.reuse:
            self._replay.append((xp, g, partner))
            del self._replay[:-REPLAY_STEPS]

    def _ratio_update(self, loss: Tensor, acc: Tensor) -> tuple[Tensor, Tensor]:
        self.r_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.ratio.parameters(), RATIO_GRAD_CLIP)
        self.r_opt.step()
        self._update_ratio_average()
        return loss.detach(), acc

    def _empirical_logits(self, sim, rows, g, b, draws) -> tuple[Tensor, Tensor]:
        view = self.view
        xp = view.x_features(sim)
        xq = view.x_features(view.with_data(rows, draws))
        zp = zq = None
        if view.z_blocks:
            zp = view.z_flat(sim)
            with torch.no_grad():
                zq, _ = self.local_guide.rsample(xq, g)
        with torch.no_grad():
            off_p = self._offset(zp, xp, g)
            off_q = self._offset(zq, xq, g)
        return (self.ratio(self._features(xp, zp, b)) - off_p,
                self.ratio(self._features(xq, zq, b)) - off_q)

    def _offset(self, z, x, g):
        if z is None or not self.local_guide.has_density:
            return 0.0
        return self.local_guide.log_prob(z, x, g)

    def _q_draws(self) -> tuple[dict, Tensor | float, Tensor | None]:
        """This step's reparameterised draws from q(β): (globals, log q, u)."""
        if not self.view.g_shapes:
            return {}, 0.0, None
        return self.global_guide.rsample(self.settings.particles)

    def q_step(self, draws=None) -> tuple[Tensor, Tensor]:
        """One update of q(β), q(z | x, β) and point parameters: (the surrogate
        ELBO / N, q's whole loss, the covering term included). `draws`: this step's (globals, log q, u) from `_q_draws` (drawn here if None)."""
        view, n = self.view, self.view.n_rows
        rows = self._batch_rows(reshuffled=True)
        s = self.settings.particles if view.g_shapes else 1
        globals, log_q, _ = draws if draws is not None else self._q_draws()
        log_prior = self.model.log_prior(globals) if view.g_shapes else 0.0
        g = view.g_flat(globals)
        x = view.x_features(view.with_data(rows, s))
        per_row = self._row_terms(globals, rows, x, g)
        elbo = log_prior - log_q + self._temperature() * n * per_row.mean(-1)
        loss = -(elbo.mean() if torch.is_tensor(elbo) else torch.tensor(elbo)) / n
        surrogate_elbo = -loss.detach()
        if self.population is not None:
            # reported apart: cover × KL(π ‖ q) is not part of the ELBO
            loss = loss + self.settings.cover * self._forward_kl() / n
        self.q_opt.zero_grad(set_to_none=True)
        self._set_requires_grad(self.ratio, False)
        if loss.requires_grad:
            loss.backward()
        self._set_requires_grad(self.ratio, True)
        if self.params and self.settings.method == "lfvi":
            self._add_generator_grads(globals, rows, s)
        self.q_opt.step()
        return surrogate_elbo, loss.detach()

    def _uses_cover(self) -> bool:
        """The covering term needs Σ_n r over every row: contrastive mode with the
        whole data set in each batch (a minibatch estimate of Σ_n r makes its
        importance weights useless)."""
        s, view = self.settings, self.view
        full_batch = not view.has_plate or s.batch >= view.n_rows
        return self.mode == "contrastive" and s.cover > 0 and s.method == "lfvi" and full_batch

    def _make_population(self) -> ParticlePosterior | None:
        """The SMC population behind the covering term, started from the prior."""
        if not (self._uses_cover() and self.view.g_shapes):
            return None
        view = self.view
        # every row's features, once: the posterior is evaluated on all of them each step
        self._all_rows = view.rows(None)
        self._all_rows_x = view.x_features(view.with_data(self._all_rows, 1))
        prior = view.prior_globals(self.settings.simulations)
        self._proposal = self._population_proposal()
        return ParticlePosterior(self.global_guide.flat_u(prior))

    def _log_posterior_u(self, u: Tensor) -> Tensor:
        """The ratio's posterior of the globals in unconstrained space, up to a
        constant: log p(β(u)) + log |∂β/∂u| + Σ_n r(x_n, β(u)) [K]."""
        view = self.view
        globals, log_prior = self._prior_u(u)
        x = self._all_rows_x.expand(u.shape[0], -1, -1)
        b = self._beta_inputs(globals, self._all_rows, view.g_flat(globals))
        log_lik = view.n_rows * self.ratio_avg(self._features(x, None, b)).mean(-1)
        return log_prior + log_lik

    def _prior_u(self, u: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The globals of unconstrained u and the prior's log density at u [K]."""
        globals, logdet = self.global_guide.constrain(u)
        return globals, self.model.log_prior(globals) + logdet

    def _population_proposal(self):
        """The population's independence proposal: q(u), with a `DEFENSIVE_PRIOR`
        fraction of prior draws so a mode q has lost can still be proposed."""
        guide, d = self.global_guide, DEFENSIVE_PRIOR

        def draw(k: int) -> Tensor:
            u = guide.rsample(k)[2]
            from_prior = torch.rand(k, 1, device=u.device) < d
            return torch.where(from_prior, guide.flat_u(self.view.prior_globals(k)), u)

        def log_density(u: Tensor) -> Tensor:
            return torch.logaddexp(math.log1p(-d) + guide.log_prob_u(u),
                                   math.log(d) + self._prior_u(u)[1])
        return draw, log_density

    def _forward_kl(self) -> Tensor:
        """Mode-covering term: KL(p ‖ q) up to a constant, −Σ w̄ log q(u) over the
        particle population that tracks the ratio's posterior (particles.py)."""
        return self.population.forward_kl(self.global_guide.log_prob_u)

    def _row_terms(self, globals, rows, x, g) -> Tensor:
        """Per-row ELBO terms [S, M]: r(x, z, β) − log q(z | x, β), or the exact
        log p(x, z | β) − log q(z | x, β) under method vi."""
        z, log_qz = (self.local_guide.rsample(x, g) if self.local_guide is not None
                     else (None, None))
        if self.settings.method == "vi":
            return self._exact_terms(globals, rows, z, log_qz)
        ratio, b = self.ratio_avg, self._beta_inputs(globals, rows, g)
        if self.mode == "contrastive" or z is None:
            return ratio(self._features(x, None, b))
        if log_qz is None:
            return ratio(self._features(x, z, b))
        return ratio(self._features(x, z, b)) - log_qz

    def _exact_terms(self, globals, rows, z, log_qz) -> Tensor:
        view = self.view
        data = {n: view.model_layout(n, v) for n, v in rows.items()}
        locals = view.z_unflat(z) if z is not None else {}
        term = self.model.log_likelihood(globals, locals, data)
        if z is not None:
            covs = view.covariates(rows) or None
            term = term + self.model.log_local_prior(globals, locals, covs) - log_qz
        return term if term.dim() == 2 else term[:, None]

    def _add_generator_grads(self, globals, rows, s) -> None:
        """Point parameters w: ∇_w E_ε[−exp(−r(g(ε; w)))] with r frozen (docs/lfvi.md)."""
        view = self.view
        globals = {k: v.detach() for k, v in globals.items()}
        sim = self._simulate(globals, rows, s)
        g = view.g_flat(globals)
        x = view.x_features(sim)
        z = view.z_flat(sim) if view.z_blocks else None
        self._set_requires_grad(self.ratio, False)
        logit = self._joint_logit(x, z, g, self._beta_inputs(globals, rows, g)).clamp_min(MIN_GENERATOR_LOGIT)
        grads = torch.autograd.grad(-torch.exp(-logit).mean(), self.params, allow_unused=True)
        self._set_requires_grad(self.ratio, True)
        for p, gr in zip(self.params, grads):
            if gr is not None:
                p.grad = gr if p.grad is None else p.grad + gr

    @staticmethod
    def _set_requires_grad(module, flag: bool) -> None:
        if module is not None:
            for p in module.parameters():
                p.requires_grad_(flag)

    def step(self) -> dict[str, Tensor]:
        """One training step (device tensors, no host sync): elbo, ratio_loss, ratio_acc."""
        s, k = self.settings, self.state.step
        self._set_lr(k)
        out = {}
        q_active = self.q_opt is not None and k >= self._warmup_steps()
        draws = self._q_draws() if q_active else None
        u = draws[2] if draws is not None else None
        if self.ratio is not None:
            if self.population is not None:
                self.population.track(self._log_posterior_u, self._proposal)
            for i in range(self._ratio_updates()):
                out["ratio_loss"], out["ratio_acc"] = self.ratio_step(u if i == 0 else None)
            for _ in range(s.reuse if self.mode == "contrastive" else 0):
                self.replay_step()
        if q_active:
            out["elbo"], out["q_loss"] = self.q_step(draws)
            self._accumulate_average(k)
        self._flag_non_finite(out, k)
        self.state.step = k + 1
        return out

    # ------------------------------------------------------------ schedules, averages
    def _warmup_steps(self) -> int:
        return int(self.settings.warmup * self.settings.steps) if self.ratio is not None else 0

    def _temperature(self) -> float:
        """Likelihood weight p · N^(p − 1), p rising linearly from 0 to 1 over the
        first `anneal` fraction of the q steps: the data's effective number of rows
        p · N^p grows geometrically (linearly without a plate), so q passes through
        tempered posteriors that shrink at a steady rate."""
        s = self.settings
        ramp = s.anneal * (s.steps - self._warmup_steps())
        if ramp < 1:
            return 1.0
        p = min(1.0, (self.state.step - self._warmup_steps() + 1) / ramp)
        return p * self.view.n_rows ** (p - 1)

    def _set_lr(self, k: int) -> None:
        s = self.settings
        start = self._warmup_steps()
        frac = min(max((k - start) / max(s.steps - start, 1), 0.0), 1.0)
        factor = s.final_lr + (1 - s.final_lr) * 0.5 * (1 + math.cos(math.pi * frac))
        for opt, lr in ((self.q_opt, s.lr), (self.r_opt, s.ratio_lr)):
            for group in (opt.param_groups if opt else []):
                group["lr"] = lr * factor * group.get("lr_scale", 1.0)

    def _averaged_modules(self) -> dict[str, torch.nn.Module]:
        mods = {"global": self.global_guide}
        if self.local_guide is not None:
            mods["local"] = self.local_guide
        return mods

    def _accumulate_average(self, k: int) -> None:
        s = self.settings
        if k < s.steps * (1 - s.average):
            return
        st = self.state
        st.averaged_steps += 1
        with torch.no_grad():
            for prefix, mod in self._averaged_modules().items():
                for name, p in mod.named_parameters():
                    key = f"{prefix}.{name}"
                    prev = st.averages.get(key)
                    st.averages[key] = p.detach().clone() if prev is None else \
                        prev + (p.detach() - prev) / st.averaged_steps

    def _flag_non_finite(self, out: dict[str, Tensor], k: int) -> None:
        for value in out.values():
            bad = ~torch.isfinite(value) & (self._bad_step < 0)
            self._bad_step = torch.where(bad, torch.full_like(self._bad_step, k), self._bad_step)

    def _check_finite(self, last: dict[str, Tensor]) -> None:
        step = int(self._bad_step)
        if step >= 0:
            losses = ", ".join(f"{k} = {float(v):.4g}" for k, v in last.items())
            raise NonFiniteLossError(
                f"training diverged: a loss became NaN or inf at step {step} (last values: "
                f"{losses}); try a smaller lr or ratio_lr, or check the model's simulation")

    # ------------------------------------------------------------ loop
    def run(self, callback=None, checkpoint_path: str | None = None,
            resume: bool = False) -> FitResult:
        """Train to `settings.steps`; `callback(row: TraceRow)` at each log point."""
        if resume and checkpoint_path and os.path.exists(checkpoint_path):
            self.load_checkpoint(checkpoint_path)
        s, window, t0 = self.settings, [], time.perf_counter() - self.state.seconds
        while self.state.step < s.steps:
            window.append(self._guarded_step(window))
            k = self.state.step
            row = None
            if k % s.log_every == 0 or k == s.steps:
                row = self._log(window, k, time.perf_counter() - t0)
                window = []
            if checkpoint_path and (k % s.checkpoint_every == 0 or k == s.steps):
                self.state.seconds = time.perf_counter() - t0
                self.save_checkpoint(checkpoint_path)
            if row is not None and callback is not None:
                callback(row)
        self.state.seconds = time.perf_counter() - t0
        return self.result()

    def _guarded_step(self, window: list[dict]) -> dict[str, Tensor]:
        """A step; an error caused by an earlier NaN is reported as that NaN."""
        try:
            return self.step()
        except (ValueError, RuntimeError):
            self._check_finite(window[-1] if window else {})
            raise

    def _log(self, window: list[dict], step: int, seconds: float) -> TraceRow:
        means = {key: torch.stack([w[key].float() for w in window if key in w]).mean()
                 for key in ("elbo", "q_loss", "ratio_loss", "ratio_acc") if any(key in w for w in window)}
        self._check_finite(means)
        values = {k: float(v) for k, v in means.items()}
        row = TraceRow(step, values.get("elbo", float("nan")), values.get("ratio_loss", float("nan")),
                       values.get("ratio_acc", float("nan")), seconds)
        self.state.trace.append(row)
        return row

    def result(self) -> FitResult:
        """The fit so far, with q's parameters averaged over the final steps."""
        return FitResult.from_trainer(self)

    # ------------------------------------------------------------ checkpoints
    def _modules(self) -> dict[str, torch.nn.Module]:
        mods = {"model": self.model, **self._averaged_modules()}
        if self.ratio is not None:
            mods["ratio"] = self.ratio
        if self.ratio_avg is not self.ratio:
            mods["ratio_avg"] = self.ratio_avg
        return mods

    def save_checkpoint(self, path: str) -> None:
        """Write everything needed to resume, atomically (temp file + os.replace)."""
        blob = {"modules": {k: m.state_dict() for k, m in self._modules().items()},
                "q_opt": self.q_opt.state_dict() if self.q_opt else None,
                "r_opt": self.r_opt.state_dict() if self.r_opt else None,
                "state": self.state, "settings": self.settings.to_dict(),
                "rng": torch.get_rng_state(), "mode": self.mode,
                "population": self.population.state_dict() if self.population else None}
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save(blob, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: str) -> None:
        """Restore a checkpoint written by `save_checkpoint` with the same settings."""
        blob = torch.load(path, map_location=self.view.device, weights_only=False)
        saved, current = blob["settings"], self.settings.to_dict()
        changed = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
        if changed:
            raise ValueError(f"checkpoint {path} was written with different settings "
                             f"({', '.join(changed)}); resume with the same settings "
                             f"(only {', '.join(RESUMABLE_CHANGES)} may change)")
        if blob["state"].step > self.settings.steps:
            raise ValueError(f"checkpoint {path} is at step {blob['state'].step}, past the "
                             f"{self.settings.steps} steps asked for")
        for key, mod in self._modules().items():
            mod.load_state_dict(blob["modules"][key])
        for opt, key in ((self.q_opt, "q_opt"), (self.r_opt, "r_opt")):
            if opt is not None:
                opt.load_state_dict(blob[key])
        self.state = blob["state"]
        if self.population is not None:
            self.population.load_state_dict(blob["population"])
        if saved["steps"] != current["steps"]:
            # a longer run: the schedules follow the new length, and q's parameter
            # average restarts over its final fraction
            self.state.averages, self.state.averaged_steps = {}, 0
        torch.set_rng_state(blob["rng"])


def _robust_sd(u: Tensor) -> Tensor:
    """Interquartile spread of draws [S, D] per coordinate, as a normal sd."""
    q25, q75 = torch.quantile(u, 0.25, 0), torch.quantile(u, 0.75, 0)
    return ((q75 - q25) / 1.349).clamp(1e-3, 10.0)


def fit(model, data: dict, settings: FitSettings | None = None, callback=None,
        checkpoint_path: str | None = None, resume: bool = False) -> FitResult:
    """Fit `model` to `data` ({name: array}) by LFVI (or VI); see `Trainer`."""
    return Trainer(model, data, settings).run(callback, checkpoint_path, resume)
