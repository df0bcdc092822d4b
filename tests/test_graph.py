"""The graph stage's data and drawings: `himdsl.graph.render` and `himdsl graph`.

Tests assert on the graph data (JSON, layout) first and on pictures only by
their file signatures: the drawing is checked by eye, its inputs by tests.
"""
from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from himdsl.cli import app
from himdsl.driver import run_frontend
from himdsl.graph import draw, render
from himdsl.graph.build import GRAPH_ROLES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_NAMES = sorted(p.parent.name for p in EXAMPLES.glob("*/model.him"))

TWO_PLATES = """model two_plates
data x : real[3]
data y : int
param W : real[3, 3]
latent mu ~ Normal(0, 1) [3]
let m2 = mu * 2
plate n over x {
    latent z ~ Normal(m2, 1) [3]
    noise e ~ Normal(0, 1) [3]
    observe x = z @ W + e
}
plate k over y {
    noise u ~ Normal(0, 1)
    observe y ~ Poisson(exp(sum(mu) + u))
}
"""

CYCLE = """model cyc
data x : real
let a = b + 1
let b = a * 2
noise e ~ Normal(0, 1)
observe x = a + e
"""


def graph_of(name: str):
    result = run_frontend(path=str(EXAMPLES / name / "model.him"))
    assert result.ok, result.rendered()
    return result.graph


@pytest.fixture(scope="module")
def graphs() -> dict:
    return {name: graph_of(name) for name in EXAMPLE_NAMES}


def nodes_by_name(data: dict) -> dict:
    return {n["name"]: n for n in data["nodes"]}


def edge_set(data: dict) -> set:
    return {(e["source"], e["target"]) for e in data["edges"]}


# ------------------------------------------------------------------ JSON
def test_deep_implicit_json(graphs):
    data = render.to_json(graphs["deep_implicit"])
    assert data["model"] == "deep_implicit"
    assert data["plates"] == [{"name": "n", "over": "x", "parent": None, "line": 8}]
    nodes = nodes_by_name(data)
    assert [n["name"] for n in data["nodes"]] == ["eps2", "eps1", "eps0", "z2", "h2", "z1", "h1", "x"]
    assert {n: (a["role"], a["plate"], a["shape"]) for n, a in nodes.items()} == {
        "eps2": ("noise", "n", [100]), "eps1": ("noise", "n", [100]), "eps0": ("noise", "n", [100]),
        "z2": ("local", "n", [128]), "h2": ("deterministic", "n", [128]),
        "z1": ("local", "n", [128]), "h1": ("deterministic", "n", [128]), "x": ("observed", "n", [10]),
    }
    assert nodes["x"]["dtype"] == "real" and nodes["x"]["line"] == 17
    assert nodes["z2"]["weights"] == ["z2.weight", "z2.bias"]
    assert edge_set(data) == {("eps2", "z2"), ("z2", "h2"), ("eps1", "z1"), ("h2", "z1"),
                              ("z1", "h1"), ("eps0", "x"), ("h1", "x")}
    assert {e["source"] for e in data["edges"] if e["target"] == "z1"} == {"eps1", "h2"}
    assert all(e["differentiable"] for e in data["edges"])


