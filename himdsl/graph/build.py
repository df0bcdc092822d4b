"""The dependency graph of a checked model (networkx), and the rules that need it.

    graph = build_graph(model)      # nodes: names; attrs: role, plate, shape, line
    order = topological_order(graph)
    diags = analyse_graph(model, graph)   # cycles, untrainable parameters

Point-estimated layer weights are not nodes: they belong to their node
(`graph.nodes["z2"]["weights"] == ["z2.weight", "z2.bias"]`). A Bayesian layer's
weights are global latents and appear as nodes of their own.
"""
from __future__ import annotations

import networkx as nx

from ..diagnostics import Diagnostic, Note, error, warning
from ..semantics.model import CheckedModel, Symbol

GRAPH_ROLES = ("noise", "global", "local", "deterministic", "observed", "covariate", "param", "extern")


def build_graph(model: CheckedModel) -> nx.DiGraph:
    """Nodes for every non-constant symbol (and Bayesian weights), edges parent → child."""
    graph = nx.DiGraph(model=model.name, plates={
        name: {"over": p.over, "parent": p.parent, "line": p.span.line} for name, p in model.plates.items()
    })
    for symbol in model.symbols.values():
        if symbol.role in GRAPH_ROLES:
            graph.add_node(symbol.name, **_node_attrs(symbol))
    for layer in model.layers:
        _add_layer(graph, layer)
    for symbol in model.symbols.values():
        for parent, edge in symbol.parents.items():
            if parent in graph and symbol.name in graph:
                graph.add_edge(parent, symbol.name, differentiable=edge.differentiable,
                               blocked_only_by_externs=edge.blocked_only_by_externs)
    return graph


def _node_attrs(symbol: Symbol) -> dict:
    return {
        "role": symbol.role,
        "plate": symbol.plate,
        "shape": list(symbol.shape) if symbol.shape is not None else None,
        "dtype": symbol.dtype,
        "categories": symbol.categories,
        "line": symbol.line,
        "weights": [],
    }


def _add_layer(graph: nx.DiGraph, layer) -> None:
    if layer.owner not in graph:
        return
    names = [layer.weight_name, layer.bias_name]
    if not layer.bayesian:
        graph.nodes[layer.owner]["weights"].extend(names)
        return
    line = layer.call.span.line if layer.call is not None else 0
    for name, shape in zip(names, [layer.weight_shape, (layer.out_features,)]):
        graph.add_node(name, role="global", plate=None, shape=list(shape), dtype="real",
                       categories=None, line=line, weights=[])
        graph.add_edge(name, layer.owner, differentiable=layer.differentiable,
                       blocked_only_by_externs=layer.through_extern or layer.differentiable)


def topological_order(graph: nx.DiGraph) -> list[str]:
    """Nodes in an order where every parent comes before its children; ties by line."""
    return list(nx.lexicographical_topological_sort(graph, key=lambda n: (graph.nodes[n]["line"], n)))


def analyse_graph(model: CheckedModel, graph: nx.DiGraph, prior: list[Diagnostic] = ()) -> list[Diagnostic]:
    """Graph-level diagnostics: cycles, and (in a model without other errors)
    parameters that cannot be trained. `prior` are the checker's diagnostics."""
    cycles = _cycles(model, graph)
    if cycles or any(d.is_error for d in prior):
        return cycles  # gradient paths are meaningless in a broken model
    return _untrainable(model, graph)


def _cycles(model: CheckedModel, graph: nx.DiGraph) -> list[Diagnostic]:
    diags = []
    for component in nx.strongly_connected_components(graph):
        members = sorted(component, key=lambda n: graph.nodes[n]["line"])
        if len(members) == 1 and not graph.has_edge(members[0], members[0]):
            continue
        cycle = _cycle_path(graph, members)[::-1]  # edges run parent → child; read child needs parent
        named = [f"`{n}` (line {graph.nodes[n]['line']})" for n in cycle[:-1]] + [f"`{cycle[-1]}`"]
        listing = f"{named[0]} needs " + (", which needs ".join(named[1:]) if len(cycle) > 2 else "itself")
        first = model.symbols[members[0]]
        notes = [Note(model.symbols[n].span, f"`{n}` is part of the cycle") for n in members[1:]
                 if n in model.symbols]
        diags.append(error("E0180", first.span, f"cyclic definition: {listing}",
                           "the model must be a directed acyclic graph: break the cycle", notes))
    return diags


