"""Schedules and averages: learning rates, likelihood tempering, q's parameter
average and the ratio's moving average.

    schedule = Schedule(steps=3000, warmup=300, final_lr=0.1, anneal=0.0, rows=1000)
    schedule.lr_factor(k)          # cosine decay from the end of the warm-up
    schedule.temperature(k)        # likelihood weight (1 without annealing)
    average = ParameterAverage(start=2250, end=3000)
    average.update(k, {"global": guide})
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Schedule:
    """Learning-rate and tempering schedules of one fit."""

    steps: int
    warmup: int
    final_lr: float
    anneal: float
    rows: int

    def lr_factor(self, k: int) -> float:
        """Cosine decay from 1 at the end of the warm-up to `final_lr` at the last step."""
        frac = min(max((k - self.warmup) / max(self.steps - self.warmup, 1), 0.0), 1.0)
        return self.final_lr + (1 - self.final_lr) * 0.5 * (1 + math.cos(math.pi * frac))

    def set_lr(self, k: int, optimisers: list[tuple[torch.optim.Optimizer | None, float]]) -> None:
        """Set each optimiser's learning rate to lr × factor."""
        factor = self.lr_factor(k)
        for opt, lr in optimisers:
            for group in (opt.param_groups if opt else []):
                group["lr"] = lr * factor

    def temperature(self, k: int) -> float:
        """Likelihood weight p · N^(p − 1), p rising linearly from 0 to 1 over the
        first `anneal` fraction of the q steps: the data's effective number of rows
        p · N^p grows geometrically (linearly without a plate), so q passes through
        tempered posteriors that shrink at a steady rate."""
        ramp = self.anneal * (self.steps - self.warmup)
        if ramp < 1:
            return 1.0
        p = min(1.0, (k - self.warmup + 1) / ramp)
        return p * self.rows ** (p - 1)


class ParameterAverage:
    """Uniform average of modules' parameters from step `start` on (Polyak):
    the fit's result uses it, which removes the optimiser's last-step noise. The
    average of the window's first half is kept too (until `end`'s half-way step),
    so that the two halves' q can be compared (advice.py, "ELBO settled")."""

    def __init__(self, start: int, end: int | None = None):
        self.start = start
        self.middle = (start + end) // 2 if end is not None else None
        self.values: dict[str, Tensor] = {}
        self.count = 0
        self.first_half: dict[str, Tensor] = {}
        self.first_count = 0

    @torch.no_grad()
    def update(self, k: int, modules: dict[str, torch.nn.Module]) -> None:
        if k < self.start:
            return
        self.count += 1
        for prefix, mod in modules.items():
            for name, p in mod.named_parameters():
                key = f"{prefix}.{name}"
                prev = self.values.get(key)
                self.values[key] = p.detach().clone() if prev is None else prev + (p.detach() - prev) / self.count
        if k + 1 == self.middle:
            self.first_half = {key: v.clone() for key, v in self.values.items()}
            self.first_count = self.count

    def restart(self) -> None:
        """Forget the average (a resumed fit run to a new length averages anew)."""
        self.values, self.count = {}, 0
        self.first_half, self.first_count = {}, 0

    @torch.no_grad()
    def averaged_copies(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
        """Copies of `modules` holding the averaged parameters (the latest where none)."""
        return _copies_with(modules, self.values)

    @torch.no_grad()
    def halves(self, modules: dict[str, torch.nn.Module]) -> tuple[dict, dict] | None:
        """Copies of `modules` averaged over the window's first and second halves
        (None until both halves have steps)."""
        if not self.first_count or self.count <= self.first_count:
            return None
        later = self.count - self.first_count
        second = {key: (self.count * v - self.first_count * self.first_half[key]) / later
                  for key, v in self.values.items() if key in self.first_half}
        return _copies_with(modules, self.first_half), _copies_with(modules, second)

    def state_dict(self) -> dict:
        return {"values": self.values, "count": self.count,
                "first_half": self.first_half, "first_count": self.first_count}

    def load_state_dict(self, state: dict) -> None:
        self.values, self.count = dict(state["values"]), int(state["count"])
        # checkpoints written before the halves were kept have none
        self.first_half = dict(state.get("first_half", {}))
        self.first_count = int(state.get("first_count", 0))


def _copies_with(modules: dict[str, torch.nn.Module], values: dict[str, Tensor]) -> dict[str, torch.nn.Module]:
    """Deep copies of `modules` whose parameters named in `values` take those values."""
    out = {}
    for prefix, mod in modules.items():
        out[prefix] = copy.deepcopy(mod)
        for name, p in out[prefix].named_parameters():
            if f"{prefix}.{name}" in values:
                p.data.copy_(values[f"{prefix}.{name}"])
    return out


class RatioAverage:
    """An exponential moving average of the ratio network's parameters, which the q
    step reads: it damps the optimiser's noise in r. An update at step k has the
    decay min(decay, (1 + k) / (10 + k)): the average's window grows with the fit
    (about the last ninth of its steps' updates) until `decay` caps it, which 0.998
    does from step 4,490 on (a ramp counted in updates was tried: docs/accuracy.md,
    "gamma_wait's ridge")."""

    def __init__(self, net: torch.nn.Module, decay: float):
        self.decay = decay
        self.net = net
        self.average = net
        self.restart()

    def restart(self) -> None:
        """Start the average at the network as it is now (buffers included: call it
        after the network's input scaling is fitted)."""
        if self.decay > 0:
            self.average = copy.deepcopy(self.net)
            for p in self.average.parameters():
                p.requires_grad_(False)

    @torch.no_grad()
    def update(self, k: int) -> None:
        if self.average is self.net:
            return
        decay = min(self.decay, (1 + k) / (10 + k))
        torch._foreach_lerp_(list(self.average.parameters()), list(self.net.parameters()), 1 - decay)
