"""Print an AST back to `.him` source (canonical spacing, minimal parentheses).

    >>> print_program(parse_source("let  y=(a+b)*2"))
    'let y = (a + b) * 2\\n'

`parse(print(parse(text))) == parse(text)` holds for every program (tested).
"""
from __future__ import annotations

from . import ast

# Binding strength: higher binds tighter.
_PRECEDENCE = {"cmp": 1, "+": 2, "-": 2, "*": 3, "/": 3, "@": 3, "neg": 4, "^": 5, "atom": 6}
_COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


def print_program(program: ast.Program) -> str:
    """The whole program as source text."""
    return "".join(line + "\n" for line in _statements(program.statements, ""))


def print_expr(expr) -> str:
    """One expression as source text."""
    return _expr(expr)


def _statements(statements, indent: str) -> list[str]:
    lines = []
    for stmt in statements:
        lines += [indent + line for line in _statement(stmt, indent)]
    return lines


def _statement(stmt, indent: str) -> list[str]:
    if isinstance(stmt, ast.ModelName):
        return [f"model {stmt.name}"]
    if isinstance(stmt, ast.Const):
        return [f"const {stmt.name} = {_expr(stmt.value)}"]
    if isinstance(stmt, (ast.Data, ast.Param)):
        keyword = "data" if isinstance(stmt, ast.Data) else "param"
        return [f"{keyword} {stmt.name} : {_type(stmt.type)}"]
    if isinstance(stmt, ast.Node):
        return [_node(stmt)]
    if isinstance(stmt, ast.Extern):
        params = ", ".join(f"{p.name} : {_type(p.type)}" for p in stmt.params)
        return [f'extern {stmt.name}({params}) -> {_type(stmt.result)} from "{stmt.path.value}"']
    if isinstance(stmt, ast.Plate):
        body = [line[len(indent):] for line in _statements(stmt.body, indent + "    ")]
        return [f"plate {stmt.name} over {stmt.over.id} {{"] + body + ["}"]
    if isinstance(stmt, ast.Guide):
        return ["guide {"] + [f"    {e.name} ~ {_expr(e.family)}" for e in stmt.entries] + ["}"]
    return [f"{stmt.block} {{"] + [f"    {s.name} = {_expr(s.value)}" for s in stmt.entries] + ["}"]


def _node(stmt: ast.Node) -> str:
    if stmt.dist is None:
        return f"{stmt.keyword} {stmt.name} = {_expr(stmt.value)}"
    shape = f" [{', '.join(_expr(d) for d in stmt.shape)}]" if stmt.shape is not None else ""
    return f"{stmt.keyword} {stmt.name} ~ {_expr(stmt.dist)}{shape}"


def _type(typ: ast.Type) -> str:
    if typ.categories is not None:
        return f"{typ.base}({_expr(typ.categories)})"
    dims = f"[{', '.join(_expr(d) for d in typ.dims)}]" if typ.dims else ""
    return typ.base + dims


def _strength(expr) -> int:
    if isinstance(expr, ast.Binary):
        return _PRECEDENCE["cmp"] if expr.op in _COMPARISONS else _PRECEDENCE[expr.op]
    if isinstance(expr, ast.Neg):
        return _PRECEDENCE["neg"]
    return _PRECEDENCE["atom"]


def _wrap(expr, minimum: int) -> str:
    text = _expr(expr)
    return f"({text})" if _strength(expr) < minimum else text


def _expr(expr) -> str:
    if isinstance(expr, ast.Num):
        return _number(expr)
    if isinstance(expr, ast.Str):
        return f'"{expr.value}"'
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Neg):
        return "-" + _wrap(expr.operand, _PRECEDENCE["neg"])
    if isinstance(expr, ast.Binary):
        return _binary(expr)
    if isinstance(expr, ast.Call):
        args = [_expr(a) for a in expr.args] + [f"{k.name} = {_expr(k.value)}" for k in expr.kwargs]
        return f"{expr.func}({', '.join(args)})"
    if isinstance(expr, ast.Index):
        return f"{_wrap(expr.target, _PRECEDENCE['atom'])}[{', '.join(_index_item(i) for i in expr.items)}]"
    return "[" + ", ".join(_expr(i) for i in expr.items) + "]"


def _number(num: ast.Num) -> str:
    if num.is_int:
        return str(num.value)
    if num.value == float("inf"):  # a literal too large for a float, e.g. 1e400
        return "1e999"
    return repr(num.value)


def _binary(expr: ast.Binary) -> str:
    strength = _strength(expr)
    if expr.op == "^":  # right-associative; its right side may be a unary minus
        return f"{_wrap(expr.left, strength + 1)} ^ {_wrap(expr.right, _PRECEDENCE['neg'])}"
    if expr.op in _COMPARISONS:  # comparisons do not chain
        return f"{_wrap(expr.left, strength + 1)} {expr.op} {_wrap(expr.right, strength + 1)}"
    return f"{_wrap(expr.left, strength)} {expr.op} {_wrap(expr.right, strength + 1)}"


def _index_item(item) -> str:
    if not isinstance(item, ast.Slice):
        return _expr(item)
    parts = ["" if p is None else _expr(p) for p in (item.start, item.stop)]
    text = ":".join(parts)
    return text + (f":{_expr(item.step)}" if item.step is not None else "")
