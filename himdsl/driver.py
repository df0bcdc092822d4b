"""The pipeline in one place: parse → check → graph (→ codegen → load/train).

    result = run_frontend(path="model.him")
    result.ok, result.diagnostics, result.model, result.graph

Each stage returns values; nothing here prints. A syntax error stops after
parsing; semantic errors are all collected before the graph stage runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from .diagnostics import Diagnostic, HimError, render_all
from .frontend import ast
from .frontend.parser import parse_source
from .graph.build import analyse_graph, build_graph
from .semantics.checker import check_program
from .semantics.model import CheckedModel


@dataclass
class FrontendResult:
    """What the front end produced, stage by stage, and every diagnostic."""

    path: str
    source: str
    program: ast.Program | None = None
    model: CheckedModel | None = None
    graph: nx.DiGraph | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]

    def rendered(self) -> str:
        """Every diagnostic rendered, in source order."""
        return render_all(self.diagnostics, self.path, self.source)

    def raise_for_errors(self) -> "FrontendResult":
        """Raise `HimError` carrying the diagnostics when any is an error."""
        if not self.ok:
            raise HimError(self.diagnostics, self.path, self.source)
        return self


def read_source(path) -> str:
    """The text of a model file (OSError and UnicodeDecodeError propagate)."""
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def run_frontend(source: str | None = None, path: str = "<string>",
                 overrides: dict | None = None) -> FrontendResult:
    """Parse, check and build the graph of a model given as text or as a file path."""
    if source is None:
        source = read_source(path)
    result = FrontendResult(str(path), source)
    try:
        result.program = parse_source(source, str(path))
    except HimError as exc:
        result.diagnostics = exc.diagnostics
        return result
    result.model, result.diagnostics = check_program(result.program, overrides)
    result.graph = build_graph(result.model)
    result.diagnostics += analyse_graph(result.model, result.graph, result.diagnostics)
    return result