def test_hier_gauss_json(graphs):
    data = render.to_json(graphs["hier_gauss"])
    assert data["plates"] == [{"name": "n", "over": "x", "parent": None, "line": 11}]
    assert [n["name"] for n in data["nodes"]] == ["beta", "z", "eps", "x"]
    nodes = nodes_by_name(data)
    assert {n: (a["role"], a["plate"], a["shape"], a["line"]) for n, a in nodes.items()} == {
        "beta": ("global", None, [2], 9), "z": ("local", "n", [2], 12),
        "eps": ("noise", "n", [2], 13), "x": ("observed", "n", [2], 14),
    }
    assert data["edges"] == [{"source": "beta", "target": "z", "differentiable": True},
                             {"source": "z", "target": "x", "differentiable": True},
                             {"source": "eps", "target": "x", "differentiable": True}]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_example_json_is_consistent(graphs, name):
    graph = graphs[name]
    data = json.loads(json.dumps(render.to_json(graph)))
    assert data["model"] == name
    names = [n["name"] for n in data["nodes"]]
    assert sorted(names) == sorted(graph.nodes)
    plates = {p["name"] for p in data["plates"]}
    for node in data["nodes"]:
        assert node["role"] in GRAPH_ROLES
        assert node["plate"] is None or node["plate"] in plates
        assert node["shape"] is None or all(isinstance(d, int) and d > 0 for d in node["shape"])
    where = {n: i for i, n in enumerate(names)}
    assert edge_set(data) == set(graph.edges)
    assert all(where[e["source"]] < where[e["target"]] for e in data["edges"])  # topological
    assert any(n["role"] == "observed" for n in data["nodes"])


@pytest.mark.parametrize("name, node, role, plate", [
    ("bayes_gan", "h.weight", "global", None), ("bayes_gan", "x", "covariate", "n"),
    ("bayes_gan", "y", "observed", "n"), ("linear_regression", "w", "global", None),
    ("linear_regression", "f", "covariate", "n"), ("lotka_volterra", "lotka_volterra", "extern", None),
    ("gaussian_linear", "theta", "global", None), ("two_moons", "shift", "deterministic", None),
])
def test_example_roles(graphs, name, node, role, plate):
    attrs = nodes_by_name(render.to_json(graphs[name]))[node]
    assert (attrs["role"], attrs["plate"]) == (role, plate)


def test_non_differentiable_edges(graphs):
    assert {(e["source"], e["target"]) for e in render.to_json(graphs["bayes_gan"])["edges"]
            if not e["differentiable"]} == {("logits", "y")}


# ------------------------------------------------------------------ DOT
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_dot_has_every_plate_and_node(graphs, name):
    graph = graphs[name]
    dot = render.to_dot(graph)
    assert dot.startswith(f'digraph "{name}" {{') and dot.rstrip().endswith("}")
    assert dot == render.to_dot(graph)
    for plate in graph.graph["plates"]:
        assert f'subgraph "cluster_{plate}" {{' in dot
    for node in graph.nodes:
        assert f'\n    "{node}" [label=' in dot or f'\n        "{node}" [label=' in dot
    assert dot.count(" -> ") == graph.number_of_edges()


HIER_GAUSS_DOT = r"""digraph "hier_gauss" {
    graph [label="model hier_gauss", labelloc=t, fontname="Helvetica", nodesep=0.3, ranksep=0.45];
    node [fontname="Helvetica", fontsize=11];
    edge [color="#333333", arrowsize=0.7];
    "beta" [label="beta\n[2]", shape="ellipse", style="filled", fillcolor="#ffffff", color="#000000", fontcolor="#000000", penwidth="2"];
    subgraph "cluster_n" {
        label="n over x  (N = rows of x)"; labeljust=r; labelloc=b;
        style=rounded; color="#555555";
        "z" [label="z\n[2]", shape="ellipse", style="filled", fillcolor="#ffffff", color="#000000", fontcolor="#000000"];
        "eps" [label="eps\n[2]", shape="diamond", style="filled,dashed", fillcolor="#f4f4f4", color="#777777", fontcolor="#444444"];
        "x" [label="x\n[2]", shape="ellipse", style="filled", fillcolor="#c8c8c8", color="#000000", fontcolor="#000000"];
    }
    "beta" -> "z";
    "z" -> "x";
    "eps" -> "x";
}
"""


def test_dot_golden_hier_gauss(graphs):
    assert render.to_dot(graphs["hier_gauss"]) == HIER_GAUSS_DOT


