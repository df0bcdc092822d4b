"""The empirical ratio (the paper's objective): the model against the data's rows.

For S globals and M data rows a step, a classifier separates

* p-side: (x', z') ~ p(x, z | β), one *joint* simulation per row from the same β
  (simulating x' from a z drawn apart from it would break their dependence), covariates
  from the data rows;
* q-side: (x_m, z_m), x_m the data rows (q(x) = the empirical distribution) and
  z_m ~ q(z | x_m, β);

at the same β on both sides. Its logit estimates log p(x, z | β) − log q(x) −
log q(z | x, β); with an explicit local guide the last term is known and held
fixed, so the network converges to log p(x, z | β) − log q(x), which does not
move with q. It is what implicit locals (no density) and point parameters (whose
gradient is the GAN generator's, docs/lfvi.md) need.

    ratio = EmpiricalRatio(view, plan, settings, global_guide, local_guide, proposal)
    loss, acc = ratio.update(step)
"""
from __future__ import annotations

import torch

from .ratio import RatioLearner, classifier_loss

Tensor = torch.Tensor


class EmpiricalRatio(RatioLearner):
    """The ratio r(x, z, β) against the data's rows."""

    def __init__(self, view, plan, settings, global_guide, local_guide, proposal):
        self.view, self.plan = view, plan
        self.global_guide, self.local_guide, self.proposal = global_guide, local_guide, proposal
        b_dim = view.prediction_dim if plan.ratio_inputs == "prediction" else view.g_dim
        super().__init__(view.x_dim + view.z_dim + b_dim, settings, plan.ratio_ema, view.device)

    # ------------------------------------------------------------ features
    def beta_inputs(self, globals: dict, rows: dict, g: Tensor) -> Tensor:
        """What the ratio reads of β: the flat globals [S, Dg], or the model's
        noise-free prediction per row [S, M, P] (docs/lfvi.md, "ratio inputs")."""
        return self.view.prediction(globals, rows) if self.plan.ratio_inputs == "prediction" else g

    @staticmethod
    def features(x: Tensor, z: Tensor | None, b: Tensor) -> Tensor:
        """The input [S, M, F]: x, z and β's inputs `b` ([S, D] or per row [S, M, D])."""
        b = b if b.dim() == 3 else b[:, None, :].expand(*x.shape[:2], -1)
        return torch.cat([x] + ([z] if z is not None else []) + [b], -1)

    def fit_scaling(self, x_blocks: list[Tensor], prior: dict, sim: dict, rows: dict) -> None:
        """Standardise the inputs from prior simulations (and the data's features)."""
        view = self.view
        blocks = list(x_blocks)
        if view.z_blocks:
            blocks.append(view.z_flat(sim))
        b = self.beta_inputs(prior, rows, view.g_flat(prior))
        self.fit_input_scaling(blocks + [b.flatten(0, -2)])

    def row_terms(self, globals: dict, rows: dict, x: Tensor, g: Tensor, z, log_qz) -> Tensor:
        """r(x, z, β) − log q(z | x, β) per row [S, M] (the network alone for an
        implicit guide, whose density is unknown)."""
        logit = self.apply(self.features(x, z, self.beta_inputs(globals, rows, g)))
        return logit - log_qz if log_qz is not None else logit

    def joint_logit(self, x: Tensor, z: Tensor | None, g: Tensor, b: Tensor) -> Tensor:
        """Estimated log p(x, z | β) − log q(x, z | β): the network plus, with an
        explicit local guide, the exact −log q(z | x, β) offset."""
        logit = self.apply(self.features(x, z, b))
        if z is not None and self.local_guide.has_density:
            logit = logit - self.local_guide.log_prob(z, x, g)
        return logit

    # ------------------------------------------------------------ training
    def update(self, k: int, u: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One update: (loss, accuracy). `u`: this step's unconstrained q draws,
        reused (detached) as the centres of the widened globals."""
        view = self.view
        rows, draws = self._batch()
        with torch.no_grad():
            globals = (self.global_guide.constrain(self.proposal.broad(draws, u)[0])[0]
                       if view.g_shapes else {})
            sim = self._simulate(globals, rows, draws)
            g = view.g_flat(globals) if view.g_shapes else torch.zeros(draws, 0, device=view.device)
            b = self.beta_inputs(globals, rows, g)
        logit_p, logit_q = self._logits(sim, rows, g, b, draws)
        return self.learn(k, *classifier_loss(logit_p, logit_q, self.settings.ratio.loss))

    @torch.no_grad()
    def held_out_margins(self, u: Tensor | None) -> Tensor:
        """The logit of the right answer (model simulation or data row) on fresh
        simulations at q's draws `u`: the verdict's calibration evidence (advice.py)."""
        view = self.view
        rows, draws = self._batch()
        globals = self.global_guide.constrain(u[:draws])[0] if view.g_shapes else {}
        draws = next(iter(globals.values())).shape[0] if globals else draws
        sim = self._simulate(globals, rows, draws)
        g = view.g_flat(globals) if view.g_shapes else torch.zeros(draws, 0, device=view.device)
        logit_p, logit_q = self._logits(sim, rows, g, self.beta_inputs(globals, rows, g), draws)
        margins = torch.cat([logit_p.reshape(-1), -logit_q.reshape(-1)])
        return margins[torch.isfinite(margins)]

    def _batch(self) -> tuple[dict[str, Tensor], int]:
        """Rows drawn with replacement (`batch` of them) and `particles` draws of the
        globals; without a plate, `simulations` draws of the one observation."""
        view, s = self.view, self.settings
        if not view.has_plate:
            return view.rows(None), (s.simulations if view.g_shapes else 1)
        m = min(s.batch, view.n_rows)
        idx = torch.randint(view.n_rows, (m,), device=view.device)
        return view.rows(idx), (s.particles if view.g_shapes else 1)

    def _simulate(self, globals: dict, rows: dict, draws: int) -> dict[str, Tensor]:
        """A simulation merged with the rows' covariates: {name: [S, M, ...]}."""
        sim = self.view.simulate(globals, rows, draws)
        covs = {b.name: rows[b.name] for b in self.view.c_blocks}
        return {**self.view.with_data(covs, draws), **sim}

    def simulate(self, globals: dict, rows: dict, draws: int) -> dict[str, Tensor]:
        """What the generator gradient pushes through: a joint simulation with covariates."""
        return self._simulate(globals, rows, draws)

    def _logits(self, sim, rows, g, b, draws) -> tuple[Tensor, Tensor]:
        view = self.view
        xp = view.x_features(sim)
        xq = view.x_features(view.with_data(rows, draws))
        zp = zq = None
        if view.z_blocks:
            zp = view.z_flat(sim)
            with torch.no_grad():
                zq, _ = self.local_guide.rsample(xq, g)
        with torch.no_grad():
            off_p, off_q = self._offset(zp, xp, g), self._offset(zq, xq, g)
        return (self.apply(self.features(xp, zp, b), averaged=False) - off_p,
                self.apply(self.features(xq, zq, b), averaged=False) - off_q)

    def _offset(self, z, x, g):
        if z is None or not self.local_guide.has_density:
            return 0.0
        return self.local_guide.log_prob(z, x, g)
