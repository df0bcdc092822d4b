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

import copy

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
# A later network of the ratio reads its inputs softly bounded at this many of its
# units, B·tanh(z / B): linear near its centre, bounded beyond (StagedRatio).
BOUND = 4.0


class Standardizer(nn.Module):
    """Affine input scaling z = (x − centre) / spread, fitted once from samples, then
    clipped to ±INPUT_CLIP, or with `bound` squashed to bound · tanh(z / bound).
    Centre and spread are the median and the interquartile range (as a normal sd;
    the sd where that is zero): a few simulations from a prior's tail do not set the
    scale of every input."""

    def __init__(self, dim: int, bound: float | None = None):
        super().__init__()
        self.bound = bound
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
        z = (x - self.mean) / self.sd
        if self.bound is None:
            return z.clamp(-INPUT_CLIP, INPUT_CLIP)
        return self.bound * torch.tanh(z / self.bound)

    @torch.no_grad()
    def move(self, cols: slice, centre: Tensor, spread: Tensor, readers: list[nn.Linear],
             optimiser: torch.optim.Optimizer | None = None) -> None:
        """Standardise columns `cols` by a new centre and spread, keeping the network's
        function: the linear layers `readers`, which read the standardised columns as
        theirs, absorb the change (v_old = a · v_new + c), and Adam's moments of those
        columns are rescaled to match. A column whose new spread is below MIN_SPREAD
        (a constant, a point mass) keeps its spread. Exact wherever neither scaling
        clips the input; a squashed input cannot move so."""
        assert self.bound is None, "a bounded standardisation is not affine and cannot move"
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
                 products: int | None = None, bound: float | None = None):
        super().__init__()
        self.scale = Standardizer(in_dim, bound)
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
    """r(u) = r_0(u) + r_1(u) + … : networks that all train together, each reading
    the inputs in its own units. r_0 reads them in the units they started in (the
    prior's); a later r_s, added when the training pairs have narrowed or moved away
    from the latest network's units, reads them in the pairs' units at that time,
    bounded softly at BOUND of them (Standardizer), and starts at r_s ≡ 0.

    An MLP's resolution is set where its units' kinks lie, which initialisation puts
    across the inputs' spread at the time. The contrastive ratio starts in the prior's
    units; once its pairs (which follow q) have narrowed, a likelihood's detail at the
    posterior's scale (a mixture component 0.1 wide under a prior 20 wide) falls
    between r_0's kinks, and moving its standardisation keeps the kinks where they
    were. A new network brings kinks at the pairs' scale. It adds to the ratio rather
    than taking a region over from the earlier networks: r is unchanged when it
    starts, with no seam between regions that two networks own, and the earlier ones
    keep training where the pairs are. Its bounded inputs keep its product units and
    quadratic form, quartic in them, from growing in the prior's tails, which its
    pairs never reached and the covering population's particles would find."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.in_dim, self.hidden = in_dim, tuple(hidden)
        self.stages = nn.ModuleList([RatioEstimator(in_dim, self.hidden)])

    @property
    def head(self) -> RatioEstimator:
        """The latest network."""
        return self.stages[-1]

    def forward(self, u: Tensor) -> Tensor:
        return sum(stage(u) for stage in self.stages)

    def fit_scaling(self, blocks: list[Tensor]) -> None:
        self.stages[0].fit_scaling(blocks)

    def restandardise(self, centre: Tensor, spread: Tensor,
                      optimiser: torch.optim.Optimizer | None = None) -> None:
        """Move the first network's units (only while it is the only one: a later
        one's bounded inputs cannot move)."""
        assert len(self.stages) == 1, "only the first network's inputs move"
        self.stages[0].restandardise(centre, spread, optimiser)

    def add_stage(self, centre: Tensor, spread: Tensor) -> RatioEstimator:
        """A new network reading the inputs in these units [in_dim], r_s ≡ 0."""
        stage = RatioEstimator(self.in_dim, self.hidden, bound=BOUND).to(centre.device)
        stage.start_at(centre, spread)
        self.stages.append(stage)
        return stage

    def load_state_dict(self, state: dict, strict: bool = True, assign: bool = False):
        """Load a state with any number of networks (a checkpoint taken after new
        ones, or before stages existed: one network's state)."""
        if not any(k.startswith("stages.") for k in state):
            state = {f"stages.0.{k}": v for k, v in state.items()}
        count = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("stages."))
        while len(self.stages) > count:
            del self.stages[-1]
        device = self.stages[0].origin_sd.device
        while len(self.stages) < count:
            self.stages.append(RatioEstimator(self.in_dim, self.hidden, bound=BOUND).to(device))
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
# A new network of the ratio starts once its training pairs' spread in some input is
# below the latest network's initial units by this factor, or their centre has moved
# by this many of its units (StagedRatio): each network then resolves detail within
# a factor 2 of its units, and near the middle of its bounded inputs.
STAGE_SHRINK = 2.0
STAGE_DRIFT = 2.0


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
        """Adam over every network, one parameter group each (a new network is a new
        group; the others keep their moments). Plain Adam, no weight decay: a
        decaying MLP flattens the log ratio wherever only the MLP can carry it, e.g.
        a noise scale's 1/σ² on a squared residual."""
        groups = [{"params": list(stage.parameters())} for stage in self.net.stages]
        return torch.optim.Adam(groups, lr=lr, fused=True)

    def sync_optimiser(self) -> None:
        """A new optimiser when the networks changed under it (a checkpoint with more
        of them was loaded)."""
        if len(self.opt.param_groups) != len(self.net.stages):
            self.opt = self._optimiser(self.opt.param_groups[0]["lr"])

    def fit_input_scaling(self, blocks: list[Tensor]) -> None:
        """Standardise the network's input blocks; the average starts from it."""
        self.net.fit_scaling(blocks)
        self.average.restart()

    @torch.no_grad()
    def restandardise(self, features: Tensor, may_add: bool = False, terms: Tensor | None = None) -> None:
        """Follow the features the ratio trains on now [n, F] (robust moments): the
        pairs follow q, and a likelihood's detail at the posterior's scale is beyond
        an MLP reading the prior's units (docs/lfvi.md, "The ratio's inputs follow
        its pairs"). `terms` [F]: per input, how many terms of the log likelihood's
        sum its value is shared by; an input shared by T terms (a global read by N
        rows) is taken at √T times its spread, the width one term of the sum tells
        apart, and never wider than the first network's units. Where `may_add` and
        the pairs have narrowed below 1/STAGE_SHRINK of the latest network's units
        or moved STAGE_DRIFT of them, a new network starts in these units
        (StagedRatio); else, while it is the only one, the first network's inputs
        move, keeping r, in the network and its average alike."""
        centre, spread = robust_moments(features)
        if terms is not None:
            first = self.net.stages[0].origin_sd       # the prior's units: never dropped
            spread = torch.where(terms > 1, torch.minimum(spread * terms.sqrt(), first), spread)
        if may_add and self._outgrown(centre, spread):
            self._add_stage(centre, spread)
        elif len(self.net.stages) == 1:
            self.net.restandardise(centre, spread, self.opt)
            if self.average.average is not self.net:
                self.average.average.restandardise(centre, spread)

    def _outgrown(self, centre: Tensor, spread: Tensor) -> bool:
        """Have the pairs narrowed or (for a network with bounded inputs) moved
        beyond what the latest network resolves?"""
        head = self.net.head
        narrowed = (spread > MIN_SPREAD) & (STAGE_SHRINK * spread < head.origin_sd)
        moved = (centre - head.scale.mean).abs() > STAGE_DRIFT * head.scale.sd
        return bool(narrowed.any()) or (head.scale.bound is not None and bool(moved.any()))

    def _add_stage(self, centre: Tensor, spread: Tensor) -> None:
        """A new network in these units, in the network, its optimiser and its
        average alike (the average's copy starts equal to it)."""
        stage = self.net.add_stage(centre, spread)
        self.opt.add_param_group({"params": list(stage.parameters())})
        averaged = self.average.average
        if averaged is not self.net:
            averaged.stages.append(copy.deepcopy(stage).requires_grad_(False))

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
