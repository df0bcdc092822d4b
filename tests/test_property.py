"""Property tests of the front end (hypothesis, derandomized so runs repeat).

(a) Programs generated from the grammar, with random names, numbers, operators,
    calls of real and unknown functions and distributions and random shapes,
    never make `run_frontend` raise: every mistake is a diagnostic. Every program
    that parses survives print → parse unchanged, and a clean one stays clean.
(b) Random token-level mutations of the examples never make `run_frontend` raise.
"""
from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from himdsl.diagnostics import HimError
from himdsl.driver import run_frontend
from himdsl.frontend.parser import parse_source
from himdsl.frontend.printer import print_program
from himdsl.semantics import builtins as B

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/*/model.him"))
SOURCES = [(p, p.read_text()) for p in EXAMPLES]

FAST = settings(derandomize=True, deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------ (a) generated programs
NAMES = ["x", "y", "z", "h", "eps", "beta", "w", "d", "K", "n", "lab", "f", "sim"]
ODD_NAMES = ["Normal", "exp", "relu", "noise", "h2", "xx", "Normall", "softmax"]
name = st.one_of(st.sampled_from(NAMES), st.sampled_from(ODD_NAMES))
number = st.one_of(st.integers(0, 12).map(str), st.sampled_from(["0.5", "1e-3", "2.", ".25", "0", "1e400"]))
function = st.one_of(st.sampled_from(sorted(B.FUNCTIONS)), st.sampled_from(["foo", "sim", "Normal", "sigmoyd"]))
distribution = st.one_of(st.sampled_from(sorted(B.DISTRIBUTIONS)), st.sampled_from(["Gaussian", "normal", "exp"]))
arg_name = st.sampled_from(["loc", "scale", "probs", "logits", "rate", "df", "prior", "noise", "hidden", "scal"])
BINARY = ["+", "-", "*", "/", "@", "^", "<", "<=", ">", ">=", "==", "!="]
ACTIVATION = st.sampled_from(list(B.ACTIVATIONS) + ["rleu"])


def join(items) -> str:
    return ", ".join(items)


def _extend(inner):
    args = st.lists(inner, max_size=4)
    kwargs = st.lists(st.tuples(arg_name, inner).map(lambda kv: f"{kv[0]} = {kv[1]}"), max_size=2)
    index_item = st.one_of(inner, st.tuples(st.sampled_from(["", "0", "1", "-1"]),
                                            st.sampled_from(["", "2", "3"]), st.sampled_from(["", ":2"]))
                           .map(lambda t: f"{t[0]}:{t[1]}{t[2]}"))
    return st.one_of(
        st.tuples(inner, st.sampled_from(BINARY), inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        inner.map(lambda e: f"-{e}"),
        inner.map(lambda e: f"({e})"),
        st.tuples(function, args, kwargs).map(lambda t: f"{t[0]}({join(t[1] + t[2])})"),
        st.tuples(st.sampled_from(["dense", "mlp"]), inner, number, ACTIVATION).map(
            lambda t: f"{t[0]}({t[1]}, {'[' + t[2] + ']' if t[0] == 'mlp' else t[2]}, "
                      f"{t[2] if t[0] == 'mlp' else ''}{', ' if t[0] == 'mlp' else ''}{t[3]})"),
        st.tuples(inner, st.lists(index_item, min_size=1, max_size=3)).map(lambda t: f"{t[0]}[{join(t[1])}]"),
        st.lists(inner, max_size=3).map(lambda items: f"[{join(items)}]"),
        st.tuples(inner, arg_name).map(lambda t: f"dense({t[0]}, 3, prior = Normal(0, 1))"),
    )


expr = st.recursive(st.one_of(name, number), _extend, max_leaves=5)
small_dim = st.one_of(st.integers(1, 5).map(str), st.sampled_from(["d", "K", "0", "-1", "2.5", "d + 1", "w"]))
shape = st.lists(small_dim, min_size=1, max_size=3).map(lambda ds: f"[{join(ds)}]")
opt_shape = st.one_of(st.just(""), shape.map(lambda s: " " + s))
dtype = st.one_of(st.tuples(st.sampled_from(["real", "int"]), opt_shape).map("".join),
                  small_dim.map(lambda k: f"cat({k})"), st.sampled_from(["float", "cat", "real(3)"]))
dist = st.tuples(distribution, st.lists(expr, max_size=3),
                 st.lists(st.tuples(arg_name, expr).map(lambda kv: f"{kv[0]} = {kv[1]}"), max_size=2),
                 opt_shape).map(lambda t: f"{t[0]}({join(t[1] + t[2])}){t[3]}")

simple_statement = st.one_of(
    st.tuples(name, expr).map(lambda t: f"const {t[0]} = {t[1]}"),
    st.tuples(name, dtype).map(lambda t: f"data {t[0]} : {t[1]}"),
    st.tuples(name, dtype).map(lambda t: f"param {t[0]} : {t[1]}"),
    st.tuples(st.sampled_from(["latent", "noise", "observe"]), name, dist).map(lambda t: f"{t[0]} {t[1]} ~ {t[2]}"),
    st.tuples(st.sampled_from(["latent", "let", "observe"]), name, expr).map(lambda t: f"{t[0]} {t[1]} = {t[2]}"),
    st.tuples(name, dtype, dtype, st.sampled_from(['"sim.py"', '"nowhere.py"', '"data.txt"'])).map(
        lambda t: f"extern {t[0]}(a : {t[1]}) -> {t[2]} from {t[3]}"),
    st.lists(st.tuples(name, st.one_of(st.sampled_from(["flow", "normal", "point", "implicit", "auto", "flw"]),
                                       st.just("implicit(hidden = [8], noise = 4)"))), max_size=3).map(
        lambda es: "guide { " + "; ".join(f"{n} ~ {fam}" for n, fam in es) + " }"),
    st.tuples(st.sampled_from(["ratio", "fit"]),
              st.lists(st.tuples(st.sampled_from(["steps", "batch", "lr", "hidden", "loss", "mode", "seed", "step"]),
                                 st.one_of(expr, st.sampled_from(["log", "hinge", "auto", "[8, 8]"]))), max_size=3)).map(
        lambda t: t[0] + " { " + "; ".join(f"{k} = {v}" for k, v in t[1]) + " }"),
    st.just("model m"),
)


def _plate(body):
    return st.tuples(name, name, st.lists(body, max_size=3)).map(
        lambda t: f"plate {t[0]} over {t[1]} {{\n" + "\n".join("    " + line for s in t[2] for line in s.split("\n"))
                  + "\n}")


statement = st.recursive(simple_statement, lambda inner: st.one_of(inner, _plate(inner)), max_leaves=5)
program = st.lists(statement, max_size=8).map(lambda stmts: "\n".join(stmts) + "\n")


# Well-formed models: names declared before use with matching shapes, so most are
# clean and exercise the deeper checks (graph, gradients, settings) and the printer.
UNARY = ["tanh", "exp", "sigmoid", "softplus", "relu", "abs", "sin"]
DISTS = ["Normal(0, 1)", "Normal(beta, 1)", "Uniform(-1, 1)", "Laplace(0, 2)", "StudentT(3, 0, 1)",
         "Gumbel(0, 1)", "LogNormal(0, 0.5)"]


@st.composite
def valued(draw, names: list[str], k: str) -> str:
    """An expression of shape [k] over `names` (each of shape [k])."""
    leaf = st.sampled_from(names)
    parts = draw(st.lists(leaf, min_size=1, max_size=3))
    text = parts[0]
    for other in parts[1:]:
        text = f"{text} {draw(st.sampled_from(['+', '-', '*']))} {other}"
    wrap = draw(st.sampled_from(["id", "unary", "dense", "mlp", "concat", "where", "argmax", "index"]))
    if wrap == "unary":
        return f"{draw(st.sampled_from(UNARY))}({text})"
    if wrap == "dense":
        return f"dense({text}, {k}, {draw(ACTIVATION.filter(lambda a: a != 'rleu'))})"
    if wrap == "mlp":
        return f"mlp({text}, [4, 4], {k}, relu)"
    if wrap == "concat":
        return f"dense(concat({text}, {draw(leaf)}), {k})"
    if wrap == "where":
        return f"where({draw(leaf)} > 0, {text}, 0)"
    if wrap == "argmax":
        return f"{text} + onehot(argmax({draw(leaf)}), {k})"
    if wrap == "index":
        return f"{text} * {draw(leaf)}[0]"
    return text


@st.composite
def well_formed(draw) -> str:
    k = draw(st.sampled_from(["1", "2", "3", "d"]))
    lines = ["model generated", f"const d = {draw(st.integers(1, 4))}", f"data x : real[{k}]"]
    top = []
    if draw(st.booleans()):
        lines.append(f"latent beta ~ Normal(0, 1) [{k}]")
        top.append("beta")
    if draw(st.booleans()):
        lines.append(f"param W : real[{k}, {k}]")
        lines.append(f"let Wb = W @ {draw(st.sampled_from(top or ['W[0]']))}" if top else "let Wb = W[0]")
        top.append("Wb")
    body, scope = [], list(top)
    for i in range(draw(st.integers(1, 3))):
        dists = DISTS if "beta" in top else [d for d in DISTS if "beta" not in d]
        body.append(f"noise e{i} ~ {draw(st.sampled_from(dists))} [{k}]")
        scope.append(f"e{i}")
    for i in range(draw(st.integers(0, 3))):
        keyword = draw(st.sampled_from(["let", "latent"]))
        body.append(f"{keyword} h{i} = {draw(valued(scope, k))}")
        scope.append(f"h{i}")
    if draw(st.booleans()):
        body.append(f"latent z ~ Normal({draw(st.sampled_from(scope))}, 1) [{k}]")
        scope.append("z")
    body.append(f"observe x = {draw(valued(scope, k))}")
    body = draw(st.permutations(body))  # the language is declarative: order is free
    lines += ["plate n over x {"] + ["    " + b for b in body] + ["}"]
    if draw(st.booleans()):
        lines.append(f"fit {{ steps = {draw(st.integers(1, 100))}; batch = 8; lr = 1e-3 }}")
    if draw(st.booleans()) and "z" in scope:
        lines.append(f"guide {{ z ~ {draw(st.sampled_from(['implicit(hidden = [8], noise = 2)', 'normal']))} }}")
    return "\n".join(lines) + "\n"


def run_safely(source: str, path: str = "<generated>", overrides=None):
    """run_frontend must return (every mistake a diagnostic), never raise."""
    try:
        return run_frontend(source, path, overrides=overrides)
    except Exception as exc:  # pragma: no cover - a failure is a front-end bug
        raise AssertionError(f"run_frontend raised {type(exc).__name__}: {exc}\n--- source ---\n{source}") from exc


@FAST
@given(program)
def test_generated_programs_give_diagnostics_not_exceptions(source):
    result = run_safely(source)
    assert all(d.span.line >= 0 for d in result.diagnostics)
    if result.program is None:
        assert len(result.diagnostics) == 1 and result.diagnostics[0].code.startswith("E000")
        return
    printed = print_program(result.program)
    assert parse_source(printed) == result.program, printed
    if result.ok:
        again = run_safely(printed)
        assert again.ok, again.rendered()
        assert print_program(again.program) == printed


@FAST
@given(well_formed())
def test_well_formed_programs_are_clean_and_round_trip(source):
    result = run_safely(source)
    assert result.ok, result.rendered() + "\n" + source
    printed = print_program(result.program)
    again = run_safely(printed)
    assert again.ok and again.program == result.program
    assert print_program(again.program) == printed
    assert {n: s.shape for n, s in again.model.symbols.items()} == \
        {n: s.shape for n, s in result.model.symbols.items()}


@settings(FAST, max_examples=100)
@given(program, st.dictionaries(st.sampled_from(["d", "K", "w", "nope"]),
                                st.one_of(st.integers(-2, 6), st.floats(-2, 6), st.lists(st.integers(0, 3), max_size=2)),
                                max_size=2))
def test_generated_programs_with_overrides(source, overrides):
    run_safely(source, overrides=overrides)


@settings(derandomize=True, deadline=None, max_examples=40)
@given(st.sampled_from(SOURCES), st.dictionaries(st.sampled_from(["d", "D", "K", "H", "E", "s", "pi"]),
                                                 st.one_of(st.integers(-3, 300), st.floats(-1e3, 1e3),
                                                           st.lists(st.integers(0, 3), max_size=2)), max_size=2))
def test_examples_with_odd_overrides(example, overrides):
    path, source = example
    run_safely(source, str(path), overrides)


# ------------------------------------------------------------------ (b) mutated examples
TOKEN = re.compile(r"\s+|#[^\n]*|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+|\w+|->|<=|>=|==|!=|\"[^\"\n]*\"|.", re.S)
ALPHABET = list("(){}[]=~:;,.+-*/@^<>!#\"'\\$\n\t 0123456789ax_")


