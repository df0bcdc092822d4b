"""The pure-Python picture of a plate diagram (matplotlib), used when Graphviz's
`dot` is not installed.

    draw_matplotlib(graph, Path("graph.png"), "png")

The graph is laid out in layers (longest path from the sources; a source sits just
above its first child), each layer ordered by barycenters, and every plate placed
as one rigid block so its box stays tight; `layout_graph` returns the layout as
data so tests can check it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import networkx as nx

from .build import topological_order
from .render import ROLE_STYLES, _by_line, _child_plates, _sorted_edges, node_label, plate_label


# ------------------------------------------------------------------ layered layout
ROW = 1.25          # inches between layer centres
GAP = 0.3           # between neighbouring nodes in a layer
PAD = 0.18          # plate box padding around its nodes
LABEL_H = 0.24      # room for a plate's label under its last row
CHAR_W, LINE_H = 0.075, 0.17


@dataclass
class Layout:
    """Node centres and sizes (inches) and the layer of every node."""

    x: dict
    y: dict
    size: dict
    layer: dict


def node_size(name: str, attrs: dict) -> tuple[float, float]:
    """Width and height (inches) that fit the node's label inside its shape."""
    lines = node_label(name, attrs)
    text_w, text_h = CHAR_W * max(len(s) for s in lines), LINE_H * len(lines)
    shape = ROLE_STYLES[attrs["role"]].shape
    if shape == "ellipse":
        return max(0.7, 1.3 * text_w + 0.3), max(0.45, 1.4 * text_h + 0.1)
    if shape == "diamond":
        return max(0.8, 1.7 * text_w + 0.35), max(0.5, 1.6 * text_h + 0.2)
    return max(0.6, text_w + 0.3), max(0.38, text_h + 0.18)


def layer_nodes(graph: nx.DiGraph) -> dict[str, int]:
    """Layer = longest path from the sources; a source then moves down to sit just
    above its nearest child, so noise is drawn next to where it is used."""
    order = topological_order(graph)
    layer = {}
    for n in order:
        layer[n] = max((layer[p] + 1 for p in graph.predecessors(n)), default=0)
    for n in order:
        if graph.in_degree(n) == 0 and graph.out_degree(n):
            layer[n] = min(layer[c] for c in graph.successors(n)) - 1
    return layer


def _plate_path(graph: nx.DiGraph, node: str) -> list[str]:
    """Plates around `node`, outermost first."""
    plates, path, plate = graph.graph.get("plates", {}), [], graph.nodes[node]["plate"]
    while plate is not None and plate not in path:
        path.insert(0, plate)
        plate = plates.get(plate, {}).get("parent")
    return path


def order_layers(graph: nx.DiGraph, layer: dict) -> list[list[str]]:
    """Nodes of each layer left to right: barycenter sweeps down and up, keeping the
    members of a plate contiguous (ties put nodes outside a plate on its left)."""
    rows = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for n in _by_line(graph, graph):
        rows[layer[n]].append(n)
    for sweep in range(4):
        down = sweep % 2 == 0
        for i in (range(1, len(rows)) if down else range(len(rows) - 2, -1, -1)):
            rows[i] = _sort_row(graph, rows[i], rows[i - 1] if down else rows[i + 1])
    return rows


def _sort_row(graph: nx.DiGraph, row: list[str], ref: list[str]) -> list[str]:
    pos = {n: k for k, n in enumerate(ref)}
    bary = {}
    for k, n in enumerate(row):
        near = [pos[m] for m in nx.all_neighbors(graph, n) if m in pos]
        bary[n] = sum(near) / len(near) if near else k * len(ref) / max(len(row), 1)
    paths = {n: _plate_path(graph, n) for n in row}

    def group_value(plate: str) -> float:
        members = [n for n in row if plate in paths[n]]
        return sum(bary[n] for n in members) / len(members)

    def key(n: str) -> list:
        return [(group_value(p), "p:" + p) for p in paths[n]] + [(bary[n], "n:" + n)]
    return sorted(row, key=key)


def layout_graph(graph: nx.DiGraph) -> Layout:
    """Place every node: each plate is laid out on its own (innermost first) and then
    placed as one rigid block; nodes outside it are packed beside it."""
    layer = layer_nodes(graph)
    rows = order_layers(graph, layer)
    size = {n: node_size(n, graph.nodes[n]) for n in graph}
    x, _ = _place_group(graph, None, rows, layer, size)
    depth = max(layer.values(), default=0)
    return Layout(x, {n: (depth - layer[n]) * ROW for n in graph}, size, layer)


