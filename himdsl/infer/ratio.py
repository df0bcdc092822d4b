"""The ratio estimator r(x, z, β): a classifier logit estimating a log density ratio.

    ratio = RatioEstimator(in_dim=6, hidden=(128, 128))
    ratio.fit_scaling(features)          # standardise inputs from simulations
    ratio.restandardise(centre, spread)  # new units, same function
    logit = ratio(features)              # [..., 6] -> [...]
    loss, acc = classifier_loss(logit_p, logit_q, "log")

The network is an MLP plus a low-rank quadratic form of the standardised input:
log ratios of Gaussian-like models are close to quadratic, and the quadratic part
lets the MLP only carry the residual.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

LOSSES = ("log", "hinge")
MAX_QUADRATIC_RANK = 32
# Product units of the ratio network: None = as many as inputs (at most 32), 0 = none.
PRODUCT_UNITS: int | None = None
# Hidden activation of the ratio and local-guide networks (smooth, so that ∂r/∂β is).
ACTIVATION = nn.SiLU


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int, act=None) -> nn.Sequential:
    """A plain MLP with `act` (default `ACTIVATION`) between layers."""
    act = act or ACTIVATION
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), act()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


# Standardised inputs are clipped here (in robust sds): simulations from the prior's
# tails reach values no data set has, and must not blow up the networks.
INPUT_CLIP = 20.0
# Below this spread a column is treated as constant: it keeps its scale.
MIN_SPREAD = 1e-6
# A later network of the ratio owns the inputs within this many of its units of its
# centre (robust sds of its pairs); beyond, the earlier networks keep the ratio
# (StagedRatio).
WINDOW = 4.0


class Standardizer(nn.Module):
    """Affine input scaling (x − centre) / spread, fitted once from samples, then
    clipped to ±INPUT_CLIP. Centre and spread are the median and the interquartile
    range (as a normal sd; the sd where that is zero): a few simulations from a
    prior's tail do not set the scale of every input."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("sd", torch.ones(dim))

    def fit(self, samples: Tensor) -> None:
        """Set centre and spread from samples [n, dim] (non-finite values ignored);
        constant features keep spread 1."""
        if samples.shape[-1] == 0:  # e.g. the globals of a model that has none
            return
        flat = samples.reshape(-1, samples.shape[-1]).float()
        centre, spread = robust_moments(flat)
        self.mean.copy_(centre)
        self.sd.copy_(torch.where(spread > MIN_SPREAD, spread, torch.ones_like(spread)))

    def fit_blocks(self, blocks: list[Tensor]) -> None:
        """Fit consecutive feature blocks, each from its own samples [..., d_i]."""
        start = 0
        for block in blocks:
            width = block.shape[-1]
            part = Standardizer(width).to(self.mean.device)
            part.fit(block)
            self.mean[start:start + width] = part.mean
            self.sd[start:start + width] = part.sd
            start += width

    def forward(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / self.sd).clamp(-INPUT_CLIP, INPUT_CLIP)

    @torch.no_grad()
    def move(self, cols: slice, centre: Tensor, spread: Tensor, readers: list[nn.Linear],
             optimiser: torch.optim.Optimizer | None = None) -> None:
        """Standardise columns `cols` by a new centre and spread, keeping the network's
        function: the linear layers `readers`, which read the standardised columns as
        theirs, absorb the change (v_old = a · v_new + c), and Adam's moments of those
        columns are rescaled to match. A column whose new spread is below MIN_SPREAD
        (a constant, a point mass) keeps its spread. Exact wherever neither scaling
        clips the input."""
        old_centre, old_sd = self.mean[cols].clone(), self.sd[cols].clone()
        new_sd = torch.where(spread > MIN_SPREAD, spread, old_sd)
        a, c = new_sd / old_sd, (centre - old_centre) / old_sd
        for layer in readers:
            weight = layer.weight[:, cols]
            (layer.bias if layer.bias is not None else layer.offset).add_(weight @ c)
            layer.weight[:, cols] = weight * a
            state = optimiser.state.get(layer.weight, {}) if optimiser is not None else {}
            if "exp_avg" in state:
                state["exp_avg"][:, cols] /= a
                state["exp_avg_sq"][:, cols] /= a ** 2
        self.mean[cols] = centre
        self.sd[cols] = new_sd


def robust_moments(flat: Tensor) -> tuple[Tensor, Tensor]:
    """Per-column median and spread of finite values: IQR / 1.349, or the sd where
    the IQR is zero (e.g. mostly-zero counts)."""
    finite = torch.isfinite(flat)
    values = torch.where(finite, flat, torch.nan)
    centre = torch.nanmedian(values, 0).values
    q25, q75 = torch.nanquantile(values, 0.25, 0), torch.nanquantile(values, 0.75, 0)
    iqr = (q75 - q25) / 1.349
    mean = torch.nanmean(values, 0)
    sd = torch.nanmean((values - mean) ** 2, 0).sqrt()
    spread = torch.where(iqr > 1e-6, iqr, sd)
    return torch.nan_to_num(centre), torch.nan_to_num(spread, nan=1.0)


