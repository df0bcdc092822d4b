"""AST of a `.him` program: plain dataclasses, every node carrying its source span.

`let h = dense(z, 8)` parses to
`Node(keyword="let", name="h", value=Call(func="dense", args=[Name("z"), Num(8)]))`.
Spans are excluded from equality so that parse → print → parse compares structure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..diagnostics import Span

NOWHERE = Span(0, 0, 0, 0)


def _span() -> Span:
    return field(default=NOWHERE, compare=False, repr=False)


# ---------------------------------------------------------------- expressions
@dataclass
class Num:
    value: float
    is_int: bool
    span: Span = _span()


@dataclass
class Str:
    value: str
    span: Span = _span()


@dataclass
class Name:
    id: str
    span: Span = _span()


@dataclass
class Neg:
    operand: "Expr"
    span: Span = _span()


@dataclass
class Binary:
    op: str  # one of + - * / @ ^ < <= > >= == !=
    left: "Expr"
    right: "Expr"
    span: Span = _span()


@dataclass
class Keyword:
    name: str
    value: "Expr"
    span: Span = _span()


@dataclass
class Call:
    func: str
    args: list["Expr"]
    kwargs: list[Keyword]
    span: Span = _span()
    func_span: Span = _span()
    # where a positional argument follows a named one (an error the checker reports)
    late_positional: Span = _span()


@dataclass
class Slice:
    start: "Expr | None"
    stop: "Expr | None"
    step: "Expr | None"
    span: Span = _span()


@dataclass
class Index:
    target: "Expr"
    items: list["Expr | Slice"]
    span: Span = _span()


@dataclass
class ListLit:
    items: list["Expr"]
    span: Span = _span()


Expr = Union[Num, Str, Name, Neg, Binary, Call, Index, ListLit]


# ---------------------------------------------------------------- types
@dataclass
class Type:
    """`real`, `real[D, 2]`, `int[3]` or `cat(K)`; `base` as written by the user."""

    base: str
    dims: list[Expr]
    categories: Expr | None = None
    span: Span = _span()


# ---------------------------------------------------------------- statements
@dataclass
class ModelName:
    name: str
    span: Span = _span()
    name_span: Span = _span()


@dataclass
class Const:
    name: str
    value: Expr
    span: Span = _span()
    name_span: Span = _span()


@dataclass
class Data:
    name: str
    type: Type
    span: Span = _span()
    name_span: Span = _span()


@dataclass
class Param:
    name: str
    type: Type
    span: Span = _span()
    name_span: Span = _span()


@dataclass
class Node:
    """`latent|noise|observe NAME ~ DIST [SHAPE]` (dist set) or
    `latent|let|observe NAME = EXPR` (value set)."""

    keyword: str
    name: str
    dist: Call | None = None
    shape: list[Expr] | None = None
    value: Expr | None = None
    span: Span = _span()
    name_span: Span = _span()


@dataclass
class ExternArg:
    name: str
    type: Type
    span: Span = _span()


@dataclass
class Extern:
    name: str
    params: list[ExternArg]
    result: Type
    path: Str
    span: Span = _span()
    name_span: Span = _span()


@dataclass
class Plate:
    name: str
    over: Name
    body: list["Stmt"]
    span: Span = _span()
    name_span: Span = _span()


@dataclass
class GuideEntry:
    name: str
    family: Expr
    span: Span = _span()


@dataclass
class Guide:
    entries: list[GuideEntry]
    span: Span = _span()


@dataclass
class Setting:
    name: str
    value: Expr
    span: Span = _span()


@dataclass
class Settings:
    """A `ratio { ... }` or `fit { ... }` block."""

    block: str
    entries: list[Setting]
    span: Span = _span()


Stmt = Union[ModelName, Const, Data, Param, Node, Extern, Plate, Guide, Settings]


@dataclass
class Program:
    statements: list[Stmt]
    path: str = field(default="<string>", compare=False)
    source: str = field(default="", compare=False, repr=False)


def walk_statements(statements: list[Stmt]):
    """Yield (statement, enclosing plates) for every statement, plates included."""
    stack: list[tuple[list[Stmt], tuple[Plate, ...]]] = [(statements, ())]
    while stack:
        body, plates = stack.pop()
        for stmt in body:
            yield stmt, plates
            if isinstance(stmt, Plate):
                stack.append((stmt.body, plates + (stmt,)))


def walk_expr(expr: Expr | Slice | None):
    """Yield every sub-expression of `expr`, itself first (pre-order)."""
    if expr is None:
        return
    yield expr
    for child in expr_children(expr):
        yield from walk_expr(child)


def expr_children(expr) -> list:
    """The direct sub-expressions of an expression node."""
    if isinstance(expr, Neg):
        return [expr.operand]
    if isinstance(expr, Binary):
        return [expr.left, expr.right]
    if isinstance(expr, Call):
        return list(expr.args) + [k.value for k in expr.kwargs]
    if isinstance(expr, Index):
        return [expr.target] + list(expr.items)
    if isinstance(expr, Slice):
        return [e for e in (expr.start, expr.stop, expr.step) if e is not None]
    if isinstance(expr, ListLit):
        return list(expr.items)
    return []
