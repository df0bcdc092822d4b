"""Fit settings: the `guide`, `ratio` and `fit` blocks of a .him file, validated.

    settings = FitSettings(steps=3000, ratio=RatioSettings(mode="empirical"),
                           guide={"beta": "flow"})
    settings.validate()          # raises ValueError naming the bad key

Keys spelt as in docs/language.md: steps, batch, particles, lr, ratio_lr, samples,
seed; ratio: hidden, loss, mode; guide: one family per latent. The remaining
fields are engineering knobs with measured defaults (docs/lfvi.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .families import FAMILIES, FlowSpec
from .ratio import LOSSES

RATIO_MODES = ("auto", "empirical", "contrastive")
METHODS = ("auto", "lfvi", "vi")
COVERING = ("auto", "on", "off")
GLOBAL_GRADIENTS = ("elbo", "fisher")
CONTRASTS = ("pair", "single")
RATIO_INPUTS = ("auto", "parents", "inputs", "prediction", "globals")
ELEMENTS = ("auto", "row")
GLOBAL_FAMILIES = ("auto",) + tuple(FAMILIES)
LOCAL_FAMILIES = ("auto", "gaussian", "implicit")


@dataclass
class RatioSettings:
    """The `ratio { }` block."""

    hidden: tuple[int, ...] = (128, 128)
    loss: str = "log"
    mode: str = "auto"


@dataclass
class LocalGuideSpec:
    """A local guide: `implicit(hidden = [..], noise = ..)` or `gaussian(hidden = [..])`."""

    family: str = "auto"
    hidden: tuple[int, ...] = (64, 64)
    noise: int = 16


@dataclass
class FitSettings:
    """Everything `fit` needs besides the model and data."""

    steps: int = 3000
    batch: int = 64
    particles: int = 16
    lr: float = 1e-2
    ratio_lr: float = 1e-3
    samples: int = 4000
    seed: int = 0
    ratio: RatioSettings = field(default_factory=RatioSettings)
    guide: dict[str, str | FlowSpec | LocalGuideSpec] = field(default_factory=dict)
    # "auto": exact VI when every density is known (`observe x ~ ...`), else LFVI
    method: str = "auto"
    # ---- engineering knobs (not in the language; measured defaults)
    warmup: float = 0.1        # fraction of steps that train only the ratio
    # ratio updates per q step (two time scales); None = the plan's rule (plan.py)
    ratio_updates: int | None = None
    spread: float = 1.0        # ratio sees β = q draw + spread · sd(q) · noise
    anneal: float = 0.0        # likelihood tempered over this fraction of q steps (rows grow geometrically)
    # fit q to the ratio's posterior by forward KL over a particle population (mode-
    # covering) where that posterior is known up to a constant: "auto" (data of one row), "on", "off"
    covering: str = "auto"
    # where the ratio's posterior of the globals is known up to a constant (the covering
    # population's models) and the data are one row, the posterior draws are q's
    # importance-resampled to it (PSIS; importance.py); False: q's own draws
    resample: bool = True
    # on a plate, centre q's gradient from the contrastive ratio on the ratio's own
    # simulations at q's draw (objective.py, "Centred score"); off by default until it
    # is measured on the whole hierarchical suite (docs/accuracy.md)
    score_centring: bool = False
    # observed real arrays the networks read on the log (positive data whose noise
    # multiplies: 0.05 and 5 are then resolved alike); not automatic until it is
    # measured on every model it would touch (docs/accuracy.md, "Positive observations
    # on the log")
    log_features: tuple[str, ...] = ()
    prior_mix: float = 0.25    # fraction of prior draws in contrastive ratio training
    average: float = 0.25      # average q's parameters over this final fraction
    final_lr: float = 0.1      # learning rates decay (cosine) to this factor
    simulations: int = 512     # simulations per contrastive ratio update
    contrast: str = "pair"     # contrastive loss: "pair" (which of two β made x) or "single"
    # the q step reads an EMA of the ratio's parameters whose decay, (1 + k) / (10 + k) at
    # step k, this caps (0 = off; None = the plan's: 0.998 in contrastive mode, off in
    # empirical mode)
    ratio_ema: float | None = None
    reuse: int = 0             # extra ratio updates per step on past simulations (contrastive)
    # at most this many simulations in all (contrastive ratio): fresh pairs are drawn
    # evenly over the steps while the budget lasts; every update trains on the stored ones
    budget: int | None = None
    # how q(β) learns beside local latents: "elbo" (through the local guide's draws) or
    # "fisher" (the locals held at the guide's draws: Fisher's identity; needs a known
    # local prior); None = the plan's rule (plan.py: fisher with several draws a row)
    global_gradient: str | None = None
    # what the ratio reads of the latents: "parents" (the latents themselves; "globals"
    # is the same), "inputs" (the noise-free values the likelihood is computed from),
    # "prediction" (the prediction with noise at its mean), "auto" (the plan's rule)
    ratio_inputs: str = "auto"
    # how the contrastive ratio reads an observation whose values are independent given
    # the row (himdsl/graph/elements.py): "auto" one value at a time, "row" the whole row
    elements: str = "auto"
    # draws of q(z | x, β) per row in q's objective: above 1, the row's term is the
    # importance-weighted bound log (1/L) Σ_l p(x, z_l | β) / q(z_l | x, β) (IWAE),
    # tighter than the ELBO, so the local guide's error biases q(β) less (objective.py);
    # None = the plan's rule (plan.py: LOCAL_SAMPLES where the locals' density is known)
    local_samples: int | None = None
    # end with the trust checks (plan.py, checks.py): a fit that fails them raises
    checks: bool = True
    log_every: int = 50
    checkpoint_every: int = 500

    def __post_init__(self):
        # from Python a `ratio { }` block is naturally a dict: {"mode": "empirical"}
        if isinstance(self.ratio, dict):
            unknown = sorted(set(self.ratio) - set(RatioSettings.__dataclass_fields__))
            _check(not unknown, f"ratio setting(s) {', '.join(unknown)} unknown; expected "
                   f"{', '.join(RatioSettings.__dataclass_fields__)}")
            self.ratio = RatioSettings(**self.ratio)
        # one form whether given as a list (JSON, fit.json) or a tuple, so that a resumed
        # or replayed fit compares equal to the one that wrote its checkpoint
        if isinstance(self.log_features, list):
            self.log_features = tuple(self.log_features)

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        _check(isinstance(self.reuse, int) and self.reuse >= 0,
               f"setting `reuse` must be a whole number >= 0, got {self.reuse!r}")
        for key in ("ratio_updates", "local_samples"):      # None: the plan's rule
            value = getattr(self, key)
            _check(value is None or (isinstance(value, int) and value >= 1),
                   f"setting `{key}` must be a positive integer, got {value!r}")
        for key in ("steps", "batch", "particles", "samples",
                    "simulations", "log_every", "checkpoint_every"):
            _check(isinstance(getattr(self, key), int) and getattr(self, key) >= 1,
                   f"fit setting `{key}` must be a positive integer, got {getattr(self, key)!r}")
        _check(self.budget is None or (isinstance(self.budget, int) and self.budget >= 1),
               f"setting `budget` must be a positive number of simulations, got {self.budget!r}")
        for key in ("lr", "ratio_lr"):
            _check(getattr(self, key) > 0, f"fit setting `{key}` must be positive")
        for key in ("warmup", "anneal", "average", "final_lr", "prior_mix"):
            _check(0 <= getattr(self, key) <= 1, f"setting `{key}` must lie in [0, 1]")
        _check(self.spread >= 0, "setting `spread` must be >= 0")
        _check(self.global_gradient in (None, *GLOBAL_GRADIENTS), f"unknown global_gradient "
               f"{self.global_gradient!r}; expected one of {', '.join(GLOBAL_GRADIENTS)}")
        _check(isinstance(self.log_features, (list, tuple)) and all(isinstance(n, str) for n in self.log_features),
               f"setting `log_features` must be a list of observed arrays' names, got {self.log_features!r}")
        for key in ("resample", "score_centring"):
            _check(isinstance(getattr(self, key), bool), f"setting `{key}` must be true or false, got {getattr(self, key)!r}")
        _check(self.covering in COVERING, f"unknown covering {self.covering!r}; expected one of "
               f"{', '.join(COVERING)}")
        _check(self.contrast in CONTRASTS, f"unknown contrast {self.contrast!r}; expected "
               f"one of {', '.join(CONTRASTS)}")
        _check(self.ratio_inputs in RATIO_INPUTS, f"unknown ratio_inputs {self.ratio_inputs!r}; "
               f"expected one of {', '.join(RATIO_INPUTS)}")
        _check(self.elements in ELEMENTS, f"unknown elements {self.elements!r}; expected one of "
               f"{', '.join(ELEMENTS)}")
        _check(self.ratio_ema is None or 0 <= self.ratio_ema < 1,
               "setting `ratio_ema` must lie in [0, 1)")
        _check(self.method in METHODS, f"unknown method {self.method!r}; expected auto, lfvi or vi")
        _check(self.ratio.loss in LOSSES, f"unknown ratio loss {self.ratio.loss!r}; expected "
               f"one of {', '.join(LOSSES)}")
        _check(self.ratio.mode in RATIO_MODES, f"unknown ratio mode {self.ratio.mode!r}; "
               f"expected one of {', '.join(RATIO_MODES)}")
        _check(all(isinstance(h, int) and h >= 1 for h in self.ratio.hidden),
               "ratio setting `hidden` must be a list of positive layer widths")
        # `guide` is checked against the model's latents when a trainer starts (guide_entries.py)
    def to_dict(self) -> dict:
        """Plain-data copy (for checkpoints and reports)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "FitSettings":
        """The settings `to_dict` wrote (a checkpoint's or fit.json's): `--resume` and
        `--replay` continue or repeat a fit with exactly these."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        ratio = dict(known.pop("ratio", {}))
        ratio["hidden"] = tuple(ratio.get("hidden", RatioSettings.hidden))
        guide = {name: _guide_from_dict(spec) for name, spec in known.pop("guide", {}).items()}
        return cls(**known, ratio=RatioSettings(**ratio), guide=guide)


def _guide_from_dict(spec):
    if isinstance(spec, str):
        return spec
    kind = FlowSpec if "layers" in spec else LocalGuideSpec
    return kind(**{k: tuple(v) if k == "hidden" else v for k, v in spec.items()})


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