class OffsetLinear(nn.Linear):
    """A linear map with no trained bias, plus a fixed offset that only moves of its
    input's standardisation set (Standardizer.move): a product unit or quadratic
    form of the standardised input has no bias of its own to absorb a new centre."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__(n_in, n_out, bias=False)
        self.register_buffer("offset", torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + self.offset

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a network saved before offsets existed had none
        state_dict.setdefault(prefix + "offset", torch.zeros_like(self.offset))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class RatioEstimator(nn.Module):
    """r(u) = MLP([ũ, π]) + a low-rank quadratic form of [ũ, π], where ũ is the
    standardised input and π = (Aũ) ⊙ (Bũ) are learnt pairwise products.

    The quadratic form makes Gaussian log ratios exact; the product units give it
    the cubic and quartic terms of e.g. a regression likelihood (y − f·w)²."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...] = (128, 128), quadratic: bool = True,
                 products: int | None = None):
        super().__init__()
        self.scale = Standardizer(in_dim)
        products = PRODUCT_UNITS if products is None else products
        n_prod = min(in_dim, MAX_QUADRATIC_RANK) if products is None else products
        self.in_dim = in_dim
        self.prod_a = OffsetLinear(in_dim, n_prod)
        self.prod_b = OffsetLinear(in_dim, n_prod)
        width = in_dim + n_prod
        self.net = mlp(width, tuple(hidden), 1)
        rank = min(width, MAX_QUADRATIC_RANK) if quadratic else 0
        self.left = OffsetLinear(width, rank)
        self.right = OffsetLinear(width, rank)
        nn.init.zeros_(self.right.weight)
        # the input spread the network was initialised in (moves keep its function,
        # and with it the resolution it was built with: StagedRatio)
        self.register_buffer("origin_sd", torch.ones(in_dim))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a network saved before stages existed: its units are its initial ones
        state_dict.setdefault(prefix + "origin_sd", state_dict.get(prefix + "scale.sd", self.origin_sd))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit_scaling(self, blocks: list[Tensor]) -> None:
        """Standardise each input block by the moments of its samples [..., d_i]."""
        self.scale.fit_blocks(blocks)
        self.origin_sd.copy_(self.scale.sd)

    def start_at(self, centre: Tensor, spread: Tensor) -> None:
        """Standardise by this centre and spread [in_dim] with r ≡ 0 (a new stage)."""
        self.scale.mean.copy_(centre)
        self.scale.sd.copy_(torch.where(spread > MIN_SPREAD, spread, torch.ones_like(spread)))
        self.origin_sd.copy_(self.scale.sd)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def restandardise(self, centre: Tensor, spread: Tensor,
                      optimiser: torch.optim.Optimizer | None = None) -> None:
        """Standardise the input by a new centre and spread [in_dim], keeping r."""
        readers = [self.prod_a, self.prod_b, self.net[0], self.left, self.right]
        self.scale.move(slice(0, self.in_dim), centre, spread, readers, optimiser)

    def forward(self, u: Tensor) -> Tensor:
        v = self.scale(u)
        v = torch.cat([v, self.prod_a(v) * self.prod_b(v)], -1)
        quad = (self.left(v) * self.right(v)).sum(-1)
        return self.net(v)[..., 0] + quad


