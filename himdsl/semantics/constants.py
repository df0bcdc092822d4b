"""Compile-time evaluation of constant expressions.

    >>> evaluate(parse_expr("sqrt(0.25) * D"), {"D": 4})
    2.0

Values are Python ints, floats, or rectangular (nested) lists of numbers
(`const grid = [0.0, 0.2]`, `const m = [[1, 2], [3, 4]]`); arithmetic on lists is
elementwise and broadcasts like numpy (trailing axes aligned).
A name that is not a constant raises `NotConstant`; arithmetic errors raise
`ConstError` with a user-facing message and the span of the offending expression.
"""
from __future__ import annotations

import math

from ..diagnostics import Span
from ..frontend import ast

_UNARY = {
    "exp": math.exp, "log": math.log, "sqrt": math.sqrt, "abs": abs, "sin": math.sin,
    "cos": math.cos, "tan": math.tan, "tanh": math.tanh,
    "sigmoid": lambda v: 1 / (1 + math.exp(-v)),
    "softplus": lambda v: math.log1p(math.exp(-abs(v))) + max(v, 0.0),
    "relu": lambda v: max(v, 0), "floor": math.floor,
    "sign": lambda v: (v > 0) - (v < 0),
}
_BINARY = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b, "^": lambda a, b: a ** b,
    "<": lambda a, b: float(a < b), "<=": lambda a, b: float(a <= b),
    ">": lambda a, b: float(a > b), ">=": lambda a, b: float(a >= b),
    "==": lambda a, b: float(a == b), "!=": lambda a, b: float(a != b),
}
_NARY = {"min": min, "max": max, "clamp": lambda v, lo, hi: min(max(v, lo), hi),
         "where": lambda c, a, b: a if c else b}


class NotConstant(Exception):
    """The expression refers to something that is not a compile-time constant."""

    def __init__(self, span: Span, name: str | None = None):
        super().__init__(name)
        self.span, self.name = span, name


class ConstError(Exception):
    """A constant expression that cannot be evaluated (division by zero, ...)."""

    def __init__(self, span: Span, message: str):
        super().__init__(message)
        self.span, self.message = span, message


def evaluate(expr: ast.Expr, env: dict):
    """The value of a constant expression given the constants defined so far."""
    if isinstance(expr, ast.Num):
        return finite(expr.value, expr.span)
    if isinstance(expr, ast.Name):
        if expr.id in env:
            return env[expr.id]
        raise NotConstant(expr.span, expr.id)
    if isinstance(expr, ast.ListLit):
        return _rectangular([evaluate(item, env) for item in expr.items], expr.items)
    if isinstance(expr, ast.Neg):
        return _apply(lambda v: -v, [evaluate(expr.operand, env)], expr.span)
    if isinstance(expr, ast.Binary) and expr.op in _BINARY:
        values = [evaluate(expr.left, env), evaluate(expr.right, env)]
        return _apply(_BINARY[expr.op], values, expr.span)
    if isinstance(expr, ast.Call) and not expr.kwargs:
        return _call(expr, env)
    if isinstance(expr, ast.Index) and isinstance(expr.target, ast.Name):
        return _index(expr, env)
    raise NotConstant(expr.span)


def as_int(value, span: Span, what: str) -> int:
    """An integer-valued constant (4 or 4.0), or a ConstError naming `what`."""
    if isinstance(value, (bool, list)) or not math.isfinite(value) or float(value) != int(value):
        raise ConstError(span, f"{what} must be a whole number, got {format_value(value)}")
    return int(value)


def shape_of(value) -> tuple[int, ...]:
    """The shape of a constant: () for a number, (2, 3) for two rows of three."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def format_value(value) -> str:
    """How a constant is written in messages."""
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return repr(value)


def _call(expr: ast.Call, env: dict):
    args = [evaluate(a, env) for a in expr.args]
    if expr.func in _UNARY and len(args) == 1:
        return _apply(_UNARY[expr.func], args, expr.span)
    if expr.func in _NARY and not any(isinstance(a, list) for a in args):
        try:
            return _NARY[expr.func](*args)
        except TypeError:
            raise ConstError(expr.span, f"wrong number of arguments to `{expr.func}`") from None
    if expr.func in ("sum", "prod") and len(args) == 1 and isinstance(args[0], list):
        return _reduce_last(sum if expr.func == "sum" else math.prod, args[0])
    raise NotConstant(expr.span)


def _reduce_last(func, value: list):
    """`sum`/`prod` over the last axis, as in the model (a matrix gives a vector)."""
    if value and isinstance(value[0], list):
        return [_reduce_last(func, row) for row in value]
    return func(value)


def _index(expr: ast.Index, env: dict):
    value = evaluate(expr.target, env)
    if not isinstance(value, list) or any(isinstance(item, ast.Slice) for item in expr.items):
        raise NotConstant(expr.span)
    for item in expr.items:
        if not isinstance(value, list):
            raise NotConstant(expr.span)
        position = as_int(evaluate(item, env), item.span, "an index")
        if not -len(value) <= position < len(value):
            raise ConstError(expr.span, f"index {position} is out of range for a list of {len(value)}")
        value = value[position]
    return value


OVERFLOW = "this number is too large: it overflows to infinity (the largest is about 1.8e308)"


def finite(value, span: Span):
    """`value`, or a ConstError when it (or an element) overflowed to inf or NaN:
    the generated code and the distributions need finite numbers."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, list):
            finite(item, span)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ConstError(span, OVERFLOW)
    return value


def _apply(func, values, span: Span):
    try:
        return finite(_elementwise(func, values, span), span)
    except ZeroDivisionError:
        raise ConstError(span, "division by zero in a constant expression") from None
    except (ValueError, OverflowError) as exc:
        raise ConstError(span, f"cannot evaluate this constant: {exc}") from None


def _elementwise(func, values: list, span: Span):
    """`func` on every element; a value of fewer axes is repeated along the leading
    axes of the others (numpy's broadcasting, without stretching axes of length 1)."""
    rank = max(len(shape_of(v)) for v in values)
    if rank == 0:
        return func(*values)
    deepest = [v for v in values if len(shape_of(v)) == rank]
    if any(len(v) != len(deepest[0]) for v in deepest):
        raise ConstError(span, "lists of different lengths")
    return [_elementwise(func, [v[i] if len(shape_of(v)) == rank else v for v in values], span)
            for i in range(len(deepest[0]))]


def _rectangular(items: list, exprs: list) -> list:
    """A list literal's value, if its items are all numbers or all lists of one shape
    (a matrix); otherwise a ConstError at the first item that does not fit."""
    first = shape_of(items[0]) if items else ()
    for number, (item, expr) in enumerate(zip(items, exprs), start=1):
        if isinstance(item, list) != bool(first):
            raise ConstError(expr.span, f"item {number} of this list is a "
                                        f"{'list' if isinstance(item, list) else 'number'}, item 1 a "
                                        f"{'list' if first else 'number'}: a list holds numbers or rows")
        if shape_of(item) != first:
            raise ConstError(expr.span, f"row {number} has {_size(shape_of(item))}, row 1 has {_size(first)}: "
                                        "the rows of a matrix must have the same length")
    return items


def _size(shape: tuple[int, ...]) -> str:
    """`3 items` for a row of numbers, `shape [2, 3]` for a row of rows."""
    if len(shape) == 1:
        return f"{shape[0]} item" + ("" if shape[0] == 1 else "s")
    return f"shape {list(shape)}"
