"""The checked model: what the checker knows about every name, layer and setting.

Later stages (graph, codegen, trainer) read only this, never the raw AST checks.
For `latent z ~ Normal(beta, 1) [2]` inside `plate n over x`:
`Symbol(name="z", role="local", plates=("n",), shape=(2,), dtype="real", ...)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..diagnostics import Span
from ..frontend import ast

# Roles of graph nodes. `observed` is a data array tied to the model's output,
# `covariate` a data array the model conditions on.
ROLES = ("noise", "global", "local", "deterministic", "observed", "covariate", "param",
         "extern", "const")


@dataclass
class Edge:
    """How a parent reaches a child. `differentiable`: at least one use passes
    gradients. `blocked_only_by_externs`: every use that blocks gradients does so
    because it is an argument of an extern (vacuously true when none blocks)."""

    differentiable: bool = False
    blocked_only_by_externs: bool = True
    spans: list[Span] = field(default_factory=list)


@dataclass
class Symbol:
    name: str
    role: str
    stmt: object  # the declaring AST statement
    span: Span  # the name in its declaration
    plates: tuple[str, ...] = ()
    shape: tuple[int, ...] | None = None  # None when unknown after an error
    dtype: str = "real"  # real | int | cat
    categories: int | None = None
    parents: dict[str, Edge] = field(default_factory=dict)
    value: object = None  # constants only
    declared: object = None  # the `data` statement of an observed array

    @property
    def plate(self) -> str | None:
        return self.plates[-1] if self.plates else None

    @property
    def line(self) -> int:
        return self.span.line


@dataclass
class Layer:
    """One learnable layer inside a node's expression (`z2 = dense(eps2, 128)`)."""

    owner: str
    prefix: str  # "z2", or "h.0" when a node holds several layers
    kind: str  # dense | layernorm
    in_features: int
    out_features: int
    activation: str = "identity"
    prior: ast.Call | None = None  # a Bayesian layer's weight prior
    call: ast.Call | None = None
    # whether the layer's output reaches its node differentiably / only via an extern
    differentiable: bool = True
    through_extern: bool = False

    @property
    def bayesian(self) -> bool:
        return self.prior is not None

    @property
    def weight_name(self) -> str:
        return f"{self.prefix}.weight"

    @property
    def bias_name(self) -> str:
        return f"{self.prefix}.bias"

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_features,) if self.kind == "layernorm" else (self.in_features, self.out_features)


@dataclass
class PlateInfo:
    name: str
    over: str
    parent: str | None
    span: Span


@dataclass
class ExternInfo:
    name: str
    params: list[tuple[str, tuple[int, ...], str]]  # (name, shape, dtype)
    shape: tuple[int, ...]
    dtype: str
    path: str
    span: Span


@dataclass
class GuideSpec:
    name: str
    family: str
    options: dict = field(default_factory=dict)
    span: Span | None = None


@dataclass
class CheckedModel:
    name: str
    program: ast.Program
    symbols: dict[str, Symbol] = field(default_factory=dict)
    plates: dict[str, PlateInfo] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    externs: dict[str, ExternInfo] = field(default_factory=dict)
    guide: dict[str, GuideSpec] = field(default_factory=dict)
    ratio: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    # per-expression facts for the code generator, keyed by id() of AST nodes
    expr_shapes: dict[int, tuple] = field(default_factory=dict)
    call_layers: dict[int, list[Layer]] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.program.path

    @property
    def source(self) -> str:
        return self.program.source

    def by_role(self, *roles: str) -> list[Symbol]:
        """Symbols with one of `roles`, in declaration order."""
        return [s for s in self.symbols.values() if s.role in roles]

    @property
    def constants(self) -> dict:
        return {s.name: s.value for s in self.by_role("const")}
