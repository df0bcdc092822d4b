"""Functions and layers that generated modules call (imported there as `H`).

Tensors carry leading batch axes (draws, rows) before each node's element axes;
these helpers work on the element axes only. Where two operands have different
element ranks the code generator inserts `lift` so that torch's broadcasting,
which aligns trailing axes, lines up element axes with element axes.

    >>> lift(torch.zeros(4, 7), element_rank=0, new_axes=1).shape   # 7 rows of scalars → [4, 7, 1]
    torch.Size([4, 7, 1])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus,
    "elu": F.elu, "gelu": F.gelu, "identity": lambda x: x,
}


# ------------------------------------------------------------------ shapes
def lift(x, element_rank: int, new_axes: int):
    """Insert `new_axes` singleton axes just before the last `element_rank` axes."""
    if not torch.is_tensor(x):
        return x
    cut = x.dim() - element_rank
    return x.reshape(x.shape[:cut] + (1,) * new_axes + x.shape[cut:])


def tensor_like(value, like: torch.Tensor) -> torch.Tensor:
    """A Python number or list as a tensor on `like`'s device and dtype."""
    if torch.is_tensor(value):
        return value if value.is_floating_point() or value.dtype == torch.bool else value.to(like.dtype)
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def constant(value) -> torch.Tensor:
    """A model's list constant (a vector, a matrix ...) in the default float dtype."""
    return torch.tensor(value, dtype=torch.get_default_dtype())


def _tensors(values, like):
    anchor = like if like is not None else next((v for v in values if torch.is_tensor(v)), torch.zeros(()))
    return [tensor_like(v, anchor) for v in values]


def broadcast_leading(xs: list[torch.Tensor], rank: int) -> list[torch.Tensor]:
    """Expand every tensor's batch axes (all but the last `rank`) to a common shape."""
    leads = torch.broadcast_shapes(*[x.shape[: x.dim() - rank] for x in xs])
    return [x.expand(leads + x.shape[x.dim() - rank:]) for x in xs]


# ------------------------------------------------------------------ last-axis functions
def concat(*xs, like=None):
    """Join along the last axis, broadcasting batch axes."""
    xs = _tensors(xs, like)
    leads = torch.broadcast_shapes(*[x.shape[:-1] for x in xs])
    return torch.cat([x.expand(leads + x.shape[-1:]) for x in xs], dim=-1)


def stack(*xs, like=None):
    """Broadcast the items and stack them along a new last axis."""
    return torch.stack(torch.broadcast_tensors(*_tensors(xs, like)), dim=-1)


def stack_first(*xs, item_rank: int, like=None):
    """A list literal `[a, b]`: a new first element axis (items of element rank `item_rank`)."""
    return torch.stack(torch.broadcast_tensors(*_tensors(xs, like)), dim=-1 - item_rank)


def onehot(labels, categories: int, like=None):
    """One-hot encoding along a new last axis, in the model's float dtype."""
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    return F.one_hot(labels.long().clamp(0, categories - 1), categories).to(dtype)


def reshape(x, element_rank: int, shape: tuple[int, ...]):
    """Reshape the last `element_rank` axes to `shape`."""
    return x.reshape(x.shape[: x.dim() - element_rank] + tuple(shape))


def matmul(a, b, rank_a: int, rank_b: int):
    """numpy.matmul on the element axes (a vector is promoted, then squeezed:
    b's axis first, which leaves a's last when both were vectors)."""
    a = a.unsqueeze(-2) if rank_a == 1 else a
    b = b.unsqueeze(-1) if rank_b == 1 else b
    out = torch.matmul(a, b)
    out = out.squeeze(-1) if rank_b == 1 else out
    return out.squeeze(-1 if rank_b == 1 else -2) if rank_a == 1 else out


def compare(result) -> torch.Tensor:
    """A boolean comparison as 0.0 / 1.0."""
    return result.to(torch.get_default_dtype()) if torch.is_tensor(result) else float(result)


# ------------------------------------------------------------------ elementwise functions
def where(cond, a, b, like=None):
    """`where(c, a, b)`: a where c is non-zero, else b."""
    cond, a, b = _tensors((cond, a, b), like)
    return torch.where(cond != 0, a, b)


def minimum(a, b, like=None):
    return torch.minimum(*_tensors((a, b), like))


def maximum(a, b, like=None):
    return torch.maximum(*_tensors((a, b), like))


def clamp(x, low, high, like=None):
    x, low, high = _tensors((x, low, high), like)
    return torch.minimum(torch.maximum(x, low), high)


def floor(x):
    return torch.floor(x) if torch.is_tensor(x) else float(int(x // 1))


UNARY = {
    "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "abs": torch.abs, "sin": torch.sin,
    "cos": torch.cos, "tan": torch.tan, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "softplus": F.softplus, "relu": torch.relu, "floor": torch.floor, "sign": torch.sign,
}


# ------------------------------------------------------------------ layers
class Dense(nn.Module):
    """`dense(x, out, act)`: act(x @ weight + bias), weight stored [in, out]."""

    def __init__(self, in_features: int, out_features: int, activation: str = "identity"):
        super().__init__()
        bound = 1.0 / in_features ** 0.5
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation](F.linear(x, self.weight.t(), self.bias))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]} → {self.weight.shape[1]}, {self.activation}"


class MLP(nn.ModuleList):
    """`mlp(x, [h1, h2], out, act)`: dense layers numbered 0, 1, ...; last is linear."""

    def __init__(self, sizes: list[int], activation: str = "identity"):
        last = len(sizes) - 2
        super().__init__([Dense(i, o, "identity" if k == last else activation)
                          for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:]))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x)
        return x


def chain(layers, x: torch.Tensor) -> torch.Tensor:
    """Apply a run of layers in order (an `mlp` inside a node with several layers)."""
    for layer in layers:
        x = layer(x)
    return x


class LayerNorm(nn.LayerNorm):
    """`layernorm(x)`: normalise the last axis; learnable `weight` and `bias`."""


def bayes_dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, activation: str) -> torch.Tensor:
    """A Bayesian layer: weight [*batch, in, out] drawn per particle."""
    out = torch.matmul(x.unsqueeze(-2), weight).squeeze(-2) + bias
    return ACTIVATIONS[activation](out)


def features(x, categories: int | None = None, like=None):
    """What a layer reads: a label becomes one-hot, a scalar a 1-vector."""
    if categories is not None:
        return onehot(x, categories, like)
    return x
