"""Compile-time evaluation of constant expressions.

    >>> evaluate(parse_expr("sqrt(0.25) * D"), {"D": 4})
    2.0

Values are Python ints, floats, or lists of numbers (`const grid = [0.0, 0.2]`).
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
        return expr.value
    if isinstance(expr, ast.Name):
        if expr.id in env:
            return env[expr.id]
        raise NotConstant(expr.span, expr.id)
    if isinstance(expr, ast.ListLit):
        return [_scalar(evaluate(item, env), item.span) for item in expr.items]
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
        return sum(args[0]) if expr.func == "sum" else math.prod(args[0])
    raise NotConstant(expr.span)


def _index(expr: ast.Index, env: dict):
    value = evaluate(expr.target, env)
    if not isinstance(value, list) or len(expr.items) != 1 or isinstance(expr.items[0], ast.Slice):
        raise NotConstant(expr.span)
    position = as_int(evaluate(expr.items[0], env), expr.items[0].span, "an index")
    if not -len(value) <= position < len(value):
        raise ConstError(expr.span, f"index {position} is out of range for a list of {len(value)}")
    return value[position]


def _apply(func, values, span: Span):
    lists = [v for v in values if isinstance(v, list)]
    try:
        if not lists:
            return func(*values)
        length = len(lists[0])
        if any(len(v) != length for v in lists):
            raise ConstError(span, "lists of different lengths")
        columns = [v if isinstance(v, list) else [v] * length for v in values]
        return [func(*row) for row in zip(*columns)]
    except ZeroDivisionError:
        raise ConstError(span, "division by zero in a constant expression") from None
    except (ValueError, OverflowError) as exc:
        raise ConstError(span, f"cannot evaluate this constant: {exc}") from None


def _scalar(value, span: Span):
    if isinstance(value, list):
        raise ConstError(span, "nested lists are not constants")
    return value
