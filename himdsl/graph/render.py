"""Drawings of a model's dependency graph: DOT text, JSON data, and pictures.

    to_dot(graph)   # 'digraph "hier_gauss" { ... subgraph "cluster_n" { label="n over x  (N = rows of x)" ...'
    to_json(graph)  # {"model": "hier_gauss", "plates": [{"name": "n", "over": "x", ...}],
                    #  "nodes": [{"name": "beta", "role": "global", ...}, ...],
                    #  "edges": [{"source": "beta", "target": "z", "differentiable": true}, ...]}
    write_graph(graph, "graph.svg")   # -> "graphviz" when `dot` is installed, else "matplotlib"

The picture is a plate diagram: plates are boxes around their nodes, and a node's
shape and colour say its role (one table, `ROLE_STYLES`, serves both renderers).
The matplotlib fallback lays the graph out in layers (longest path from the
sources; a source sits just above its first child), orders each layer by
barycenters, and places every plate as one rigid block so its box stays tight.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from .build import topological_order

FORMATS = ("dot", "json", "svg", "png", "pdf")
IMAGE_FORMATS = ("svg", "png", "pdf")
RENDERERS = ("auto", "graphviz", "matplotlib")


class RenderError(Exception):
    """A drawing could not be written; the message is meant for the user."""


@dataclass(frozen=True)
class RoleStyle:
    shape: str          # ellipse | box | diamond | rounded
    fill: str
    edge: str
    text: str = "#000000"
    dashed: bool = False
    bold: bool = False
    legend: str = ""


ROLE_STYLES = {
    "noise": RoleStyle("diamond", "#f4f4f4", "#777777", "#444444", dashed=True, legend="noise"),
    "global": RoleStyle("ellipse", "#ffffff", "#000000", bold=True, legend="global latent"),
    "local": RoleStyle("ellipse", "#ffffff", "#000000", legend="local latent"),
    "deterministic": RoleStyle("box", "#ffffff", "#000000", legend="deterministic"),
    "observed": RoleStyle("ellipse", "#c8c8c8", "#000000", legend="observed data"),
    "covariate": RoleStyle("box", "#e3e3e3", "#000000", legend="covariate (data)"),
    "param": RoleStyle("box", "#000000", "#000000", "#ffffff", legend="parameter"),
    "extern": RoleStyle("rounded", "#fff4dc", "#8a6d3b", legend="extern simulator"),
}


# ------------------------------------------------------------------ labels
def node_label(name: str, attrs: dict) -> list[str]:
    """Label lines: the name (`extern f` for externs) and its type, e.g. ["x", "[10]"]."""
    title = f"extern {name}" if attrs["role"] == "extern" else name
    kind = _type_text(attrs)
    return [title, kind] if kind else [title]


def _type_text(attrs: dict) -> str:
    shape = attrs.get("shape")
    dims = "" if not shape else "[" + ", ".join(str(d) for d in shape) + "]"
    if attrs.get("dtype") == "cat":
        return f"cat({attrs.get('categories')})" + dims
    return ("int" if attrs.get("dtype") == "int" else "") + dims


def plate_label(name: str, plate: dict) -> str:
    """`n over x  (N = rows of x)`."""
    return f"{name} over {plate['over']}  ({name.upper()} = rows of {plate['over']})"


def _by_line(graph: nx.DiGraph, names) -> list[str]:
    return sorted(names, key=lambda n: (graph.nodes[n]["line"], n))


# ------------------------------------------------------------------ DOT
def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _quote(text: str) -> str:
    return f'"{_escape(text)}"'


def _dot_node(name: str, attrs: dict) -> str:
    """`"z2" [label="z2\\n[128]", shape="ellipse", ...]`, styled by the node's role."""
    style = ROLE_STYLES[attrs["role"]]
    styles = ["filled"] + (["dashed"] if style.dashed else []) + (["rounded"] if style.shape == "rounded" else [])
    dot = {"shape": "box" if style.shape == "rounded" else style.shape, "style": ",".join(styles),
           "fillcolor": style.fill, "color": style.edge, "fontcolor": style.text}
    if style.bold:
        dot["penwidth"] = "2"
    if attrs.get("weights"):
        dot["tooltip"] = "weights: " + ", ".join(attrs["weights"])
    label = "\\n".join(_escape(line) for line in node_label(name, attrs))
    return f'{_quote(name)} [label="{label}", ' + ", ".join(f"{k}={_quote(v)}" for k, v in dot.items()) + "]"


def _dot_plate(graph: nx.DiGraph, name: str, indent: str) -> list[str]:
    plates = graph.graph.get("plates", {})
    lines = [f"{indent}subgraph {_quote('cluster_' + name)} {{",
             f"{indent}    label={_quote(plate_label(name, plates[name]))}; labeljust=r; labelloc=b;",
             f"{indent}    style=rounded; color=\"#555555\";"]
    lines += _dot_members(graph, name, indent + "    ")
    return lines + [indent + "}"]


