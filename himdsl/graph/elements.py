"""Observations whose values are independent given their row: what lets a ratio
estimator learn the likelihood of one value instead of a whole row.

    observed_elements(checked)      # {"y": ("x",)}: covariate x has one value per value of y

With `noise e ~ Normal(0, 1) [K]` and `observe y = theta + sigma * e`, the K values
of y are independent given the row's latents (each has its own noise value) and
alike given the values of the covariates that go with them:
p(y | θ) = Π_k p1(y_k | θ, c_k). A ratio that learns p1 reads one value at a time
(docs/lfvi.md, "Values of a row"). A value may itself be a vector: an observation
[K, d] whose slices y[k] are independent and alike (K draws of a d-dimensional
simulator, `stack(a + e[:, 0], b + e[:, 1])` with noise e [K, 2]) is scored one
slice at a time, each read whole.

The test is structural and conservative. The observed array is the model's only
one, of shape [K, ...] (K >= 2), and its expression (through the `let`s it reads)
is built only from element-wise operations (arithmetic, comparisons, `exp`,
`sigmoid`, `clamp`, `where`, ...), `stack` (a new last axis), indexing that keeps
the first axis whole (`e[:, 0]`), on

* constants and the row's own values (latents, noise-free `let`s, covariates that
  are not per value), of any shape that leaves the first axis alone when broadcast
  (a scalar, or [d] against [K, d]): every value reads the same;
* noise of shape [K, ...] drawn with such values as its arguments (so its slices
  are independent and alike), or with element-wise functions of them and of
* covariates of shape [K, ...], one slice per value of y (the element covariates).

Anything else (a reduction, other indexing, `@`, a layer, an extern, noise shared
by the row's values, a latent or `let` that varies along the first axis) may tie
the values together or set them apart, and the observation is left whole.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..frontend import ast
from ..semantics import builtins as B

ELEMENTWISE_OPS = ("+", "-", "*", "/", "^", "<", "<=", ">", ">=", "==", "!=")
ROW_ROLES = ("global", "local", "deterministic", "covariate", "param", "const")


class _NotElementwise(Exception):
    """The expression ties the values of a row together (or cannot be shown not to)."""


@dataclass(frozen=True)
class _Kind:
    """What an expression is to the values: the same for every value (`per_value`
    False), or one slice per value along its first axis; with its shape."""

    per_value: bool
    shape: tuple


def observed_elements(checked) -> dict[str, tuple[str, ...]]:
    """{observed array: its element covariates} when the model's one observation
    factorises over the slices of its first axis (module docstring); {} otherwise."""
    observed = [s for s in checked.symbols.values() if s.role == "observed"]
    if len(observed) != 1:
        return {}
    symbol = observed[0]
    if symbol.shape is None or len(symbol.shape) < 1 or symbol.shape[0] < 2:
        return {}
    stmt = symbol.stmt
    if not isinstance(stmt, ast.Node) or stmt.value is None:
        return {}          # `observe y ~ Dist(...)`: an explicit density, which needs no ratio
    walk = _Walk(checked, symbol.shape[0])
    try:
        kind = walk.expression(stmt.value)
    except _NotElementwise:
        return {}
    if not walk.noise or not kind.per_value or kind.shape != tuple(symbol.shape):
        return {}
    return {symbol.name: tuple(sorted(walk.covariates))}


class _Walk:
    """Follows an expression tree (and the `let`s and noise it reads), slice by slice."""

    def __init__(self, checked, size: int):
        self.checked, self.size = checked, size
        self.noise: set[str] = set()
        self.covariates: set[str] = set()
        self.lets: dict[str, _Kind] = {}

    def expression(self, expr) -> _Kind:
        if isinstance(expr, ast.Num):
            return _Kind(False, ())
        if isinstance(expr, ast.Name):
            return self.name(expr.id)
        if isinstance(expr, ast.Neg):
            return self.expression(expr.operand)
        if isinstance(expr, ast.Binary) and expr.op in ELEMENTWISE_OPS:
            return self._combined([expr.left, expr.right], self._shape(expr))
        if isinstance(expr, ast.Call) and (expr.func in B.UNARY or expr.func in B.ELEMENTWISE_NARY):
            return self._combined(list(expr.args) + [k.value for k in expr.kwargs], self._shape(expr))
        if isinstance(expr, ast.Call) and expr.func == "stack" and not expr.kwargs:
            shape = self._shape(expr)
            kind = self._combined(list(expr.args), shape[:-1])
            return _Kind(kind.per_value, shape)            # a new last axis: the first stays
        if isinstance(expr, ast.Index):
            return self._index(expr)
        raise _NotElementwise

    def name(self, name: str) -> _Kind:
        symbol = self.checked.symbols.get(name)
        if symbol is None or symbol.shape is None:
            raise _NotElementwise
        shape = tuple(symbol.shape)
        if symbol.role == "noise":
            return self._noise(symbol, shape)
        if symbol.role == "deterministic":
            return self._let(symbol)
        if symbol.role not in ROW_ROLES:
            raise _NotElementwise
        if symbol.role == "covariate" and shape and shape[0] == self.size:
            self.covariates.add(name)
            return _Kind(True, shape)
        return _Kind(False, shape)

    def _combined(self, args, shape: tuple, along_values: bool = False) -> _Kind:
        """Arguments broadcast element-wise to `shape`: per value if any is (or
        `along_values`: shape's first axis is the values', as a noise's [K, ...] is),
        and then every per-value one must have the first axis (the same rank) and
        every other must not reach it: a constant or `let` that varies along the
        values (`Poisson(c0 * exp(-k * times)) [K]`) makes them independent but not
        alike, and a value scored without its place would mix the others' laws."""
        kinds = [self.expression(a) for a in args]
        if not along_values and not any(k.per_value for k in kinds):
            return _Kind(False, shape)
        for k in kinds:
            if k.per_value and len(k.shape) != len(shape):
                raise _NotElementwise
            if not k.per_value and len(k.shape) == len(shape) and k.shape[0] != 1:
                raise _NotElementwise
        return _Kind(True, shape)

    def _index(self, expr) -> _Kind:
        """`a[...]` of the row's values is the row's; of a per-value array, only a
        whole first axis (`e[:, 0]`) keeps one slice per value."""
        target = self.expression(expr.target)
        for item in expr.items:
            parts = [item.start, item.stop, item.step] if isinstance(item, ast.Slice) else [item]
            if any(self.expression(p).per_value for p in parts if p is not None):
                raise _NotElementwise
        if not target.per_value:
            return _Kind(False, self._shape(expr))
        first = expr.items[0]
        whole = isinstance(first, ast.Slice) and first.start is first.stop is first.step is None
        shape = self._shape(expr)
        if not whole or not shape or shape[0] != self.size:
            raise _NotElementwise
        return _Kind(True, shape)

    def _shape(self, expr) -> tuple:
        vtype = self.checked.expr_shapes.get(id(expr))
        if vtype is None or vtype.shape is None:
            raise _NotElementwise
        return tuple(vtype.shape)

    def _let(self, symbol) -> _Kind:
        """A `let` is what its expression is (noise in it is judged by its own shape)."""
        if symbol.name not in self.lets:
            if symbol.stmt.value is None:
                raise _NotElementwise
            self.lets[symbol.name] = self.expression(symbol.stmt.value)
        return self.lets[symbol.name]

    def _noise(self, symbol, shape: tuple) -> _Kind:
        """Noise with one slice per value, its arguments the same for every slice or
        per value themselves; other noise (a scalar shared by the row) ties them."""
        if not shape or shape[0] != self.size:
            raise _NotElementwise
        if symbol.name not in self.noise:
            self.noise.add(symbol.name)
            dist = symbol.stmt.dist
            if dist is None:
                raise _NotElementwise
            self._combined(list(dist.args) + [k.value for k in dist.kwargs], shape, along_values=True)
        return _Kind(True, shape)