class StagedRatio(nn.Module):
    """r(u) = b(u) · r_new(u) + (1 − g · b(u)) · r_old(u): the training network
    (r_new) and the frozen ones before it (r_old, nested alike), where b(u) is 1
    within WINDOW of the new network's units of its inputs and falls to 0 beyond,
    and g rises from 0 to 1 over `fade` steps after the new network started.

    An MLP's resolution is set where its units' kinks lie, which initialisation puts
    across the inputs' spread at the time. The contrastive ratio starts in the prior's
    units; once its pairs (which follow q) have narrowed, a likelihood's detail at the
    posterior's scale (a mixture component 0.1 wide under a prior 20 wide) falls
    between the kinks, and moving the standardisation keeps the kinks where they were.
    A new network starts in the pairs' units with r_new ≡ 0, so r is unchanged at the
    switch, and takes the region its units cover over from the old one, which keeps
    the far region (the prior's tails, where the new one's inputs clip) it was built
    for. Near the pairs the ratio ends as the new network alone, with none of the old
    one's errors. Beyond its window the new network has no say: there its inputs
    clip, and its product units and quadratic form, quartic in them, would give the
    ratio a spurious mode of thousands of nats in the prior's tails, which the
    covering population's particles find (sbibm's bernoulli_glm diverged so)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.in_dim, self.hidden = in_dim, tuple(hidden)
        self.stages = nn.ModuleList([RatioEstimator(in_dim, self.hidden)])
        # per later network: the step it started, and its share g of its window now
        self.register_buffer("started", torch.zeros(0, dtype=torch.long))
        self.register_buffer("share", torch.zeros(0))
        self.register_buffer("fade_steps", torch.ones((), dtype=torch.long))

    @property
    def head(self) -> RatioEstimator:
        """The network that trains."""
        return self.stages[-1]

    def forward(self, u: Tensor) -> Tensor:
        out = self.stages[0](u)
        for stage, share in zip(self.stages[1:], self.share):
            window = torch.exp(-0.5 * F.relu((u - stage.scale.mean).abs() / stage.scale.sd - WINDOW)
                               .square().sum(-1))
            out = window * stage(u) + (1 - share * window) * out
        return out

    def fit_scaling(self, blocks: list[Tensor]) -> None:
        self.head.fit_scaling(blocks)

    def restandardise(self, centre: Tensor, spread: Tensor,
                      optimiser: torch.optim.Optimizer | None = None) -> None:
        self.head.restandardise(centre, spread, optimiser)

    def add_stage(self, k: int, fade: int, centre: Tensor, spread: Tensor,
                  head_state: dict | None = None) -> None:
        """At step k, freeze the head (at `head_state`, e.g. its moving average, if
        given) and start a new one in these units, taking its window over from the
        old ones in the next `fade` steps."""
        if head_state is not None:
            self.head.load_state_dict(head_state)
        self.head.requires_grad_(False)
        self.started = torch.cat([self.started, self.started.new_tensor([k])])
        self.share = torch.cat([self.share, self.share.new_zeros(1)])
        self.fade_steps.fill_(max(1, fade))
        stage = RatioEstimator(self.in_dim, self.hidden).to(centre.device)
        stage.start_at(centre, spread)
        self.stages.append(stage)

    def advance(self, k: int) -> None:
        """Each later network's share of its window at step k."""
        if len(self.stages) > 1:
            self.share = ((k - self.started).float() / int(self.fade_steps)).clamp(0.0, 1.0)

    def load_state_dict(self, state: dict, strict: bool = True, assign: bool = False):
        """Load a state with any number of networks (a checkpoint taken after new
        ones, or before stages existed: one network's state)."""
        if not any(k.startswith("stages.") for k in state):
            state = {f"stages.0.{k}": v for k, v in state.items()}
        state = dict(state)
        count = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("stages."))
        state.setdefault("started", torch.zeros(count - 1, dtype=torch.long))
        state.setdefault("share", torch.ones(count - 1))
        state.setdefault("fade_steps", self.fade_steps)
        device = self.fade_steps.device
        self.started = torch.empty_like(state["started"]).to(device)
        self.share = torch.empty_like(state["share"]).to(device)
        while len(self.stages) > count:
            del self.stages[-1]
        while len(self.stages) < count:
            self.head.requires_grad_(False)
            self.stages.append(RatioEstimator(self.in_dim, self.hidden).to(device))
        return super().load_state_dict(state, strict, assign)


def _margin_loss(loss: str):
    """The per-sample penalty of a margin m (a logit that should be positive):
    `log` softplus(−m), `hinge` relu(1 − m)."""
    if loss == "log":
        return lambda m: F.softplus(-m)
    if loss == "hinge":
        return lambda m: F.relu(1 - m)
    raise ValueError(f"unknown ratio loss {loss!r}; expected one of {', '.join(LOSSES)}")


def _mean(values: Tensor, weight: Tensor | None) -> Tensor:
    return values.mean() if weight is None else (values * weight).sum()


