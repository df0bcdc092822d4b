"""The contrastive ratio: r(x, c, θ) ≈ log p(x | c, θ) + h(x, c), one row at a time.

θ is what the likelihood reads (`Plan.ratio_globals`, `Plan.ratio_locals`): its
latent parents, so a hierarchical model's hyper-parameters, which the data see
only through the locals, never enter the ratio. c are the row's covariates.

Training never looks at the data's observations. Pairs (θ_a, θ_b) are drawn
exchangeably for a data row's covariates, x_a simulated from θ_a and x_b from θ_b,
and the network learns which of the two made each (the pair loss): its optimum is
log p(x | c, θ) + h(x, c) for any h, whatever the distribution the pairs came from,
so pairs may come from wherever they teach most:

* independent pairs: globals from q widened to the scale of one row's likelihood
  (proposals.py), a `prior_mix` fraction from the prior; locals from the row's
  q(z | x_n, β) at twice its width, a `prior_mix` fraction from p(z | β);
* local pairs c ± δ around a centre (a particle of the covering population, else a
  q draw), δ a quarter of the widening: both are plausible, and which one made x
  depends on the likelihood's fine detail.

**Score calibration.** For the true likelihood E_{x ~ p(x | θ)}[∇_θ log p(x | θ)] = 0
(the score has mean zero), whatever h(x) is. The learnt ratio's score does not quite:
a small systematic error in ∂r/∂θ is the same sign on every row, so the q step's sum
over N rows multiplies it by N, while the posterior's sd shrinks only as 1/√N (a
hierarchical logistic regression's shared slope sat 1.1 posterior sds off). So the
mean score c = E[∇_θ r(x, θ)] over the local pairs' simulations, which lie where q
is, is tracked (an exponential average) and the q step reads r(x, θ) − c · u(θ),
u the coordinates q moves in (score_calibration.py): errors that average to zero
over the data's distribution then add only as √N.

    ratio = ContrastiveRatio(view, plan, settings, global_guide, local_guide, proposal)
    loss, acc = ratio.update(step)
    r = ratio.log_lik(x, globals, z, rows)        # [S, M], for the q step
"""
from __future__ import annotations

import math

import torch

from .elements import ElementLayout
from .local_guide import coordinates_at
from .pair_store import PairStore
from .checks import forked_rng
from .plan import scaling_simulations
from .ratio import RatioLearner, classifier_loss, pair_loss
from .score_calibration import ScoreCalibration

Tensor = torch.Tensor
# Fraction of the pairs of an update that are local pairs (docs/lfvi.md, "The contrastive ratio").
LOCAL_PAIRS = 0.5
# Local pairs are this fraction of the widening (or of the population's Metropolis scale).
PAIR_SCALE = 0.25
# The locals' proposal: q(z | x_n, β) at this multiple of its sd.
LOCAL_WIDEN = 2.0