def tokens(source: str) -> list[str]:
    return TOKEN.findall(source)


def mutate(source: str, data) -> str:
    """One random edit: delete/duplicate a token, swap two, delete a line, insert a character."""
    kind = data.draw(st.sampled_from(["delete", "duplicate", "swap", "line", "insert"]))
    if kind == "line":
        lines = source.split("\n")
        del lines[data.draw(st.integers(0, len(lines) - 1))]
        return "\n".join(lines)
    if kind == "insert":
        at = data.draw(st.integers(0, len(source)))
        return source[:at] + data.draw(st.sampled_from(ALPHABET)) + source[at:]
    parts = tokens(source)
    solid = [i for i, t in enumerate(parts) if not t.isspace()]
    i = data.draw(st.sampled_from(solid))
    if kind == "delete":
        del parts[i]
    elif kind == "duplicate":
        parts.insert(i, parts[i] + " ")
    else:
        j = solid[min(solid.index(i) + 1, len(solid) - 1)]
        parts[i], parts[j] = parts[j], parts[i]
    return "".join(parts)


def test_tokeniser_is_lossless():
    for _, source in SOURCES:
        assert "".join(tokens(source)) == source


@settings(derandomize=True, deadline=None, max_examples=300,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SOURCES), st.integers(1, 3), st.data())
def test_mutated_examples_never_raise(example, edits, data):
    path, source = example
    for _ in range(edits):
        source = mutate(source, data)
    result = run_safely(source, str(path))
    if result.program is not None:
        assert parse_source(print_program(result.program)) == result.program