class _Block(NamedTuple):
    """A child plate placed as one rigid block: its x-range and its first/last layer."""

    plate: str
    left: float
    right: float
    first: int
    last: int


def _members(graph: nx.DiGraph, plate: str | None) -> list[str]:
    """Every node inside `plate`, nested plates included (None: all nodes)."""
    return [n for n in graph if plate is None or plate in _plate_path(graph, n)]


def _place_group(graph, plate, rows, layer, size) -> tuple[dict, float]:
    """x of every node in `plate` relative to its box's left edge, and the box width."""
    x, blocks = {}, []
    offset = 0.0
    children = sorted(_child_plates(graph, plate), key=lambda c: _mean_index(rows, _members(graph, c)))
    for child in children:
        inner, width = _place_group(graph, child, rows, layer, size)
        x.update({n: offset + v for n, v in inner.items()})
        members = _members(graph, child)
        layers = [layer[n] for n in members]
        blocks.append(_Block(child, offset, offset + width, min(layers), max(layers)))
        offset += width + GAP + max((size[n][0] for n in graph), default=0)
    direct = {n for n in graph if graph.nodes[n]["plate"] == plate}
    for sweep in range(3):
        for i in (range(len(rows)) if sweep != 1 else range(len(rows) - 1, -1, -1)):
            _place_row(graph, [n for n in rows[i] if n in direct], i, rows[i], blocks, x, size)
    spans = [(b.left, b.right) for b in blocks]
    if plate is None:
        return _normalise(x, size, spans, 0.0)
    x, width = _normalise(x, size, spans, PAD)
    return x, max(width, _label_width(graph, plate))


def _mean_index(rows: list[list[str]], names: list[str]) -> float:
    where = [row.index(n) for row in rows for n in names if n in row]
    return sum(where) / len(where) if where else 0.0


def _place_row(graph, row, i, full_row, blocks, x, size) -> None:
    """Place the nodes of one layer (outside every child block) near their neighbours,
    keeping the layer's order and leaving the blocks that span this layer free."""
    if not row:
        return
    wanted = {n: _wanted_x(graph, n, x) for n in row}
    spans = [b for b in blocks if b.first <= i <= b.last]
    segments = [[] for _ in range(len(spans) + 1)]
    for n in row:
        segments[_segment(n, full_row, spans, wanted[n], graph)].append(n)
    lows = [None] + [b.right for b in spans]
    highs = [b.left for b in spans] + [None]
    for seg, low, high in zip(segments, lows, highs):
        _pack(seg, wanted, size, x, low, high)


def _wanted_x(graph: nx.DiGraph, n: str, x: dict) -> float:
    near = [x[m] for m in nx.all_neighbors(graph, n) if m in x]
    if near:
        return sum(near) / len(near)
    return x.get(n, 0.0)


def _segment(n, full_row, spans, wanted, graph) -> int:
    """Which gap between the blocks of this layer the node goes in."""
    k = 0
    for j, block in enumerate(spans):
        inside = [m for m in full_row if block.plate in _plate_path(graph, m)]
        before = full_row.index(n) < full_row.index(inside[0]) if inside else wanted < (block.left + block.right) / 2
        if not before:
            k = j + 1
    return k


def _pack(seg, wanted, size, x, low, high) -> None:
    """Put `seg` (in order) as close to `wanted` as the bounds and spacing allow."""
    if not seg:
        return
    half = [size[n][0] / 2 for n in seg]
    pos = [wanted[n] for n in seg]
    if low is not None or high is None:
        edge = low + GAP if low is not None else None
        for k in range(len(seg)):
            floor = edge + half[k] if edge is not None else pos[k]
            pos[k] = max(pos[k], floor)
            edge = pos[k] + half[k] + GAP
    if high is not None:
        edge = high - GAP
        for k in reversed(range(len(seg))):
            pos[k] = min(pos[k], edge - half[k])
            edge = pos[k] - half[k] - GAP
    elif low is None:  # free layer: recentre the packed row on what it wanted
        shift = sum(wanted[n] - p for n, p in zip(seg, pos)) / len(seg)
        pos = [p + shift for p in pos]
    x.update(zip(seg, pos))


