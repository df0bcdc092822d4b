"""Data outside the support of the distribution that observes them, found before
any training: a negative count, a success count above its trials, a negative
waiting time.

Such a value has probability zero under every setting of the latents, so no fit
can explain it; left to training it surfaces as a NaN loss at step 0 (exact VI)
or as a ratio that cannot learn (LFVI), with advice about learning rates. Where
the observation's distribution is known (`observe y ~ D(...)`, or `observe y = k`
with `noise k ~ D(...)`), each value is checked against D's support at a few
draws from the prior. A value is reported only where the support does not move
with the latents (`Uniform(0, theta)` with an unknown theta is left to the fit: a
value there is unlikely under the prior, not impossible).

    check_observed_support(module, arrays, "data.npz")      # DataError naming the value
"""
from __future__ import annotations

import torch
from torch.distributions import constraints

from .data import DataError, as_tensors
from .model import HimModule, SimulationError

# Prior draws the supports are evaluated at.
SUPPORT_DRAWS = 8


@torch.no_grad()
def check_observed_support(module: HimModule, arrays: dict, source: str = "data") -> None:
    """Raise DataError for the first observed value outside its distribution's support."""
    if module.externs:          # a costly simulator is not run just for this
        return
    data = as_tensors(arrays, module)
    device = module.device
    # a forked stream: the check's draws never change the fit's
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            # two independent sets of draws: a support whose bounds differ between them
            # moves with the latents
            first, second = (module.observation_distributions(module.sample_globals(SUPPORT_DRAWS), data)
                             for _ in range(2))
        except (SimulationError, ValueError, RuntimeError):     # training reports what is wrong
            return
    for name, dist in first.items():
        if not _same_support(dist.support, second[name].support):
            continue
        index = _first_outside(dist.support, data[name])
        if index is not None:
            value = data[name][index]
            shown = f"{value.item():g}" if value.dim() == 0 else str(value.tolist())
            raise DataError(f"{source}: array `{name}` holds {shown} at index {list(index)}, which "
                            f"`{name}` ({module.source_file or 'the model'}, line {module.nodes[name].line}) "
                            f"cannot take: {type(dist).__name__} gives {_describe(dist.support, index)}; "
                            "no setting of the latents can explain it")


def _same_support(one, other) -> bool:
    """Whether two supports (at independent draws of the latents) have equal bounds."""
    if isinstance(one, constraints.independent):
        return _same_support(one.base_constraint, other.base_constraint)
    for key in ("lower_bound", "upper_bound"):
        a, b = getattr(one, key, None), getattr(other, key, None)
        if torch.is_tensor(a) or torch.is_tensor(b):
            a, b = torch.as_tensor(a), torch.as_tensor(b)
            if a.shape != b.shape or not bool(torch.equal(a, b)):
                return False
        elif a != b:
            return False
    return True


def _first_outside(support, value: torch.Tensor) -> tuple | None:
    """The first index of `value` outside `support` (one that does not move with the
    latents); None when there is none."""
    try:
        inside = support.check(value)
    except (RuntimeError, ValueError, NotImplementedError):
        return None
    rows = value.shape[:value.dim() - support.event_dim]
    inside = inside.reshape(-1, *rows)[0] if inside.dim() >= len(rows) else inside.expand(rows)
    if bool(inside.all()):
        return None
    return tuple(int(i) for i in torch.nonzero(~inside)[0])


def _bound(bound, index: tuple) -> str:
    """A support's bound at `index` (the first draw's, where it has a draw axis)."""
    if torch.is_tensor(bound) and bound.dim():
        bound = bound.reshape(-1, *bound.shape[-len(index):])[0][index] if bound.dim() >= len(index) \
            else bound.reshape(-1)[0]
    return f"{float(bound):g}"


def _describe(support, index: tuple) -> str:
    """The support in words, with its bounds at the offending value."""
    if isinstance(support, constraints.independent):
        return _describe(support.base_constraint, index)
    low = getattr(support, "lower_bound", None)
    high = getattr(support, "upper_bound", None)
    if isinstance(support, constraints._IntegerInterval):
        return f"whole numbers from {_bound(low, index)} to {_bound(high, index)}"
    if isinstance(support, constraints._IntegerGreaterThan):
        return f"whole numbers from {_bound(low, index)} up"
    if isinstance(support, constraints._Boolean):
        return "0 or 1"
    if isinstance(support, (constraints._Interval, constraints._HalfOpenInterval)):
        return f"values from {_bound(low, index)} to {_bound(high, index)}"
    if isinstance(support, constraints._GreaterThan):
        return f"values above {_bound(low, index)}"
    if isinstance(support, constraints._GreaterThanEq):
        return f"values from {_bound(low, index)} up"
    if isinstance(support, constraints._LessThan):
        return f"values below {_bound(high, index)}"
    if isinstance(support, constraints._Simplex):
        return "non-negative values summing to 1"
    return f"values in {support}"
