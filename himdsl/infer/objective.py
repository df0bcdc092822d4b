"""q's objective: the surrogate ELBO, with every known density exact.

    L̂ = E_q(β)[ log p(β) − log q(β) + (N / M) Σ_m ℓ_m ]

per row m, with z_m ~ q(z | x_m, β) reparameterised:

* method vi:   ℓ = log p(x | z, β) + log p(z | β) − log q(z | x, β)   (all exact)
* contrastive: ℓ = r(x, θ) + log p(z | β) − log q(z | x, β)   (r ≈ log p(x | θ) + h(x))
* empirical:   ℓ = r(x, z, β) − log q(z | x, β)   (r ≈ log p(x, z | β) − log q(x))

r's parameters are held fixed (its own dependence on q has zero expected gradient).
With the covering population q's loss adds COVERING_WEIGHT · KL(π ‖ q) / N
(covering.py), which the reported ELBO leaves out. Point parameters w follow
∇_w E_ε[−exp(−r(g(ε; w)))], the GAN generator's gradient (docs/lfvi.md).

**Several draws of the locals (`local_samples` = L > 1).** q(β) learns from the
importance-weighted bound, the locals held at their draws (Fisher gradients, below);
the local guide, frozen there, learns from its own per-row ELBO (`local_fit`), as
the partially importance-weighted auto-encoder does (PIWAE, Rainforth et al. 2018):
the bound's gradient for the guide loses its signal as L grows: trained on it,
eight_schools' locals were 0.12 sd off at CI's size, 0.06 on its ELBO.

**Fisher gradients (`global_gradient = "fisher"`, the plan's with L > 1).** q(β)'s
gradient holds the locals at their draws: by Fisher's identity ∇_β log p(x | β) =
E_{p(z | x, β)}[∇_β log p(x, z | β)], which the bound's self-normalised weights
estimate from L draws. The bound's whole gradient adds a part through the guide's
dependence on β, whose mean vanishes as L grows while its noise does not: it slowed
q(β)'s sds (schools with a covariate, N = 500: 1.2× the posterior's after 3,000
steps). With one draw (w = 1) the held locals give the complete-data gradient,
which a poor guide biases, so one draw keeps the ELBO's gradient (`"elbo"`).

**Centred score (`plan.score_centring`: asked for, on a plate).** A likelihood's score has mean
zero on its own simulations, E_{x ~ p(x | θ)}[∇_θ log p(x | θ)] = 0; the learnt
ratio's does not quite, and summed over N rows its mean G(θ) moves q by √N of the
posterior's sds (gamma_wait: 0.7 sd along its shape–scale ridge). So each row's
term gains r(x̃, θ) − r(x̃, θ)|held, x̃ simulated at the same draw and row: zero in
value, −∇r(x̃, θ) in gradient, and q follows Σ_n ∇r(x_n, θ) − N G(θ). For a
likelihood the added part is zero on average; a ratio off by a function of θ alone
(a score too steep away from the data's θ, which reads as too much curvature) is
then right. score_calibration.py's constant tilt c · u(θ) cancels within the pair:
this is its local, per-row form. The surrogate ELBO the trace reports is unchanged.

    objective = Objective(view, plan, guides, ratio, covering, params)
    elbo, loss = objective.step(draws, rows, temperature)
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from .covering import COVERING_WEIGHT
from .local_guide import coordinates_at

Tensor = torch.Tensor
# p-side logits are clamped here in the point-parameter gradient exp(−r).
MIN_GENERATOR_LOGIT = -10.0


class Objective:
    """The q step's loss and update."""

    def __init__(self, view, plan, global_guide, local_guide, ratio, covering, params, q_opt):
        self.view, self.plan = view, plan
        self.model = view.model
        self.global_guide, self.local_guide = global_guide, local_guide
        self.ratio, self.covering, self.params, self.q_opt = ratio, covering, params, q_opt

    def step(self, draws, rows: dict, temperature: float) -> tuple[Tensor, Tensor]:
        """One update of q(β), q(z | x, β) and point parameters: (the surrogate ELBO / N,
        q's whole loss / N, the covering term included)."""
        n, s = self.view.n_rows, self._draws(draws)
        fisher = self.plan.global_gradient == "fisher"
        weighted = self.plan.local_samples > 1
        with _frozen(self.local_guide if weighted else None):
            elbo = self.elbo(draws, rows, temperature, fixed_locals=fisher)
        loss = -(elbo.mean() if torch.is_tensor(elbo) else torch.tensor(elbo)) / n
        elbo_value = -loss.detach()
        if fisher or weighted:
            loss = loss - temperature * self.local_fit(draws[2], rows, s)
        if self.covering is not None:
            loss = loss + COVERING_WEIGHT * self.covering.forward_kl() / n
        self.q_opt.zero_grad(set_to_none=True)
        net = self.ratio.net if self.ratio is not None else None
        with _frozen(net):
            if loss.requires_grad:
                loss.backward()
        if self.params and self.plan.ratio == "empirical":
            self._add_generator_grads(draws[0], rows, s)
        self.q_opt.step()
        return elbo_value, loss.detach()

    def elbo(self, draws, rows: dict, temperature: float = 1.0, fixed_locals: bool = False):
        """The surrogate ELBO L̂ at each of q(β)'s draws [S] (a float without globals),
        the rows' mean term scaled to all N rows."""
        globals, log_q, _ = draws
        log_prior = self.model.log_prior(globals) if self.view.g_shapes else 0.0
        per_row = self.weighted_row_terms(globals, rows, self._draws(draws), fixed_locals=fixed_locals)
        return log_prior - log_q + temperature * self.view.n_rows * per_row.mean(-1)

    def with_guides(self, global_guide, local_guide) -> "Objective":
        """The same objective for other guides (to evaluate, not to train them)."""
        return Objective(self.view, self.plan, global_guide, local_guide, self.ratio, None, self.params, None)

    def local_fit(self, u: Tensor, rows: dict, s: int) -> Tensor:
        """The local guide's own objective: the mean per-row ELBO at q's draws `u`
        (detached: only the guide learns from it)."""
        globals = {k: v.detach() for k, v in self.global_guide.constrain(u.detach())[0].items()}
        return self.row_terms(globals, rows, s).mean()

    def _draws(self, draws) -> int:
        return draws[0][next(iter(draws[0]))].shape[0] if draws[0] else 1

    def weighted_row_terms(self, globals: dict, rows: dict, s: int, fixed_locals: bool = False) -> Tensor:
        """ℓ per row [S, M], over `plan.local_samples` = L draws of the locals: with
        L > 1 the importance-weighted bound log (1/L) Σ_l exp(ℓ_l) (Burda et al. 2016),
        which approaches log p(x_m | β) as L grows, so the local guide's error biases
        q(β) less (a hierarchical scale's sd 0.5 of the posterior's with one draw)."""
        draws = self.plan.local_samples
        if draws == 1:
            return self.row_terms(globals, rows, s, fixed_locals=fixed_locals)
        m = self.view.rows_in(rows)
        repeated = self.view.repeat_rows(rows, draws)
        terms = self.row_terms(globals, repeated, s, fixed_locals=fixed_locals).reshape(s, m, draws)
        return torch.logsumexp(terms, -1) - math.log(draws)

    def row_terms(self, globals: dict, rows: dict, s: int, fixed_locals: bool = False) -> Tensor:
        """ℓ per row [S, M] (module docstring); `fixed_locals`: z drawn without a
        gradient path (Fisher's identity for q(β)'s gradient)."""
        view = self.view
        g = view.g_flat(globals) if view.g_shapes else torch.zeros(s, 0, device=view.device)
        x = view.x_features(view.with_data(rows, s))
        if fixed_locals:
            with torch.no_grad():
                z, log_qz, locals_ = self._locals(globals, rows, x, g)
        else:
            z, log_qz, locals_ = self._locals(globals, rows, x, g)
        if self.plan.ratio == "empirical":
            return self.ratio.row_terms(globals, rows, x, g, z, log_qz)
        if self.plan.method == "vi":
            term = self._exact_likelihood(globals, rows, locals_)
        else:
            theta = self.ratio.theta(globals, z, rows)
            term = self.ratio.log_lik(x, theta)
            if self.plan.score_centring:
                term = term - self._centring(globals, locals_ if z is not None else None, rows, s, theta)
        if z is not None:
            covs = view.covariates(rows) or None
            term = term + self.model.log_local_prior(globals, locals_, covs) - log_qz
        return term if term.dim() == 2 else term[:, None]

    def _centring(self, globals: dict, locals_: dict | None, rows: dict, s: int, theta: Tensor) -> Tensor:
        """r(x̃, θ) − its value, per row [S, M]: zero, with the gradient of r at rows x̃
        simulated at θ itself (held), which a likelihood's is zero on average (module
        docstring, "Centred score"). A simulation that is not finite adds nothing."""
        view = self.view
        with torch.no_grad():
            held = {k: v.detach() for k, v in globals.items()}
            sim = (view.simulate(held, rows, s) if locals_ is None
                   else view.simulate_given(held, {k: v.detach() for k, v in locals_.items()}, rows, s))
            x_sim = view.x_features({**view.with_data(rows, s), **sim})
            ok = torch.isfinite(x_sim).all(-1)
            x_sim = torch.where(ok[..., None], x_sim, torch.zeros_like(x_sim))
        r_sim = self.ratio.log_lik(x_sim, theta) * ok
        return r_sim - r_sim.detach()

    def _locals(self, globals, rows, x, g):
        """z [S, M, Dz] ~ q(z | x, β), log q (None if implicit), and z by name."""
        if self.local_guide is None:
            return None, None, {}
        coords = self.coordinates(globals, rows, x)
        z, log_qz = self.local_guide.rsample(x, g, coords)
        return z, log_qz, self.view.z_unflat(z)

    def coordinates(self, globals: dict, rows: dict, x: Tensor):
        """The locals' prior coordinates at these globals and rows (local_guide.py)."""
        return coordinates_at(self.view, self.plan.local_coordinates, globals, rows)

    def _exact_likelihood(self, globals, rows, locals_) -> Tensor:
        data = {n: self.view.model_layout(n, v) for n, v in rows.items()}
        return self.model.log_likelihood(globals, locals_, data)

    def _add_generator_grads(self, globals, rows, s) -> None:
        """Point parameters w: ∇_w E_ε[−exp(−r(g(ε; w)))] with r frozen (docs/lfvi.md)."""
        view, ratio = self.view, self.ratio
        globals = {k: v.detach() for k, v in globals.items()}
        sim = ratio.simulate(globals, rows, s)
        g = view.g_flat(globals) if view.g_shapes else torch.zeros(s, 0, device=view.device)
        x = view.x_features(sim)
        z = view.z_flat(sim) if view.z_blocks else None
        net = ratio.net
        with _frozen(net):
            logit = ratio.joint_logit(x, z, g, ratio.beta_inputs(globals, rows, g)).clamp_min(MIN_GENERATOR_LOGIT)
            grads = torch.autograd.grad(-torch.exp(-logit).mean(), self.params, allow_unused=True)
        for p, gr in zip(self.params, grads):
            if gr is not None:
                p.grad = gr if p.grad is None else p.grad + gr


@contextmanager
def _frozen(module):
    """`module`'s parameters take no gradient inside the block (None: nothing
    frozen); each gets its own flag back after (a ratio's frozen stages stay so)."""
    params = list(module.parameters()) if module is not None else []
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