def _normalise(x: dict, size: dict, spans: list, pad: float) -> tuple[dict, float]:
    """Shift `x` so the group's left edge (nodes and child blocks) sits at `pad`."""
    if not x:
        return {}, 2 * pad
    left = min([v - size[n][0] / 2 for n, v in x.items()] + [a for a, _ in spans])
    right = max([v + size[n][0] / 2 for n, v in x.items()] + [b for _, b in spans])
    return {n: v - left + pad for n, v in x.items()}, right - left + 2 * pad


# ------------------------------------------------------------------ matplotlib drawing
def draw_matplotlib(graph: nx.DiGraph, path: Path, fmt: str) -> None:
    """Draw the plate diagram with matplotlib (no Graphviz needed) and save it.
    A bare `Figure` renders off-screen without touching pyplot's global backend."""
    from matplotlib.figure import Figure

    lay = layout_graph(graph)
    boxes = plate_boxes(graph, lay)
    x0, y0, x1, y1 = _extent(lay, boxes.values())
    legend_h = _legend_height(graph, x1 - x0)
    fig = Figure(figsize=(x1 - x0 + 0.4, y1 - y0 + legend_h + 0.75))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(x0 - 0.2, x1 + 0.2)
    ax.set_ylim(y0 - legend_h - 0.2, y1 + 0.55)
    ax.axis("off")
    ax.text((x0 + x1) / 2, y1 + 0.3, f"model {graph.graph.get('model') or ''}", ha="center", va="center",
            fontsize=11, fontweight="bold")
    for plate, box in sorted(boxes.items()):
        _draw_plate(ax, plate, graph.graph["plates"][plate], box)
    for source, target, data in _sorted_edges(graph):
        _draw_edge(ax, lay, graph, source, target, data.get("differentiable", True))
    for n in graph:
        _draw_node(ax, graph.nodes[n]["role"], lay.x[n], lay.y[n], *lay.size[n], node_label(n, graph.nodes[n]))
    _draw_legend(ax, graph, x0, y0 - 0.15, x1 - x0)
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
    fig.savefig(path, format=fmt, dpi=150, metadata=metadata)


def plate_boxes(graph: nx.DiGraph, lay: Layout) -> dict[str, tuple[float, float, float, float]]:
    """(left, bottom, right, top) of every non-empty plate: its nodes and nested
    boxes plus padding, and room for its label underneath (as `layout_graph` reserved)."""
    boxes = {}

    def visit(plate: str) -> None:
        for child in _child_plates(graph, plate):
            visit(child)
        direct = [n for n in graph if graph.nodes[n]["plate"] == plate]
        parts = [(lay.x[n] - lay.size[n][0] / 2, lay.y[n] - lay.size[n][1] / 2 - LABEL_H,
                  lay.x[n] + lay.size[n][0] / 2, lay.y[n] + lay.size[n][1] / 2) for n in direct]
        parts += [(b[0], b[1] - LABEL_H, b[2], b[3]) for c, b in boxes.items() if _parent(graph, c) == plate]
        if parts:
            left, right = min(p[0] for p in parts) - PAD, max(p[2] for p in parts) + PAD
            boxes[plate] = (left, min(p[1] for p in parts) - PAD, max(right, left + _label_width(graph, plate)),
                            max(p[3] for p in parts) + PAD)
    for plate in _child_plates(graph, None):
        visit(plate)
    return boxes


def _parent(graph: nx.DiGraph, plate: str) -> str | None:
    return graph.graph["plates"][plate].get("parent")


def _label_width(graph: nx.DiGraph, plate: str) -> float:
    return CHAR_W * len(plate_label(plate, graph.graph["plates"][plate])) + 0.25


def _extent(lay: Layout, boxes) -> tuple[float, float, float, float]:
    xs = [(lay.x[n] - lay.size[n][0] / 2, lay.x[n] + lay.size[n][0] / 2) for n in lay.x]
    ys = [(lay.y[n] - lay.size[n][1] / 2, lay.y[n] + lay.size[n][1] / 2) for n in lay.y]
    lefts = [a for a, _ in xs] + [b[0] for b in boxes]
    rights = [b for _, b in xs] + [b[2] for b in boxes]
    bottoms = [a for a, _ in ys] + [b[1] for b in boxes]
    tops = [b for _, b in ys] + [b[3] for b in boxes]
    if not lefts:
        return 0.0, 0.0, 3.0, 1.0
    return min(lefts), min(bottoms), max(max(rights), min(lefts) + 3.0), max(tops)