def _cycle_path(graph: nx.DiGraph, members: list[str]) -> list[str]:
    try:
        edges = nx.find_cycle(graph.subgraph(members), source=members[0])
        return [u for u, _ in edges] + [edges[0][0]]
    except nx.NetworkXNoCycle:  # pragma: no cover - members form a strongly connected set
        return members


def _untrainable(model: CheckedModel, graph: nx.DiGraph) -> list[Diagnostic]:
    return [diag for diag, _ in _trainability_of_estimates(model, graph)]


def untrained_point_estimates(model: CheckedModel, graph: nx.DiGraph) -> tuple[str, ...]:
    """Names of the point-estimated parameters no gradient from the data reaches
    (W0171, W0172): `fit` leaves them at their initial values and says so."""
    return tuple(n for diag, names in _trainability_of_estimates(model, graph)
                 if diag.code in ("W0171", "W0172") for n in names)


def _trainability_of_estimates(model: CheckedModel, graph: nx.DiGraph):
    """(diagnostic, parameter names) of every point estimate that cannot be trained."""
    observed = {n for n, a in graph.nodes(data=True) if a["role"] == "observed"}
    if not observed:
        return
    for start, how, span, what, names in _point_estimates(model):
        diag = _trainability(graph, start, how, observed, span, what)
        if diag is not None:
            yield diag, names


def _point_estimates(model: CheckedModel):
    """(node the estimate enters, how it enters, span, description, parameter names)
    for params and point-estimated layer weights; `how` is smooth, blocked or extern."""
    for symbol in model.by_role("param"):
        yield symbol.name, "smooth", symbol.span, f"param `{symbol.name}`", (symbol.name,)
    for layer in model.layers:
        if layer.bayesian or layer.owner not in model.symbols:
            continue
        how = "smooth" if layer.differentiable else "extern" if layer.through_extern else "blocked"
        span = layer.call.span if layer.call is not None else model.symbols[layer.owner].span
        yield (layer.owner, how, span, f"layer `{layer.prefix}` (weights `{layer.weight_name}`, "
               f"`{layer.bias_name}`)", (layer.weight_name, layer.bias_name))


def _trainability(graph, start, how, observed, span, what) -> Diagnostic | None:
    smooth = _reach(graph, start, lambda d: d["differentiable"])
    if how == "smooth" and smooth & observed:
        return None
    if not _reach(graph, start, lambda d: True) & observed:
        return warning("W0172", span, f"{what} has no effect on any observed data",
                       "it cannot be estimated; remove it or use it")
    without_extern = _reach(graph, start, lambda d: d["differentiable"] or not d["blocked_only_by_externs"])
    if how != "extern" and without_extern & observed:
        return warning("W0171", span, f"{what} reaches the data only through non-differentiable operations "
                                      "(argmax, comparisons, `where` conditions, floor/sign)",
                       "its gradient is zero: give it a prior (`prior = Normal(0, 1)`) to infer it instead")
    return error("E0170", span, f"{what} reaches the data only through an extern simulator, "
                                "which is never differentiated, so it cannot be trained",
                 "give it a prior to infer it instead (a global `latent`, or `prior = ...` on a layer)")


def _reach(graph: nx.DiGraph, start: str, allowed) -> set[str]:
    """`start` and the nodes reachable from it along edges whose data satisfies `allowed`."""
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        for child in graph.successors(node):
            if child not in seen and allowed(graph.edges[node, child]):
                seen.add(child)
                stack.append(child)
    return seen