def _dot_members(graph: nx.DiGraph, plate: str | None, indent: str) -> list[str]:
    """Nodes directly in `plate` (None: top level), then its child plates as clusters."""
    members = [n for n in graph if graph.nodes[n]["plate"] == plate]
    lines = [indent + _dot_node(n, graph.nodes[n]) + ";" for n in _by_line(graph, members)]
    for child in _child_plates(graph, plate):
        lines += _dot_plate(graph, child, indent)
    return lines


def _child_plates(graph: nx.DiGraph, parent: str | None) -> list[str]:
    plates = graph.graph.get("plates", {})
    return sorted((p for p, info in plates.items() if info.get("parent") == parent),
                  key=lambda p: (plates[p]["line"], p))


def _sorted_edges(graph: nx.DiGraph) -> list[tuple[str, str, dict]]:
    key = {n: (graph.nodes[n]["line"], n) for n in graph}
    return sorted(graph.edges(data=True), key=lambda e: (key[e[1]], key[e[0]]))


def to_dot(graph: nx.DiGraph) -> str:
    """A Graphviz plate diagram of the graph; stable output (ordered by source line)."""
    name = graph.graph.get("model") or "model"
    lines = [f"digraph {_quote(name)} {{",
             f"    graph [label={_quote('model ' + name)}, labelloc=t, fontname=\"Helvetica\", "
             "nodesep=0.3, ranksep=0.45];",
             '    node [fontname="Helvetica", fontsize=11];',
             '    edge [color="#333333", arrowsize=0.7];']
    lines += _dot_members(graph, None, "    ")
    for source, target, data in _sorted_edges(graph):
        style = "" if data.get("differentiable", True) else " [style=dashed]"
        lines.append(f"    {_quote(source)} -> {_quote(target)}{style};")
    return "\n".join(lines + ["}"]) + "\n"


# ------------------------------------------------------------------ JSON
def to_json(graph: nx.DiGraph) -> dict:
    """The graph as plain data: model name, plates, nodes (topological order), edges."""
    plates = graph.graph.get("plates", {})
    order = topological_order(graph)
    rank = {n: i for i, n in enumerate(order)}
    return {
        "model": graph.graph.get("model"),
        "plates": [{"name": p, "over": info["over"], "parent": info.get("parent"), "line": info["line"]}
                   for p, info in sorted(plates.items(), key=lambda kv: (kv[1]["line"], kv[0]))],
        "nodes": [{"name": n, **{k: graph.nodes[n].get(k) for k in
                                 ("role", "plate", "shape", "dtype", "categories", "line", "weights")}}
                  for n in order],
        "edges": [{"source": s, "target": t, "differentiable": bool(d.get("differentiable", True))}
                  for s, t, d in sorted(graph.edges(data=True), key=lambda e: (rank[e[0]], rank[e[1]]))],
    }


# ------------------------------------------------------------------ files
def write_graph(graph: nx.DiGraph, path, renderer: str = "auto") -> str:
    """Write the graph to `path` in the format its extension names; return what wrote it
    ("dot", "json", "graphviz" or "matplotlib"). Raises RenderError or OSError."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise RenderError(f"cannot write `{path.name}`: the extension must be one of "
                          + ", ".join("." + f for f in FORMATS))
    if renderer not in RENDERERS:
        raise RenderError(f"unknown renderer `{renderer}`; expected auto, graphviz or matplotlib")
    path.parent.mkdir(parents=True, exist_ok=True)  # as `compile -o` and `simulate -o` do
    if fmt != "dot" and not nx.is_directed_acyclic_graph(graph):
        raise RenderError("the graph has a cycle (error E0180): fix the model before drawing it")
    if fmt == "dot":
        path.write_text(to_dot(graph), encoding="utf-8")
        return "dot"
    if fmt == "json":
        path.write_text(json.dumps(to_json(graph), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return "json"
    if renderer == "matplotlib" or (renderer == "auto" and shutil.which("dot") is None):
        from .draw import draw_matplotlib

        draw_matplotlib(graph, path, fmt)
        return "matplotlib"
    _run_graphviz(graph, path, fmt)
    return "graphviz"


def _run_graphviz(graph: nx.DiGraph, path: Path, fmt: str) -> None:
    dot = shutil.which("dot")
    if dot is None:
        raise RenderError("Graphviz's `dot` program is not installed; use --renderer matplotlib or install graphviz")
    try:
        done = subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=to_dot(graph),
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RenderError(f"could not run Graphviz's `dot`: {exc}") from exc
    if done.returncode != 0:
        raise RenderError(f"Graphviz's `dot` failed writing {path}: {done.stderr.strip()}")
