"""The LFVI training loop: init / step / run, with checkpoints and a progress hook.

    trainer = Trainer(model, {"x": x}, FitSettings(steps=3000))
    print(trainer.plan.describe())                      # every automatic choice
    result = trainer.run(callback=lambda row: print(row.step))   # -> FitResult

The trainer executes a plan (plan.py) with the parts components.py builds from
it. One step draws S = `particles` globals
from q(β) and M = `batch` data rows, so its cost does not depend on N. It updates
the ratio estimator `plan.ratio_updates` times (contrastive.py or empirical.py),
then q(β), q(z | x, β) and point parameters (objective.py). See docs/lfvi.md.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace

import torch

from .advice import ADVICE
from .checkpoint import load_checkpoint, save_checkpoint
from .checks import MomentTrace, check_fit
from .components import make_covering, make_local_guide, make_ratio, standardise_inputs, start_global_guide
from .data import ModelView
from ..runtime.externs import ExternFailures
from ..simulation import seed_everything
from .divergence import DivergenceWatch, check_parameters
from .families import GlobalGuide
from .guide_entries import resolve_guide
from .interrupts import FitInterrupted, deferred_interrupts
from .objective import Objective
from .plan import full_batch, make_plan
from .polish import polish_locals
from .proposals import GlobalProposal
from .result import FitResult, TraceRow
from .schedule import ParameterAverage, Schedule
from .settings import FitSettings

Tensor = torch.Tensor

# Draws of q(β) that set the local guide's scaling of its β inputs.
RESCALE_DRAWS = 1024


@dataclass
class TrainState:
    """Where training stands: the step counter, the trace and the q step's rows."""

    step: int = 0
    trace: list[TraceRow] = field(default_factory=list)
    seconds: float = 0.0
    # the q step's rows: a random permutation of the rows and how far it is used
    row_order: Tensor | None = None
    row_pos: int = 0