def pair_loss(logit_true: Tensor, logit_other: Tensor, loss: str = "log",
              weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Loss of telling which of two globals generated x, from r(x, β_true) −
    r(x, β_other), and accuracy. With `log` it is minimised by r(x, β) =
    log p(x | β) + c(x) for any c: the ratio never has to learn the marginal of x.
    `weight`: per-sample weights summing to 1 (0 drops a sample)."""
    diff = logit_true - logit_other
    return _mean(_margin_loss(loss)(diff), weight), _mean((diff > 0).float(), weight)


def classifier_loss(logit_p: Tensor, logit_q: Tensor, loss: str = "log",
                    weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Loss of telling p-samples (label 1) from q-samples (label 0), and accuracy.

    `log`: −log σ(r_p) − log(1 − σ(r_q)), minimised by r = log p − log q.
    `hinge`: relu(1 − r_p) + relu(1 + r_q), minimised by sign(log p − log q)."""
    penalty = _margin_loss(loss)
    value = _mean(penalty(logit_p), weight) + _mean(penalty(-logit_q), weight)
    acc = 0.5 * (_mean((logit_p > 0).float(), weight) + _mean((logit_q <= 0).float(), weight))
    return value, acc


# Gradient-norm clip of the ratio's updates (guards the rare blow-up on far draws).
RATIO_GRAD_CLIP = 10.0
# A new stage of the ratio starts once its training pairs' spread in some input is
# below the training stage's initial spread by this factor (StagedRatio): each
# stage then resolves detail within a factor 2 of its units.
STAGE_SHRINK = 2.0


class RatioLearner:
    """A ratio network with its optimiser and moving average (schedule.RatioAverage);
    the two training strategies (contrastive.py, empirical.py) build on it."""

    def __init__(self, in_dim: int, settings, ema: float, device):
        from .schedule import RatioAverage

        self.settings = settings
        self.net = StagedRatio(in_dim, settings.ratio.hidden).to(device)
        self.average = RatioAverage(self.net, ema)
        self.opt = self._optimiser(settings.ratio_lr)

    def _optimiser(self, lr: float) -> torch.optim.Optimizer:
        """Adam over the training stage. Plain Adam, no weight decay: a decaying MLP
        flattens the log ratio wherever only the MLP can carry it, e.g. a noise
        scale's 1/σ² on a squared residual."""
        return torch.optim.Adam(self.net.head.parameters(), lr=lr, fused=True)

    def sync_optimiser(self) -> None:
        """A new optimiser when the training stage changed under it (a checkpoint
        with more stages was loaded)."""
        if self.opt.param_groups[0]["params"][0] is not next(self.net.head.parameters()):
            self.opt = self._optimiser(self.opt.param_groups[0]["lr"])

    def fit_input_scaling(self, blocks: list[Tensor]) -> None:
        """Standardise the network's input blocks; the average starts from it."""
        self.net.fit_scaling(blocks)
        self.average.restart()

    @torch.no_grad()
    def restandardise(self, features: Tensor, stage_at: int | None = None, fade: int = 1,
                      terms: Tensor | None = None) -> None:
        """Standardise the network's inputs by the features it trains on now [n, F]
        (robust moments), keeping r: the pairs follow q, and a likelihood's detail at
        the posterior's scale is beyond an MLP reading the prior's units (docs/lfvi.md,
        "The ratio's inputs follow its pairs"). `terms` [F]: per input, how many terms
        of the log likelihood's sum its value is shared by; an input shared by T
        terms (a global read by N rows) is standardised at √T times its spread, the
        width one term of the sum tells apart, and never wider than its first units.
        Where a step `stage_at` is given and some input's width is below 1/STAGE_SHRINK
        of the training network's initial units, a new one starts in these units and
        takes over the region they cover in `fade` steps (StagedRatio); else the
        training network's inputs move, in the network and its average alike."""
        centre, spread = robust_moments(features)
        if terms is not None:
            first = self.net.stages[0].origin_sd       # the prior's units: never dropped
            spread = torch.where(terms > 1, torch.minimum(spread * terms.sqrt(), first), spread)
        narrowed = (spread > MIN_SPREAD) & (STAGE_SHRINK * spread < self.net.head.origin_sd)
        averaged = self.average.average
        if stage_at is not None and bool(narrowed.any()):
            head_state = averaged.head.state_dict() if averaged is not self.net else None
            self.net.add_stage(stage_at, fade, centre, spread, head_state)
            self.opt = self._optimiser(self.opt.param_groups[0]["lr"])
            self.average.restart()
            return
        self.net.restandardise(centre, spread, self.opt)
        if averaged is not self.net:
            averaged.restandardise(centre, spread)

    @torch.no_grad()
    def advance(self, k: int) -> None:
        """The later networks' shares of their windows at step k, in the network and
        its average alike (StagedRatio.advance)."""
        self.net.advance(k)
        if self.average.average is not self.net:
            self.average.average.advance(k)

    def apply(self, features: Tensor, averaged: bool = True) -> Tensor:
        """The logit of features [..., F]: the moving average's (what q reads) or the
        network's own (what trains)."""
        return (self.average.average if averaged else self.net)(features)

    def learn(self, k: int, loss: Tensor, acc: Tensor) -> tuple[Tensor, Tensor]:
        """One optimiser step on `loss`; returns (loss, accuracy) detached."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), RATIO_GRAD_CLIP)
        self.opt.step()
        self.average.update(k)
        return loss.detach(), acc

    def modules(self) -> dict[str, nn.Module]:
        """What a checkpoint holds."""
        mods = {"ratio": self.net}
        if self.average.average is not self.net:
            mods["ratio_avg"] = self.average.average
        return mods
