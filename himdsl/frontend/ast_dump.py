"""An indented dump of the AST, for `himdsl compile --emit ast`.

    Program
      Node(keyword='latent', name='beta')  @ 9:1
        dist: Call(func='Normal') ...
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass

from . import ast


def dump_program(program: ast.Program) -> str:
    """Every statement and expression with its line:column."""
    lines: list[str] = [f"Program {program.path}"]
    for stmt in program.statements:
        _dump(stmt, 1, lines, label=None)
    return "\n".join(lines) + "\n"


def _dump(node, depth: int, lines: list[str], label: str | None) -> None:
    prefix = "  " * depth + (f"{label}: " if label else "")
    if isinstance(node, list):
        lines.append(prefix + "[]" if not node else prefix.rstrip())
        for item in node:
            _dump(item, depth + 1, lines, None)
        return
    if not is_dataclass(node):
        lines.append(prefix + repr(node))
        return
    scalars, children = _split(node)
    where = f"  @ {node.span.line}:{node.span.column}" if getattr(node, "span", None) else ""
    lines.append(f"{prefix}{type(node).__name__}({', '.join(scalars)}){where}")
    for name, value in children:
        _dump(value, depth + 1, lines, name)


def _split(node):
    scalars, children = [], []
    for f in fields(node):
        if not f.compare:
            continue
        value = getattr(node, f.name)
        if value is None or isinstance(value, (str, int, float, bool)):
            scalars.append(f"{f.name}={value!r}")
        else:
            children.append((f.name, value))
    return scalars, children