class ContrastiveRatio(RatioLearner):
    """The ratio network, its optimiser and moving average, and its training data."""

    def __init__(self, view, plan, settings, global_guide, local_guide, proposal):
        self.view, self.plan = view, plan
        self.global_guide, self.local_guide, self.proposal = global_guide, local_guide, proposal
        self.z_parents = [b for b in view.z_blocks if b.name in plan.ratio_locals]
        self.g_parents = [n for n in view.g_shapes if n in plan.ratio_globals]
        # a row whose values are independent given it is scored one value at a time
        self.elements = ElementLayout(view, plan.ratio_elements) if plan.ratio_elements else None
        x_dim = self.elements.width if self.elements else view.x_dim
        super().__init__(x_dim + self.theta_dim, settings, plan.ratio_ema, view.device)
        self.covering = None        # set by the trainer when the plan has a population
        self.store = PairStore(plan.budget, settings.steps, scaling_simulations(view), 2 * (plan.ratio_simulations // 2))
        self.last = (torch.zeros(()), torch.zeros(()))
        self.dropped = torch.zeros((), device=view.device)   # non-finite simulations skipped
        self.simulated = torch.zeros((), device=view.device)
        self.calibration = ScoreCalibration(self.theta_dim).to(view.device)
        self._rescaled_at = -1

    # ------------------------------------------------------------ features
    @property
    def theta_dim(self) -> int:
        if self.plan.ratio_inputs == "inputs":
            return self.view.input_dim
        if self.plan.ratio_inputs == "prediction":
            return self.view.prediction_dim
        return sum(self.view.g_flat_dims[n] for n in self.g_parents) + sum(b.width for b in self.z_parents)

    def theta(self, globals: dict, z: Tensor | None, rows: dict, per_row: bool = False) -> Tensor:
        """θ's features [S, M, Dθ] at these globals and flat locals z ([S, M, Dz]):
        the likelihood's inputs, its latent parents, or the prediction (plan.py);
        `per_row`: row k at draw k, M = 1."""
        view = self.view
        if self.plan.ratio_inputs == "inputs":
            return view.likelihood_inputs(globals, z, rows, per_row)
        if self.plan.ratio_inputs == "prediction":
            return view.prediction(globals, rows, per_row)
        s = next(iter(globals.values())).shape[0] if globals else (z.shape[0] if z is not None else 1)
        lead = (s, 1 if per_row else view.rows_in(rows))
        parts = [self._local_parents(z)] if self.z_parents else []
        if self.g_parents:
            g = torch.cat([globals[n].reshape(s, -1).float() for n in self.g_parents], -1)
            parts.append(g[:, None, :].expand(*lead, -1))
        return torch.cat(parts, -1) if parts else torch.zeros(*lead, 0, device=view.device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {**super().modules(), "score_calibration": self.calibration}

    def state_dict(self) -> dict:
        """Checkpoint state beyond the modules: the stored pairs and counters."""
        return {"store": self.store.state_dict(), "dropped": self.dropped, "simulated": self.simulated}

    def load_state_dict(self, state: dict) -> None:
        self.store.load_state_dict(state["store"])
        self.dropped, self.simulated = state["dropped"], state["simulated"]

    def _local_parents(self, z: Tensor) -> Tensor:
        out, start = [], 0
        for block in self.view.z_blocks:
            if block in self.z_parents:
                out.append(z[..., start:start + block.width])
            start += block.width
        return torch.cat(out, -1)

    def log_lik(self, x: Tensor, theta: Tensor, averaged: bool = True) -> Tensor:
        """r(x, θ) [S, M] for features x [S, M, Fx] and θ [S, M, Dθ]; `averaged`: the
        moving average, score-calibrated (what q reads), else the network itself."""
        theta = theta.expand(*x.shape[:2], -1)
        logit = self._logit(x, theta, averaged)
        return logit - self.calibration.correction(theta) if averaged else logit

    def _logit(self, x: Tensor, theta: Tensor, averaged: bool) -> Tensor:
        """The network's logit of rows x [..., Fx] at θ [..., Dθ]: the sum of the
        values' logits when the plan scores one value at a time."""
        logit = self.apply(self._inputs(x, theta), averaged)
        return logit if self.elements is None else logit.sum(-1)

    def _inputs(self, x: Tensor, theta: Tensor) -> Tensor:
        """The network's input for rows x [..., Fx] at θ [..., Dθ]: [..., Fx + Dθ], or
        one per value of the row [..., K, Fe + Dθ] when the plan scores values."""
        if self.elements is None:
            return torch.cat([x, theta], -1)
        values = self.elements.split(x)
        theta = theta.unsqueeze(-2).expand(*theta.shape[:-1], values.shape[-2], theta.shape[-1])
        return torch.cat([values, theta], -1)

    def log_lik_all(self, globals: dict) -> Tensor:
        """Σ_n r(x_n, β) over every data row [K] (the covering population's target)."""
        view = self.view
        rows = view.rows(None)
        k = next(iter(globals.values())).shape[0]
        x = view.x_features(view.with_data(rows, 1)).expand(k, -1, -1)
        return view.n_rows * self.log_lik(x, self.theta(globals, None, rows)).mean(-1)

    def fit_scaling(self, x_blocks: list[Tensor], prior: dict, sim: dict, rows: dict) -> None:
        """Standardise the inputs from prior simulations (and the data's features)."""
        z = self.view.z_flat(sim) if self.view.z_blocks else None
        theta = self.theta(prior, z, rows)
        if self.elements is not None:
            x_blocks = [self.elements.split(b).flatten(0, -2) for b in x_blocks]
        self.fit_input_scaling(x_blocks + [theta.flatten(0, -2)])
        self.calibration.set_supports(self._supports(prior, rows))

    def _supports(self, prior: dict, rows: dict) -> list:
        """The support of each coordinate of θ, in θ's order: a latent's is its
        prior's, wherever the ratio reads it (as a parent or as a likelihood input:
        a positive input calibrated on its own value drove a fit's df to 1e23); a
        computed input's (a `let`, the prediction) is the real line."""
        real = torch.distributions.constraints.real
        if self.plan.ratio_inputs == "prediction":
            return [real] * self.theta_dim
        model = self.view.model
        if self.plan.ratio_inputs == "inputs":
            reads = [(n, math.prod(model.nodes[n].shape)) for n in model.likelihood_inputs]
        else:
            reads = [(b.name, b.width) for b in self.z_parents] + \
                    [(n, self.view.g_flat_dims[n]) for n in self.g_parents]
        with forked_rng(self.view.device):
            local = self.view.local_priors(prior, rows) \
                if any(n in model.local_names for n, _ in reads) else {}
        supports = []
        for name, width in reads:
            if name in model.global_names:
                dist = model.prior(name, prior)
            else:
                dist = local.get(name)
            supports += [dist.support if dist is not None else real] * width
        return supports

    # ------------------------------------------------------------ training
    def update(self, k: int, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One ratio update on fresh pairs, or under a simulation budget on stored
        ones once this step's share is spent (pair_store.py): (loss, accuracy). `u`:
        q's unconstrained draws of this step, reused (detached) as centres."""
        store = self.store
        batch = None
        if store.may_simulate(k, int(self.simulated)):
            with torch.no_grad():
                fresh = self._pairs(u)
            batch = fresh if store.add(fresh, keep=self.settings.reuse > 0) else None
        if batch is None:
            if store.paused or not store.train:
                return self.last
            batch = store.sample()
        if self._rescale_due(k):
            self._restandardise(k, *batch)
        self.last = self._learn(k, *batch)
        self._calibrate(k, batch)
        if store.check(k, self.net, self._held_out_loss):
            self.sync_optimiser()       # the best state may have had fewer networks
            self.average.restart()
        return self.last

    @torch.no_grad()
    def held_out_margins(self, u: Tensor | None) -> Tensor:
        """The logit of the right answer on fresh pairs at q's draws `u`, which the
        network never trained on: the verdict's calibration evidence (advice.py)."""
        counters = (self.dropped.clone(), self.simulated.clone())
        x, theta, partner, ok = self._pairs(u)
        self.dropped, self.simulated = counters
        margin = self.log_lik(x, theta, False) - self.log_lik(x, theta[partner], False)
        return margin.reshape(-1)[ok.reshape(-1)]

    def _rescale_due(self, k: int) -> bool:
        """The first update of every `plan.ratio_rescale_every`-th step after the first."""
        every = self.plan.ratio_rescale_every
        due = bool(every) and k > 0 and k % every == 0 and k != self._rescaled_at
        self._rescaled_at = k if due else self._rescaled_at
        return due

    def _restandardise(self, k: int, x: Tensor, theta: Tensor, partner: Tensor, ok: Tensor) -> None:
        """Follow this batch of pairs' finite simulations (a new network in their
        units while the plan allows: RatioLearner.restandardise)."""
        inputs = self._inputs(x, theta.expand(*x.shape[:2], -1))[ok]
        self.restandardise(inputs.reshape(-1, inputs.shape[-1]), k < self.plan.ratio_stages_until,
                           self._terms())

    def _terms(self) -> Tensor:
        """Per network input, the number of log-likelihood terms that share its value:
        a global latent parent is read by every value of every row; a row's own
        features, its locals and the computed inputs are a term's own."""
        terms = torch.ones(self.net.in_dim, device=self.view.device)
        if self.plan.ratio_inputs == "parents" and self.g_parents:
            width = sum(self.view.g_flat_dims[n] for n in self.g_parents)
            values = self.elements.size if self.elements is not None else 1
            terms[-width:] = float(self.view.n_rows * values)
        return terms

    def _held_out_loss(self, x, theta, partner, ok) -> Tensor:
        return self._judge(self.log_lik(x, theta, False), self.log_lik(x, theta[partner], False), ok)[0]

    def _calibrate(self, k: int, batch) -> None:
        """Update the mean score c from the local pairs' simulations (module docstring)."""
        x, theta, _, ok = batch
        num = x.shape[0]
        half, local = num // 2, int(LOCAL_PAIRS * (num // 2))
        idx = torch.cat([torch.arange(half - local, half), torch.arange(num - local, num)]).to(x.device)
        keep = ok[idx, 0]
        if not bool(keep.any()) or self.theta_dim == 0:
            return
        t = theta[idx][keep].detach().requires_grad_(True)
        logit = self._logit(x[idx][keep], t, averaged=True)
        score, = torch.autograd.grad(logit.sum(), t)
        dim = t.shape[-1]
        self.calibration.update(k, score.reshape(-1, dim), t.detach().reshape(-1, dim))

    def replay(self, k: int) -> tuple[Tensor, Tensor]:
        """An update on the pairs of an earlier step (valid: the pair loss's optimum does
        not depend on where the pairs were drawn), for an expensive simulator."""
        return self._learn(k, *self.store.sample())

    def _learn(self, k: int, x: Tensor, theta: Tensor, partner: Tensor, ok: Tensor):
        logit_true = self.log_lik(x, theta, averaged=False)
        logit_other = self.log_lik(x, theta[partner], averaged=False)
        return self.learn(k, *self._judge(logit_true, logit_other, ok))

    def _judge(self, logit_true: Tensor, logit_other: Tensor, ok: Tensor) -> tuple[Tensor, Tensor]:
        """The pair (or single) loss over the finite simulations, and the accuracy."""
        judge = pair_loss if self.settings.contrast == "pair" else classifier_loss
        keep = ok.float()
        return judge(logit_true, logit_other, self.settings.ratio.loss, keep / keep.sum().clamp_min(1.0))

    def _pairs(self, u: Tensor | None):
        """Features of 2P simulations, their θ, each one's partner index and whether
        the simulation is finite: ([2P, 1, Fx], [2P, 1, Dθ], [2P], [2P, 1])."""
        view = self.view
        num = 2 * (self.plan.ratio_simulations // 2)
        rows = self.pair_rows(num // 2)
        u_pairs, scale = self._global_pairs(num, u)
        globals = self.global_guide.constrain(u_pairs)[0] if view.g_shapes else {}
        z = self._local_pairs(globals, rows, num) if view.z_blocks else None
        sim = view.simulate_rows(globals, rows, view.z_unflat(z) if z is not None else None)
        x = view.x_features(sim)
        theta = self.theta(globals, z[:, None] if z is not None else None, rows, per_row=True)
        ok = torch.isfinite(x).all(-1) & torch.isfinite(theta).all(-1)
        x = torch.where(ok[..., None], x, torch.zeros_like(x))
        self.dropped += (~ok).sum()
        self.simulated += ok.numel()
        half = num // 2
        partner = torch.cat([torch.arange(half, num), torch.arange(half)]).to(x.device)
        return x, theta, partner, ok

    def pair_rows(self, pairs: int) -> dict[str, Tensor]:
        """Each pair's data row (its covariates, and the data the locals' proposal
        reads), both members alike: {name: [2P, ...]}."""
        view = self.view
        if not view.has_plate:
            rows = view.rows(None)
            return {n: v.expand(2 * pairs, *v.shape[1:]) for n, v in rows.items()}
        idx = torch.randint(view.n_rows, (pairs,), device=view.device)
        return view.rows(torch.cat([idx, idx]))

    def _global_pairs(self, num: int, pool: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Unconstrained globals [num, Du]: the first half are members a, the second
        their partners b; independent pairs first, then local pairs. `pool`: q's
        draws of this step, shuffled and shared by the step's updates."""
        if not self.view.g_shapes:
            return torch.zeros(num, 0, device=self.view.device), None
        half = num // 2
        local = int(LOCAL_PAIRS * half)
        if pool is not None:
            pool = pool[torch.randperm(pool.shape[0], device=pool.device)]
        independent = 2 * (half - local)
        broad, sd = self.proposal.broad(independent, _take(pool, 0, independent), self.settings.prior_mix)
        centres, step = self._centres(local, _take(pool, independent, local), sd)
        delta = PAIR_SCALE * step * torch.randn_like(centres)
        a = torch.cat([broad[:half - local], centres + delta])
        b = torch.cat([broad[half - local:], centres - delta])
        return torch.cat([a, b]), sd

    def _centres(self, num: int, u: Tensor | None, sd: Tensor) -> tuple[Tensor, Tensor]:
        """Centres of local pairs and their scale: the covering population's particles
        and Metropolis scale when there is one, else q's draws and the widening."""
        if self.covering is not None:
            centres = self.covering.local_pairs(num)[:num]
            return centres, torch.ones_like(centres[0])
        draws = u if u is not None else self.global_guide.rsample(num)[2]
        return draws.detach(), sd

    def _local_pairs(self, globals: dict, rows: dict, num: int) -> Tensor:
        """Flat locals [num, Dz] in the layout of `_global_pairs`: independent members
        from the row's q at `LOCAL_WIDEN` times its sd (a `prior_mix` fraction from
        p(z | β)); local pairs c ± δ, c and δ's scale symmetric in the two members
        (so the pair stays exchangeable)."""
        view, half = self.view, num // 2
        local = int(LOCAL_PAIRS * half)
        x = view.x_features(view.with_data(rows, 1))[0][:, None]          # [num, 1, Fx]
        mean, log_sd = self.local_guide.moments(x, view.g_flat(globals))
        sd = LOCAL_WIDEN * log_sd.exp()
        v = mean + sd * torch.randn_like(mean)
        a, b = slice(half - local, half), slice(num - local, num)
        centre, step = 0.5 * (mean[a] + mean[b]), 0.5 * PAIR_SCALE * (sd[a] + sd[b])
        delta = step * torch.randn_like(centre)
        v[a], v[b] = centre + delta, centre - delta
        coords = self._coordinates(globals, rows)
        z = (coords.forward(v)[0] if coords is not None else v)[:, 0]
        if self.settings.prior_mix <= 0:
            return z
        from_prior = torch.rand(num, 1, device=z.device) < self.settings.prior_mix
        from_prior[a] = False
        from_prior[b] = False
        prior_z = view.z_flat(view.simulate_rows(globals, rows))[:, 0]
        return torch.where(from_prior, prior_z, z)

    def _coordinates(self, globals: dict, rows: dict):
        return coordinates_at(self.view, self.plan.local_coordinates, globals, rows, per_row=True)


def _take(pool: Tensor | None, start: int, num: int) -> Tensor | None:
    """Rows start..start+num of the pool, or None when it has too few."""
    if pool is None or pool.shape[0] < start + num:
        return None
    return pool[start:start + num]