def _draw_plate(ax, name, plate, box) -> None:
    from matplotlib.patches import FancyBboxPatch

    left, bottom, right, top = box
    ax.add_patch(FancyBboxPatch((left, bottom), right - left, top - bottom, boxstyle="round,pad=0,rounding_size=0.12",
                                facecolor="none", edgecolor="#555555", linewidth=1.1, zorder=0))
    ax.text(right - 0.1, bottom + 0.1, plate_label(name, plate), ha="right", va="bottom", fontsize=8.5,
            color="#333333", zorder=0)


def _draw_node(ax, role, x, y, w, h, lines) -> None:
    from matplotlib.patches import Ellipse, FancyBboxPatch, Polygon, Rectangle

    style = ROLE_STYLES[role]
    common = dict(facecolor=style.fill, edgecolor=style.edge, linewidth=1.8 if style.bold else 1.0,
                  linestyle="--" if style.dashed else "-", zorder=2)
    if style.shape == "ellipse":
        patch = Ellipse((x, y), w, h, **common)
    elif style.shape == "diamond":
        patch = Polygon([(x - w / 2, y), (x, y + h / 2), (x + w / 2, y), (x, y - h / 2)], closed=True, **common)
    elif style.shape == "rounded":
        patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.1", **common)
    else:
        patch = Rectangle((x - w / 2, y - h / 2), w, h, **common)
    ax.add_patch(patch)
    if lines:
        ax.text(x, y, "\n".join(lines), ha="center", va="center", fontsize=9, color=style.text, zorder=3,
                linespacing=1.1)


def _boundary(shape: str, cx, cy, w, h, dx, dy) -> tuple[float, float]:
    """Where the ray from the centre towards (dx, dy) leaves the node's outline."""
    a, b = w / 2, h / 2
    if shape == "ellipse":
        t = 1 / max(((dx / a) ** 2 + (dy / b) ** 2) ** 0.5, 1e-9)
    elif shape == "diamond":
        t = 1 / max(abs(dx) / a + abs(dy) / b, 1e-9)
    else:
        t = min(a / abs(dx) if dx else float("inf"), b / abs(dy) if dy else float("inf"))
    return cx + t * dx, cy + t * dy


def _draw_edge(ax, lay, graph, source, target, differentiable) -> None:
    from matplotlib.patches import FancyArrowPatch

    (sx, sy), (tx, ty) = (lay.x[source], lay.y[source]), (lay.x[target], lay.y[target])
    dx, dy = tx - sx, ty - sy
    start = _boundary(ROLE_STYLES[graph.nodes[source]["role"]].shape, sx, sy, *lay.size[source], dx, dy)
    end = _boundary(ROLE_STYLES[graph.nodes[target]["role"]].shape, tx, ty, *lay.size[target], -dx, -dy)
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, shrinkA=0, shrinkB=1,
                                 color="#333333", linewidth=1.0, linestyle="-" if differentiable else "--",
                                 zorder=1))


def _legend_entries(graph: nx.DiGraph) -> list[tuple[str | None, str]]:
    roles = {graph.nodes[n]["role"] for n in graph}
    entries = [(role, style.legend) for role, style in ROLE_STYLES.items() if role in roles]
    if any(not d.get("differentiable", True) for _, _, d in graph.edges(data=True)):
        entries.append((None, "not differentiable"))
    return entries


def _legend_rows(graph: nx.DiGraph, width: float) -> list[list[tuple[str | None, str, float]]]:
    rows, used = [[]], 0.0
    for role, text in _legend_entries(graph):
        w = 0.55 + CHAR_W * 0.9 * len(text) + 0.25
        if rows[-1] and used + w > max(width, 3.0):
            rows, used = rows + [[]], 0.0
        rows[-1].append((role, text, w))
        used += w
    return rows


def _legend_height(graph: nx.DiGraph, width: float) -> float:
    return 0.3 * len(_legend_rows(graph, width)) + 0.15


def _draw_legend(ax, graph, left, top, width) -> None:
    from matplotlib.lines import Line2D

    for k, row in enumerate(_legend_rows(graph, width)):
        y, x = top - 0.15 - 0.3 * k, left
        for role, text, w in row:
            if role is None:
                ax.add_line(Line2D([x, x + 0.42], [y, y], color="#333333", linestyle="--", linewidth=1.0))
            else:
                _draw_node(ax, role, x + 0.21, y, 0.42, 0.22, [])
            ax.text(x + 0.52, y, text, ha="left", va="center", fontsize=8)
            x += w
