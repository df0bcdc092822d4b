"""Likelihood-free variational inference for compiled himdsl models.

    from himdsl.infer import fit, FitSettings
    result = fit(model, {"x": x}, FitSettings(steps=3000))
    result.posterior(1000)      # {"beta": np.ndarray [1000, 2]}

See docs/lfvi.md for the algorithm and the plan's rules, docs/accuracy.md for the
measurements behind them.
"""
from .checks import Verdict
from .families import AUTO_FLOW_MAX_DIMS, FlowSpec, GlobalGuide
from .interrupts import FitInterrupted
from .plan import Plan, make_plan
from .result import FitResult, TraceRow
from .settings import FitSettings, LocalGuideSpec, RatioSettings
from .divergence import NonFiniteLossError
from .trainer import Trainer, fit

__all__ = ["fit", "Trainer", "FitSettings", "RatioSettings", "LocalGuideSpec", "FlowSpec", "FitResult",
           "TraceRow", "NonFiniteLossError", "GlobalGuide", "Plan", "make_plan", "Verdict",
           "AUTO_FLOW_MAX_DIMS", "FitInterrupted"]