def test_dot_styles_and_quoting(graphs):
    dot = render.to_dot(graphs["bayes_gan"])
    assert '"h.weight" [label="h.weight\\n[9, 32]", shape="ellipse"' in dot
    assert '"h.weight" -> "h";' in dot
    assert '"logits" -> "y" [style=dashed];' in dot
    assert 'label="n over y  (N = rows of y)"' in dot
    cluster = dot[dot.index('subgraph "cluster_n"'):]
    assert '"h.weight"' not in cluster.split("}")[0]  # Bayesian weights are outside the plate
    assert '"y" [label="y\\ncat(2)"' in dot
    extern = render.to_dot(graphs["lotka_volterra"])
    assert '"lotka_volterra" [label="extern lotka_volterra", shape="box", style="filled,rounded"' in extern


# ------------------------------------------------------------------ layout
def test_layers_put_noise_next_to_its_child(graphs):
    layer = draw.layer_nodes(graphs["deep_implicit"])
    assert layer == {"eps2": 0, "z2": 1, "h2": 2, "eps1": 2, "z1": 3, "h1": 4, "eps0": 4, "x": 5}


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def node_rect(lay, n):
    (w, h), x, y = lay.size[n], lay.x[n], lay.y[n]
    return x - w / 2, y - h / 2, x + w / 2, y + h / 2


@pytest.mark.parametrize("source", ["bayes_gan", "deep_implicit", "hier_gauss", "two_moons", TWO_PLATES],
                         ids=["bayes_gan", "deep_implicit", "hier_gauss", "two_moons", "two_plates"])
def test_layout_is_tidy(graphs, source):
    graph = graphs[source] if source in graphs else run_frontend(source).raise_for_errors().graph
    lay = draw.layout_graph(graph)
    boxes = draw.plate_boxes(graph, lay)
    rects = {n: node_rect(lay, n) for n in graph}
    names = sorted(graph)
    assert not [(a, b) for a in names for b in names if a < b and overlaps(rects[a], rects[b])]
    assert set(boxes) == set(graph.graph["plates"])
    for plate, box in boxes.items():
        for n in graph:
            inside = graph.nodes[n]["plate"] == plate
            r = rects[n]
            assert (box[0] < r[0] and r[2] < box[2] and box[1] < r[1] and r[3] < box[3]) == inside
            assert inside or not overlaps(box, r), (plate, n)
    plates = sorted(boxes)
    assert not [(p, q) for p in plates for q in plates if p < q and overlaps(boxes[p], boxes[q])]


# ------------------------------------------------------------------ files
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF"}


def assert_image(path: Path, fmt: str) -> None:
    head = path.read_bytes()[:400]
    if fmt == "svg":
        assert b"<svg" in head
    else:
        assert head.startswith(MAGIC[fmt])


@pytest.mark.parametrize("fmt", ["svg", "png", "pdf"])
def test_matplotlib_renderer(graphs, tmp_path, fmt):
    path = tmp_path / f"g.{fmt}"
    assert render.write_graph(graphs["bayes_gan"], path, renderer="matplotlib") == "matplotlib"
    assert_image(path, fmt)