class Trainer:
    """Builds guides, ratio and optimisers for a model and its data, and trains them."""

    def __init__(self, model, data: dict, settings: FitSettings | None = None,
                 identity: dict | None = None):
        """`identity`: the model's and data's sha256 (provenance.py), kept in checkpoints
        so that a resume with another model or data set is refused."""
        s = settings or FitSettings()
        s.validate()
        self.settings = s = replace(s, guide=resolve_guide(model, s.guide))
        self.identity = dict(identity or {})
        # externs may draw from numpy's and Python's generators: the seed is theirs too
        seed_everything(s.seed)
        self.model = model
        # an extern's rows that raise are failed simulations, dropped and counted
        # (the simulator's own region of failure); a call whose every row raises stops the fit
        model.extern_failures = ExternFailures() if getattr(model, "externs", ()) else None
        self.view = ModelView.of_fit(model, data, s)
        # a parameter the data reach only through argmax & co. has no gradient (W0171)
        self.params = [p for n, p in model.named_parameters()
                       if p.requires_grad and n not in model.untrained_params]
        self.plan = make_plan(self.view, s, bool(self.params))
        families = {n: f for n, f in s.guide.items() if n in model.global_names}
        self.global_guide = GlobalGuide(model, families, full_batch(self.view, s)).to(self.view.device)
        self.local_guide = make_local_guide(model, self.view, self.plan, s)
        self.state = TrainState()
        start_global_guide(self.view, self.global_guide, self.plan)
        self.proposal = GlobalProposal(self.view, self.global_guide, s.spread) if self.view.g_shapes else None
        self.ratio = make_ratio(self.view, self.plan, s, self.global_guide, self.local_guide, self.proposal)
        # the simulator's cost per row, for the plan's forecast of the fit's simulating
        self.seconds_per_simulation = standardise_inputs(self.view, self.local_guide, self.ratio)
        self.covering = make_covering(model, self.view, self.plan, self.global_guide, self.ratio)
        q_params = [p for m in (self.global_guide, self.local_guide) if m is not None for p in m.parameters()]
        groups = [{"params": p} for p in (q_params, self.params) if p]
        # fused: one kernel for all tensors (docs/benchmarks.md)
        self.q_opt = torch.optim.Adam(groups, lr=s.lr, fused=True) if groups else None
        self.objective = Objective(self.view, self.plan, self.global_guide, self.local_guide, self.ratio,
                                   self.covering, self.params, self.q_opt)
        self.schedule = Schedule(s.steps, self.plan.warmup_steps, s.final_lr, s.anneal, self.view.n_rows)
        self.average = ParameterAverage(self.plan.average_from, s.steps)
        self.moments = MomentTrace(self.plan.average_from, s.steps)
        self.divergence = DivergenceWatch(self.view.device)
        # the local guide's training after the loop (polish.py), once it has run, and
        # the locals' means' error it measured last (advice.py reads it, not again)
        self.polish = None
        self.local_error: float | None = None
        # how the fit's posterior draws were resampled (importance.py), once made
        self.resampling = None

    # ------------------------------------------------------------ parts
    @property
    def mode(self) -> str:
        """The ratio's mode, or "exact" when the likelihood is known (method vi)."""
        return self.plan.ratio or "exact"

    @property
    def ratio_inputs(self) -> str:
        return self.plan.ratio_inputs

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every module a checkpoint holds."""
        mods = {"model": self.model, **self.guides()}
        if self.ratio is not None:
            mods.update(self.ratio.modules())
        return mods

    def guides(self) -> dict[str, torch.nn.Module]:
        """q's modules (what the parameter average covers)."""
        mods = {"global": self.global_guide}
        if self.local_guide is not None:
            mods["local"] = self.local_guide
        return mods

    # ------------------------------------------------------------ one step
    def step(self) -> dict[str, Tensor]:
        """One training step (device tensors, no host sync): elbo, ratio_loss, ratio_acc."""
        k, out = self.state.step, {}
        self.schedule.set_lr(k, [(self.q_opt, self.settings.lr),
                                 (self.ratio.opt if self.ratio else None, self.settings.ratio_lr)])
        q_active = self.q_opt is not None and k >= self.plan.warmup_steps
        self.global_guide.set_shaping(k >= self.plan.flow_shape_from)
        draws = self._q_draws() if q_active else None
        if self.ratio is not None:
            self._ratio_step(k, out)
        if q_active and self._guide_rescale_due(k):
            self.local_guide.rescale_globals(self._q_globals_flat(), self.q_opt)
        if q_active:
            rows = self.batch_rows()
            out["elbo"], out["q_loss"] = self.objective.step(draws, rows, self.schedule.temperature(k))
            self.average.update(k, self.guides())
        self.divergence.flag(out, k)
        self.state.step = k + 1
        return out

    def _guide_rescale_due(self, k: int) -> bool:
        """Every `plan.guide_rescale_every` steps from q's first step until the
        parameter average starts (the average must see one parameterisation)."""
        every = self.plan.guide_rescale_every
        return bool(every) and k < self.plan.average_from and (k - self.plan.warmup_steps) % every == 0

    @torch.no_grad()
    def _q_globals_flat(self) -> Tensor:
        """Draws of q(β) as the local guide reads them [RESCALE_DRAWS, g_dim]."""
        return self.view.g_flat(self.global_guide.rsample(RESCALE_DRAWS)[0])

    def _ratio_step(self, k: int, out: dict) -> None:
        if self.covering is not None:
            self.covering.track()
        pool = self._proposal_pool()
        for _ in range(self.plan.ratio_updates):
            out["ratio_loss"], out["ratio_acc"] = self.ratio.update(k, pool)
        for _ in range(self.plan.reuse):
            self.ratio.replay(k)

    @torch.no_grad()
    def _proposal_pool(self) -> Tensor | None:
        """Unconstrained draws of q(β) that this step's ratio updates widen (one pass
        of the flow a step, not one an update)."""
        if not self.view.g_shapes:
            return None
        return self.global_guide.rsample(max(self.plan.ratio_simulations, self.settings.particles))[2]

    def _q_draws(self) -> tuple[dict, Tensor | float, Tensor | None]:
        """This step's reparameterised draws from q(β): (globals, log q, u)."""
        if not self.view.g_shapes:
            return {}, 0.0, None
        return self.global_guide.rsample(self.settings.particles)

    def batch_rows(self) -> dict[str, Tensor]:
        """The q step's rows: the next M of a random permutation of all rows, redrawn
        when used up (random reshuffling): every row then enters q's fit equally often.
        With replacement the rows' counts over the averaged steps vary by ±10 %, and the
        averaged q is the posterior of that randomly reweighted data set (≈ 0.1 sd error
        on linear regression even with the exact likelihood)."""
        view, st = self.view, self.state
        if not view.has_plate:
            return view.rows(None)
        m, parts = min(self.settings.batch, view.n_rows), []
        while m > 0:
            if st.row_order is None or st.row_pos >= view.n_rows:
                st.row_order = torch.randperm(view.n_rows, device=view.device)
                st.row_pos = 0
            take = st.row_order[st.row_pos:st.row_pos + m]
            st.row_pos += len(take)
            m -= len(take)
            parts.append(take)
        return view.rows(torch.cat(parts))

    # ------------------------------------------------------------ loop
    def run(self, callback=None, checkpoint_path: str | None = None,
            resume: bool = False, polish_callback=None) -> FitResult:
        """Train to `settings.steps`; `callback(row: TraceRow)` at each log point, then
        `polish_callback(PolishReport)` while the local guide trains on (polish.py).
        Ctrl-C ends the step in flight, saves a checkpoint and raises FitInterrupted."""
        if resume and checkpoint_path and os.path.exists(checkpoint_path):
            load_checkpoint(self, checkpoint_path)
        s, window = self.settings, []
        t0 = time.perf_counter() - self.state.seconds
        with deferred_interrupts() as interrupt:
            while self.state.step < s.steps:
                window.append(self._guarded_step(window))
                k = self.state.step
                row = None
                if k % s.log_every == 0 or k == s.steps:
                    row = self._log(window, k, time.perf_counter() - t0)
                    window = []
                self.moments.record(k, self.global_guide)
                if checkpoint_path and (k % s.checkpoint_every == 0 or k == s.steps or interrupt.raised):
                    self._save(checkpoint_path, time.perf_counter() - t0)
                if interrupt.raised:
                    raise FitInterrupted(k, checkpoint_path)
                if row is not None and callback is not None:
                    callback(row)
            if self.plan.polish_locals and self.polish is None:
                self.polish = polish_locals(self, interrupt, polish_callback)
                if interrupt.raised:
                    raise FitInterrupted(self.state.step, checkpoint_path)
                if checkpoint_path and self.polish is not None:
                    self._save(checkpoint_path, time.perf_counter() - t0)
        check_parameters(self.modules(), self.state.step)
        self.state.seconds = time.perf_counter() - t0
        return self.result(verdict=s.checks)

    def record_wall_time(self, path: str | None, seconds: float) -> None:
        """Write the fit's whole wall time (set-up and end checks included) into the
        final checkpoint, so that a resumed fit adds to what the first run reported."""
        if path and os.path.exists(path):
            self._save(path, seconds)

    def _save(self, path: str, seconds: float) -> None:
        """A checkpoint, only of a state that is finite and has not run away: the
        checkpoint on disk is then always one a fit can continue from."""
        self.divergence.check({})
        check_parameters(self.modules(), self.state.step)
        self.state.seconds = seconds
        save_checkpoint(self, path)

    def _guarded_step(self, window: list[dict]) -> dict[str, Tensor]:
        """A step; an error caused by an earlier NaN is reported as that NaN."""
        try:
            return self.step()
        except (ValueError, RuntimeError):
            self.divergence.check(window[-1] if window else {})
            raise

    def _log(self, window: list[dict], step: int, seconds: float) -> TraceRow:
        keys = ("elbo", "q_loss", "ratio_loss", "ratio_acc")
        means = {key: torch.stack([w[key].float() for w in window if key in w]).mean()
                 for key in keys if any(key in w for w in window)}
        self.divergence.check(means)
        values = {k: float(v) for k, v in means.items()}
        row = TraceRow(step, values.get("elbo", float("nan")), values.get("ratio_loss", float("nan")),
                       values.get("ratio_acc", float("nan")), seconds)
        self.state.trace.append(row)
        return row

    def result(self, verdict: bool = False) -> FitResult:
        """The fit so far, with q's parameters averaged over the final steps (and the
        trust checks' verdict when `verdict`)."""
        guides = self.average.averaged_copies(self.guides())
        guides["global"].set_shaping(True)      # splines still at the identity if not yet shaping
        target = self.covering.log_posterior_u if self.plan.resample else None
        result = FitResult(self.model, guides["global"], guides.get("local"), self.state.trace,
                           self.mode, self.settings, self.state.seconds, self.plan, target)
        if verdict:
            if target is not None:         # the fit's draws, made once; the advice reports how
                result.posterior()
                self.resampling = result.resampling
            result.verdict = check_fit(self, ADVICE)
        return result


def fit(model, data: dict, settings: FitSettings | None = None, callback=None,
        checkpoint_path: str | None = None, resume: bool = False) -> FitResult:
    """Fit `model` to `data` ({name: array}) by LFVI (or VI); see `Trainer`."""
    return Trainer(model, data, settings).run(callback, checkpoint_path, resume)
