"""The local guide trains on, q(β) held, until its means reach each row's optimum.

    report = polish_locals(trainer, interrupt, progress)   # PolishReport(steps, before, after) or None

The fit's result averages q over the final quarter of the steps. Where the Gaussian
local guide's means are still further than LOCAL_STEP_SDS of their sds from each
row's ELBO optimum (advice.local_mean_error: one Newton step with q's covariance),
the guide has not converged: along the ridge of a nearly collinear intercept and
slope the ELBO pulls its mean some 60× more weakly than across it, and 3,000 steps
leave it 0.24–0.36 sds off (docs/accuracy.md). The guide then trains alone on its
own per-row ELBO at draws of the averaged q(β), which stays as it is (its gradient
came from the locals' importance-weighted draws, which the guide's error biases
little), with q's learning rate, in blocks of POLISH_BLOCK steps, each block's
second half averaged; after each block the error is measured again, and training
stops once it is within POLISH_TO, or after as many steps as the fit had.
Only the guide learns, so a step costs a fraction of a fit's (no ratio updates).
A guide that is within the target at the end of the fit is left exactly as it is.
`progress(PolishReport)` hears of the start (0 steps) and of every block, the
error so far in `after`: the polish can take as long again as the loop's guide
steps, and a user watching `fit` should see it working.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .advice import LOCAL_STEP_SDS, local_mean_error
from .schedule import ParameterAverage

POLISH_BLOCK = 250
# a guide beyond the locals' target trains until well within it, not onto its edge
# (the one-step measure has noise and bias of about 0.01 sd)
POLISH_TO = LOCAL_STEP_SDS / 2


@dataclass(frozen=True)
class PolishReport:
    steps: int          # guide steps taken after the fit
    before: float       # the locals' means' error (in sds) at the end of the fit
    after: float        # and after the polish (the best block's; the loop's if none was better)


def polish_locals(trainer, interrupt=None, progress=None) -> PolishReport | None:
    """Train the averaged local guide on (module docstring) and put it in the fit's
    average; None when the guide needs none (or is not a Gaussian one)."""
    result = trainer.result()
    global_guide, guide = result.global_guide, result.local_guide
    before = trainer.local_error = local_mean_error(trainer, global_guide, guide)
    if before is None or before <= LOCAL_STEP_SDS:
        return None
    for p in global_guide.parameters():
        p.requires_grad_(False)
    objective = trainer.objective.with_guides(global_guide, guide)
    opt = torch.optim.Adam(guide.parameters(), lr=trainer.settings.lr)
    steps, error, best, best_error = 0, before, None, before
    if progress is not None:
        progress(PolishReport(0, before, before))
    while steps < trainer.settings.steps and error > POLISH_TO:
        block = min(POLISH_BLOCK, trainer.settings.steps - steps)
        average = ParameterAverage(block // 2)
        for k in range(block):
            _guide_step(trainer, objective, guide, opt)
            average.update(k, {"local": guide})
            if interrupt is not None and interrupt.raised:
                return None
        steps += block
        candidate = average.averaged_copies({"local": guide})["local"]
        error = local_mean_error(trainer, global_guide, candidate)
        if error < best_error:
            best, best_error = candidate, error
        if progress is not None:
            progress(PolishReport(steps, before, error))
    if best is None:          # no block improved on the loop's guide: it stays
        return PolishReport(steps, before, before)
    _store(trainer, best)
    trainer.local_error = best_error
    return PolishReport(steps, before, best_error)


def _guide_step(trainer, objective, guide, opt) -> None:
    """One step of the guide's own per-row ELBO on the next batch of rows."""
    s = trainer.settings.particles
    u = objective.global_guide.rsample(s)[2].detach()
    loss = -objective.local_fit(u, trainer.batch_rows(), s)
    grads = torch.autograd.grad(loss, list(guide.parameters()), allow_unused=True)
    for p, g in zip(guide.parameters(), grads):
        p.grad = g
    opt.step()


@torch.no_grad()
def _store(trainer, guide) -> None:
    """The polished guide's parameters become the fit's average of the local guide
    (what `trainer.result()` and the checkpoint give), in both halves of the
    average's window: the halves then differ in q(β) alone, which is what "ELBO
    settled" compares (advice.py)."""
    average = trainer.average
    for name, p in guide.named_parameters():
        key = f"local.{name}"
        average.values[key] = copy.deepcopy(p.detach())
        if key in average.first_half:
            average.first_half[key] = copy.deepcopy(p.detach())