def test_auto_falls_back_to_matplotlib_without_dot(graphs, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    path = tmp_path / "g.svg"
    assert render.write_graph(graphs["deep_implicit"], path) == "matplotlib"
    assert_image(path, "svg")
    with pytest.raises(render.RenderError, match="Graphviz's `dot` program is not installed"):
        render.write_graph(graphs["deep_implicit"], tmp_path / "h.svg", renderer="graphviz")


def fake_dot(tmp_path: Path, body: str) -> str:
    script = tmp_path / "dot"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_graphviz_renderer_runs_dot(graphs, tmp_path, monkeypatch):
    # a stand-in `dot` that records its arguments and copies the DOT text to -o
    dot = fake_dot(tmp_path, 'echo "$1" > "$0.args"; cat > "$3"\n')
    monkeypatch.setattr(shutil, "which", lambda name: dot if name == "dot" else None)
    path = tmp_path / "g.png"
    assert render.write_graph(graphs["hier_gauss"], path) == "graphviz"
    assert path.read_text() == render.to_dot(graphs["hier_gauss"])
    assert Path(dot + ".args").read_text().strip() == "-Tpng"


def test_graphviz_failure_is_a_render_error(graphs, tmp_path, monkeypatch):
    dot = fake_dot(tmp_path, 'echo "syntax error in line 1" >&2; exit 1\n')
    monkeypatch.setattr(shutil, "which", lambda name: dot)
    with pytest.raises(render.RenderError, match="syntax error in line 1"):
        render.write_graph(graphs["hier_gauss"], tmp_path / "g.pdf", renderer="graphviz")


def test_text_formats_and_bad_extension(graphs, tmp_path):
    graph = graphs["hier_gauss"]
    assert render.write_graph(graph, tmp_path / "g.dot") == "dot"
    assert (tmp_path / "g.dot").read_text() == render.to_dot(graph)
    assert render.write_graph(graph, tmp_path / "g.json") == "json"
    text = (tmp_path / "g.json").read_text()
    assert json.loads(text) == render.to_json(graph)
    assert text == json.dumps(render.to_json(graph), indent=2, sort_keys=True) + "\n"
    with pytest.raises(render.RenderError, match=r"extension must be one of \.dot, \.json"):
        render.write_graph(graph, tmp_path / "g.txt")
    # a missing folder is created, as `compile -o` and `simulate -o` do
    render.write_graph(graph, tmp_path / "missing" / "g.png", renderer="matplotlib")
    assert (tmp_path / "missing" / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_cyclic_graph_is_not_drawn(tmp_path):
    graph = run_frontend(CYCLE, path="cyc.him").graph
    assert '"a" -> "b";' in render.to_dot(graph) and '"b" -> "a";' in render.to_dot(graph)
    with pytest.raises(render.RenderError, match="cycle"):
        render.write_graph(graph, tmp_path / "g.png", renderer="matplotlib")


# ------------------------------------------------------------------ cycles
def test_cycle_is_reported_with_both_members():
    result = run_frontend(CYCLE, path="cyc.him")
    assert not result.ok
    [diag] = [d for d in result.diagnostics if d.code == "E0180"]
    assert "`a` (line 3)" in diag.message and "`b` (line 4)" in diag.message
    assert diag.span.line == 3
    assert [n.span.line for n in diag.notes] == [4]


# ------------------------------------------------------------------ CLI
runner = CliRunner()


def test_cli_prints_dot():
    result = runner.invoke(app, ["graph", str(EXAMPLES / "hier_gauss" / "model.him")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('digraph "hier_gauss" {')
    assert 'subgraph "cluster_n"' in result.stdout


def test_cli_writes_json(tmp_path):
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["graph", str(EXAMPLES / "deep_implicit" / "model.him"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    assert [n["name"] for n in json.loads(out.read_text())["nodes"]][-1] == "x"


def test_cli_rejects_bad_extension(tmp_path):
    result = runner.invoke(app, ["graph", str(EXAMPLES / "hier_gauss" / "model.him"), "-o", str(tmp_path / "g.txt")])
    assert result.exit_code == 2
    assert "extension must be one of" in result.stderr


def test_cli_graphviz_missing_exits_2(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = runner.invoke(app, ["graph", str(EXAMPLES / "hier_gauss" / "model.him"),
                                 "-o", str(tmp_path / "g.svg"), "--renderer", "graphviz"])
    assert result.exit_code == 2
    assert "use --renderer matplotlib" in result.stderr


def test_cli_broken_model_exits_1(tmp_path):
    model = tmp_path / "cyc.him"
    model.write_text(CYCLE)
    result = runner.invoke(app, ["graph", str(model)])
    assert result.exit_code == 1
    assert "E0180" in result.stderr and "cyclic definition" in result.stderr
    assert "Traceback" not in result.output
