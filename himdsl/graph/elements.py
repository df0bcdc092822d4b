"""Observations whose values are independent given their row: what lets a ratio
estimator learn the likelihood of one value instead of a whole row.

    observed_elements(checked)      # {"y": ("x",)}: covariate x has one value per value of y

With `noise e ~ Normal(0, 1) [K]` and `observe y = theta + sigma * e`, the K values
of y are independent given the row's latents (each has its own noise value) and
alike given the values of the covariates that go with them:
p(y | θ) = Π_k p1(y_k | θ, c_k). A ratio that learns p1 reads one value at a time
(docs/lfvi.md, "Values of a row"). The test is structural and conservative: the
observed array is the model's only one, a vector [K] (K >= 2) in the plate, and its
expression (through the `let`s it reads) is built only from element-wise
operations (arithmetic, comparisons, `exp`, `sigmoid`, `clamp`, `where`, ...) on

* constants, and the row's scalars: latents, noise-free `let`s, covariates of shape [];
* vector noise [K] drawn with such scalars as its arguments (so its values are
  independent and alike), or with element-wise functions of them and of
* plate covariates [K], one value per value of y (the element covariates).

Anything else (a reduction, indexing, `@`, a layer, an extern, scalar noise shared
by the row's values, a latent or `let` of shape [K]) may tie the values together or
set them apart, and the observation is left whole.
"""
from __future__ import annotations

from ..frontend import ast
from ..semantics import builtins as B

ELEMENTWISE_OPS = ("+", "-", "*", "/", "^", "<", "<=", ">", ">=", "==", "!=")
ROW_SCALAR_ROLES = ("global", "local", "deterministic", "covariate", "param", "const")


class _NotElementwise(Exception):
    """The expression ties the values of a row together (or cannot be shown not to)."""


def observed_elements(checked) -> dict[str, tuple[str, ...]]:
    """{observed array: its element covariates} when the model's one observation
    factorises over its values (module docstring); {} otherwise."""
    observed = [s for s in checked.symbols.values() if s.role == "observed"]
    if len(observed) != 1:
        return {}
    symbol = observed[0]
    if not symbol.plates or symbol.shape is None or len(symbol.shape) != 1 or symbol.shape[0] < 2:
        return {}
    stmt = symbol.stmt
    if not isinstance(stmt, ast.Node) or stmt.value is None:
        return {}          # `observe y ~ Dist(...)`: an explicit density, which needs no ratio
    walk = _Walk(checked, symbol.shape[0])
    try:
        walk.expression(stmt.value)
    except _NotElementwise:
        return {}
    if not walk.noise:
        return {}
    return {symbol.name: tuple(sorted(walk.covariates))}


class _Walk:
    """Checks an expression tree (and the `let`s and noise it reads) element by element."""

    def __init__(self, checked, size: int):
        self.checked, self.size = checked, size
        self.noise: set[str] = set()
        self.covariates: set[str] = set()
        self.seen: set[str] = set()

    def expression(self, expr) -> None:
        if isinstance(expr, ast.Num):
            return
        if isinstance(expr, ast.Name):
            return self.name(expr.id)
        if isinstance(expr, ast.Neg):
            return self.expression(expr.operand)
        if isinstance(expr, ast.Binary) and expr.op in ELEMENTWISE_OPS:
            self.expression(expr.left)
            return self.expression(expr.right)
        if isinstance(expr, ast.Call) and (expr.func in B.UNARY or expr.func in B.ELEMENTWISE_NARY):
            for arg in list(expr.args) + [k.value for k in expr.kwargs]:
                self.expression(arg)
            return
        raise _NotElementwise

    def name(self, name: str) -> None:
        symbol = self.checked.symbols.get(name)
        if symbol is None or symbol.shape is None:
            raise _NotElementwise
        shape = tuple(symbol.shape)
        if shape == ():
            if symbol.role not in ROW_SCALAR_ROLES:
                raise _NotElementwise            # scalar noise: shared by the row's values
            if symbol.role == "deterministic":
                self._let(symbol)
            return
        if shape != (self.size,):
            raise _NotElementwise
        if symbol.role == "noise":
            return self._noise(symbol)
        if symbol.role == "covariate" and symbol.plates:
            self.covariates.add(name)
            return
        if symbol.role == "deterministic":
            return self._let(symbol)
        raise _NotElementwise                    # a latent, parameter or constant vector

    def _let(self, symbol) -> None:
        """A `let`: element-wise itself. A scalar one that reads noise is refused by
        the noise's own shape rule (scalar noise)."""
        if symbol.name in self.seen:
            return
        self.seen.add(symbol.name)
        if symbol.stmt.value is None:
            raise _NotElementwise
        self.expression(symbol.stmt.value)

    def _noise(self, symbol) -> None:
        if symbol.name in self.seen:
            return
        self.seen.add(symbol.name)
        self.noise.add(symbol.name)
        dist = symbol.stmt.dist
        if dist is None:
            raise _NotElementwise
        for arg in list(dist.args) + [k.value for k in dist.kwargs]:
            self.expression(arg)
