"""Training that diverged: a loss that became NaN or inf, a parameter that ran away.

    watch = DivergenceWatch(device)
    watch.flag(losses, step)            # every step: no host synchronisation
    watch.check(last_losses)            # at log points: NonFiniteLossError naming the step
    check_parameters(modules, step)     # before a checkpoint and at the end

The step's first non-finite loss is remembered on the device, so checking every
step costs no synchronisation; the error names that step, not the log point.
"""
from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

# A weight beyond this has run away: the trainer's networks read standardised inputs
# (a weight of 1e4 saturates every unit), and a model's point weight this size makes
# its simulations leave any data's scale.
RUNAWAY = 1e4


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN or inf, or its parameters ran away."""


class DivergenceWatch:
    """The first step at which a loss was NaN or inf, kept on the device."""

    def __init__(self, device: torch.device):
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)

    def flag(self, losses: dict[str, Tensor], step: int) -> None:
        for value in losses.values():
            bad = ~torch.isfinite(value) & (self.bad_step < 0)
            self.bad_step = torch.where(bad, torch.full_like(self.bad_step, step), self.bad_step)

    def check(self, last: dict[str, Tensor]) -> None:
        """NonFiniteLossError if a flagged step exists; `last`: losses to quote."""
        step = int(self.bad_step)
        if step >= 0:
            losses = ", ".join(f"{k} = {float(v):.4g}" for k, v in last.items())
            raise NonFiniteLossError(
                f"training diverged: a loss became NaN or inf at step {step} (last values: "
                f"{losses}); try a smaller lr or ratio_lr, or check the model's simulation")


@torch.no_grad()
def check_parameters(modules: dict[str, torch.nn.Module], step: int) -> None:
    """NaN or inf anywhere; beyond RUNAWAY in any network or point weight (q(β)'s
    parameters, under "global", live in the prior's units, which may be large)."""
    for owner, module in modules.items():
        bound = float("inf") if owner == "global" else RUNAWAY
        for name, p in module.named_parameters():
            worst = float(p.detach().abs().max()) if p.numel() else 0.0
            if not worst <= bound:
                what = "is NaN or inf" if not math.isfinite(worst) else f"reached {worst:.3g}"
                raise NonFiniteLossError(
                    f"training diverged: parameter `{name}` of the {owner} {what} by step "
                    f"{step}; try a smaller lr or ratio_lr, or check the model's simulation")
