"""Front end: parse → print → parse round trips, spans, lexical rules, constants
and `--set` overrides, and the shape rule of every operator, function and
distribution (as `run_frontend` infers them)."""
from __future__ import annotations

from pathlib import Path

import pytest

from himdsl.diagnostics import HimError, Span
from himdsl.driver import run_frontend
from himdsl.frontend import ast
from himdsl.frontend.parser import parse_source
from himdsl.frontend.printer import print_program

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/*/model.him"))
BAD = sorted((ROOT / "tests" / "golden" / "bad").glob("*.him"))


def parses(path: Path) -> bool:
    try:
        parse_source(path.read_text(), str(path))
    except HimError:
        return False
    return True


def round_trip(source: str) -> None:
    """parse → print → parse gives the same tree, and printing is a fixed point."""
    first = parse_source(source)
    printed = print_program(first)
    second = parse_source(printed)
    assert second == first, printed
    assert print_program(second) == printed


def check(source: str, **overrides):
    """run_frontend on source; fail with the rendered diagnostics on any error."""
    result = run_frontend(source, "<m>", overrides=overrides or None)
    assert result.ok, result.rendered()
    return result


def shapes(source: str, **overrides) -> dict:
    """name → (shape, dtype[, categories]) of every symbol of a valid model."""
    symbols = check(source, **overrides).model.symbols
    return {n: (s.shape, s.dtype) if s.categories is None else (s.shape, s.dtype, s.categories)
            for n, s in symbols.items()}


def errors(source: str) -> list:
    """The error diagnostics of a model."""
    return [d for d in run_frontend(source, "m.him").diagnostics if d.is_error]


# ------------------------------------------------------------------ round trips
def test_examples_are_found():
    assert len(EXAMPLES) >= 7


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_round_trip(path):
    round_trip(path.read_text())


@pytest.mark.parametrize("path", [p for p in BAD if parses(p)], ids=lambda p: p.stem)
def test_bad_model_round_trip(path):
    round_trip(path.read_text())


@pytest.mark.parametrize("source", [
    "let y = (a + b) * 2",
    "let y = a - (b - c)",
    "let y = a - b - c",
    "let y = -x ^ 2",
    "let y = (-x) ^ 2",
    "let y = x ^ -2",
    "let y = x ^ y ^ z",
    "let y = (x ^ y) ^ z",
    "let y = (a < b) == (c > d)",
    "let y = a + b < c * d",
    "let y = -(a + b)",
    "let y = --a",
    "let y = x[0, 1:3, ::2, :, 1:]",
    "let y = (a + b)[0]",
    "let y = f(a, b = [1, 2], c = -1.5e-3)",
    "let y = a @ b @ c",
    "let y = a / (b * c)",
    "guide { b ~ implicit(hidden = [64, 64], noise = 32) }",
    'extern f(a : real[2], b : int) -> cat(3) from "f.py"',
    "plate n over x { plate m over x { let a = 1 } }",
])
def test_expression_round_trip(source):
    round_trip(source)


def test_printer_output_is_canonical():
    program = parse_source("let  y=(a+b)*2;latent z~Normal(0,1)[2,3]")
    assert print_program(program) == "let y = (a + b) * 2\nlatent z ~ Normal(0, 1) [2, 3]\n"


# ------------------------------------------------------------------ spans
def test_spans_of_statements_and_names():
    source = "model m\ndata x : real[2]\nplate n over x {\n    let h = dense(x, 4) + 1\n}\n"
    program = parse_source(source)
    model, data, plate = program.statements
    assert model.name_span == Span(1, 7, 1, 8)
    assert data.span == Span(2, 1, 2, 17) and data.name_span == Span(2, 6, 2, 7)
    assert data.type.span == Span(2, 10, 2, 17)
    assert plate.name_span == Span(3, 7, 3, 8) and plate.over.span == Span(3, 14, 3, 15)
    assert plate.span.line == 3 and plate.span.end_line == 5
    (let,) = plate.body
    assert let.name_span == Span(4, 9, 4, 10)
    total = let.value
    assert isinstance(total, ast.Binary) and total.span == Span(4, 13, 4, 28)
    call = total.left
    assert call.func_span == Span(4, 13, 4, 18) and call.span == Span(4, 13, 4, 24)
    assert call.args[0].span == Span(4, 19, 4, 20) and call.args[1].span == Span(4, 22, 4, 23)


def test_span_of_a_call_spanning_lines():
    program = parse_source("let h = concat(a,\n               b)\n")
    (let,) = program.statements
    assert let.value.span == Span(1, 9, 2, 18)
    assert let.value.args[1].span == Span(2, 16, 2, 17)


def test_undefined_name_points_at_the_name():
    [diag] = errors("data x : real[2]\nplate n over x {\n  observe x = x2 + 1\n}\n")
    assert diag.code == "E0101" and diag.span == Span(3, 15, 3, 17)
    assert diag.hint == "did you mean `x`?"


# ------------------------------------------------------------------ lexical rules
def test_comments_and_semicolons():
    program = parse_source("# header\nconst a = 1; const b = 2  # trailing\n\n;;\n# end")
    assert [s.name for s in program.statements] == ["a", "b"]


def test_settings_separated_by_semicolons_and_newlines():
    program = parse_source("fit { steps = 10; lr = 1e-3\n  batch = 4 }")
    (block,) = program.statements
    assert [(s.name, s.value.value) for s in block.entries] == [("steps", 10), ("lr", 1e-3), ("batch", 4)]


def test_newlines_inside_brackets_are_whitespace():
    source = "data x : real[\n  3\n]\nplate n over x {\n  noise e ~ Normal(\n    0,\n    1\n  ) [3]\n  observe x = dense(\n    e,\n    3)\n}\n"
    assert shapes(source)["e"] == ((3,), "real")


def test_newline_ends_a_statement_outside_brackets():
    with pytest.raises(HimError) as info:
        parse_source("let y = a +\n b")
    assert info.value.diagnostics[0].code == "E0003"


def test_backslash_continues_a_line():
    (let,) = parse_source("let y = a + \\\n b").statements
    assert isinstance(let.value, ast.Binary)


def test_keyword_as_named_argument():
    (guide,) = parse_source("guide { z ~ implicit(noise = 32, hidden = [8]) }").statements
    assert [k.name for k in guide.entries[0].family.kwargs] == ["noise", "hidden"]
    for word in ("model", "data", "latent", "param", "let", "observe", "plate", "fit", "ratio"):
        (let,) = parse_source(f"let y = f({word} = 1)").statements
        assert let.value.kwargs[0].name == word


def test_numbers():
    values = [s.value for s in parse_source("const a = 3; const b = 0.5; const c = 1e-3; const d = .5; const e = 2.").statements]
    assert [(v.value, v.is_int) for v in values] == [(3, True), (0.5, False), (1e-3, False), (0.5, False), (2.0, False)]


def test_minus_is_an_operator():
    (const,) = parse_source("const a = -3").statements
    assert isinstance(const.value, ast.Neg)


def test_precedence():
    (let,) = parse_source("let y = a + b * c ^ d ^ e < -f @ g").statements
    cmp = let.value
    assert cmp.op == "<"
    assert cmp.left.op == "+" and cmp.left.right.op == "*"
    power = cmp.left.right.right
    assert power.op == "^" and power.right.op == "^"  # right-associative
    assert cmp.right.op == "@" and isinstance(cmp.right.left, ast.Neg)


def test_strings_only_for_paths():
    [diag] = errors('data x : real\nplate n over x {\n  observe x = "a"\n}\n')
    assert diag.code == "E0125"


# ------------------------------------------------------------------ constants and overrides
CONSTS = """
const d = 4
const h = 2 * d + 1
const s = sqrt(0.25)
const grid = [0.0, 0.5, 1.0]
const g = sum(grid) * 2
data x : real[d]
plate n over x {
    noise eps ~ Normal(0, s) [h]
    let w = stack(grid[0], grid[2])
    observe x = dense(eps, d)
}
"""


def test_constants_are_evaluated():
    model = check(CONSTS).model
    assert model.constants == {"d": 4, "h": 9, "s": 0.5, "grid": [0.0, 0.5, 1.0], "g": 3.0}
    assert model.symbols["eps"].shape == (9,) and model.symbols["w"].shape == (2,)


def test_override_changes_shapes():
    model = check(CONSTS, d=5).model
    assert model.constants["h"] == 11
    assert model.symbols["eps"].shape == (11,)
    assert model.symbols["x"].shape == (5,)


def test_deep_implicit_override():
    source = (ROOT / "examples" / "deep_implicit" / "model.him").read_text()
    assert shapes(source, d=5)["eps2"] == ((5,), "real")


def test_unknown_override_is_an_error():
    result = run_frontend(CONSTS, "m.him", overrides={"nope": 1})
    [diag] = [d for d in result.diagnostics if d.is_error]
    assert diag.code == "E0142" and "nope" in diag.message


def test_constant_errors():
    assert [d.code for d in errors("const a = 1 / 0")] == ["E0140"]
    assert [d.code for d in errors("const a = b\nconst b = a")][:1] == ["E0143"]
    assert [d.code for d in errors("data x : real[2.5]\nplate n over x {\n observe x = x\n}")][:1] == ["E0141"]


# ------------------------------------------------------------------ shape inference
def test_deep_implicit_shapes():
    source = (ROOT / "examples" / "deep_implicit" / "model.him").read_text()
    got = shapes(source)
    assert got["z2"] == ((128,), "real") and got["z1"] == ((128,), "real")
    assert got["h1"] == ((128,), "real") and got["eps0"] == ((100,), "real")
    assert got["x"] == ((10,), "real")
    result = check(source)
    assert result.model.symbols["z1"].role == "local" and result.model.symbols["x"].role == "observed"
    assert result.graph.nodes["z1"]["weights"] == ["z1.weight", "z1.bias"]


PRELUDE = """
data x : real[3]
data lab : cat(4)
data cnt : int[2]
param M : real[3, 5]
param T : real[2, 3, 5]
param S : real[5, 3]
plate n over x {
    noise v ~ Normal(0, 1) [3]
    noise u ~ Normal(0, 1) [5]
    noise A ~ Normal(0, 1) [4, 3]
    noise s ~ Normal(0, 1)
    let sink = sum(EXPR_PLACEHOLDER)
    observe x = v
}
"""


def shape_of(expr: str):
    """Shape and dtype of `expr` inside the prelude's plate."""
    source = PRELUDE.replace("let sink = sum(EXPR_PLACEHOLDER)", f"let e = {expr}\n    let keep = [lab, cnt[0], s]")
    symbol = check(source).model.symbols["e"]
    return (symbol.shape, symbol.dtype) if symbol.categories is None else (symbol.shape, symbol.dtype, symbol.categories)


@pytest.mark.parametrize("expr, expected", [
    # arithmetic and broadcasting
    ("v + 1", ((3,), "real")),
    ("v * s", ((3,), "real")),
    ("A + v", ((4, 3), "real")),
    ("cnt + 1", ((2,), "int")),
    ("cnt / 2", ((2,), "real")),
    ("-v", ((3,), "real")),
    ("v ^ 2", ((3,), "real")),
    ("v < 0", ((3,), "real")),
    # matrix products (numpy matmul rules)
    ("v @ M", ((5,), "real")),
    ("M @ u", ((3,), "real")),
    ("A @ M", ((4, 5), "real")),
    ("T @ S", ((2, 3, 3), "real")),
    ("v @ v", ((), "real")),
    # indexing and slices
    ("v[0]", ((), "real")),
    ("v[-1]", ((), "real")),
    ("v[1:3]", ((2,), "real")),
    ("v[::2]", ((2,), "real")),
    ("A[2, 0]", ((), "real")),
    ("A[1:3]", ((2, 3), "real")),
    ("A[:, 1]", ((4,), "real")),
    ("T[0]", ((3, 5), "real")),
    ("cnt[1]", ((), "int")),
    # elementwise functions
    ("exp(v)", ((3,), "real")),
    ("abs(cnt)", ((2,), "int")),
    ("floor(v)", ((3,), "int")),
    ("sign(A)", ((4, 3), "int")),
    ("floor(v) / 2", ((3,), "real")),
    ("clamp(v, 0, 1)", ((3,), "real")),
    ("where(v > 0, A, 0)", ((4, 3), "real")),
    ("min(v, s)", ((3,), "real")),
    ("max(cnt, 0)", ((2,), "int")),
    # over the last axis
    ("sum(A)", ((4,), "real")),
    ("mean(v)", ((), "real")),
    ("prod(cnt)", ((), "int")),
    ("logsumexp(A)", ((4,), "real")),
    ("softmax(A)", ((4, 3), "real")),
    ("argmax(u)", ((), "cat", 5)),
    ("argmax(A)", ((4,), "cat", 3)),
    ("concat(v, u)", ((8,), "real")),
    ("concat(A, A, A)", ((4, 9), "real")),
    ("stack(s, s, s)", ((3,), "real")),
    ("stack(v, v)", ((3, 2), "real")),
    ("onehot(lab, 4)", ((4,), "real")),
    ("onehot(argmax(u), 5)", ((5,), "real")),
    ("reshape(A, [2, 6])", ((2, 6), "real")),
    ("reshape(v, [3, 1])", ((3, 1), "real")),
    ("[s, 1, 2]", ((3,), "real")),
    # layers
    ("dense(v, 7)", ((7,), "real")),
    ("dense(v, 7, relu)", ((7,), "real")),
    ("dense(s, 2)", ((2,), "real")),
    ("dense(A, 2)", ((4, 2), "real")),
    ("dense(lab, 2)", ((2,), "real")),
    ("mlp(v, [8, 8], 2, tanh)", ((2,), "real")),
    ("mlp(v, [8], 2)", ((2,), "real")),
    ("layernorm(A)", ((4, 3), "real")),
    ("dense(v, 4, prior = Normal(0, 1))", ((4,), "real")),
])
def test_expression_shapes(expr, expected):
    assert shape_of(expr) == expected


def test_argmax_label_is_usable_with_arithmetic_and_equality():
    assert shape_of("argmax(u) == 2") == ((), "real")
    assert shape_of("argmax(u) + 1") == ((), "int")


@pytest.mark.parametrize("expr, fragment", [
    ("v + u", "[3] and [5]"),
    ("v @ S", "[3] @ [5, 3]"),
    ("s @ M", "`@` needs arrays"),
    ("concat(A, v)", "[4, 3] and [3]"),
    ("concat(s, v)", "use `stack`"),
    ("v[3]", "out of range"),
    ("v[0, 0]", "2 indices"),
    ("reshape(v, [2, 2])", "cannot reshape [3]"),
    ("sum(s)", "scalar"),
    ("onehot(v, 3)", "integer label"),
    ("layernorm(s)", "scalar"),
    ("min(v, u)", "([3], [5])"),
])
def test_expression_shape_errors(expr, fragment):
    source = PRELUDE.replace("let sink = sum(EXPR_PLACEHOLDER)", f"let e = {expr}\n    let keep = [lab, cnt[0], s]")
    found = errors(source)
    assert len(found) == 1, [d.message for d in found]
    assert fragment in found[0].message + (found[0].hint or "")


DISTS = """
data y : real
latent g ~ Gamma(2, 1)
plate n over y {
    noise m ~ Normal(0, 1) [3]
    latent z ~ DIST
    observe y ~ Normal(0, 1)
}
"""


@pytest.mark.parametrize("dist, expected", [
    ("Normal(0, 1)", ((), "real")),
    ("Normal(0, 1) [4, 2]", ((4, 2), "real")),
    ("Normal(m, 1)", ((3,), "real")),
    ("Normal(loc = m, scale = g)", ((3,), "real")),
    ("Normal(m, 1) [2, 3]", ((2, 3), "real")),
    ("Uniform(-1, 1) [2]", ((2,), "real")),
    ("LogNormal(0, 1)", ((), "real")),
    ("HalfNormal(1) [3]", ((3,), "real")),
    ("Exponential(g)", ((), "real")),
    ("Gamma(2, 2)", ((), "real")),
    ("Beta(1, 1) [2]", ((2,), "real")),
    ("Laplace(0, 1)", ((), "real")),
    ("StudentT(df = g, loc = 0, scale = 1)", ((), "real")),
    ("Gumbel(0, 1)", ((), "real")),
    ("Bernoulli(0.5) [3]", ((3,), "int")),
    ("Bernoulli(logits = m)", ((3,), "int")),
    ("Categorical(softmax(m))", ((), "cat", 3)),
    ("Categorical(logits = m)", ((), "cat", 3)),
    ("Poisson(g) [2]", ((2,), "int")),
])
def test_distribution_shapes(dist, expected):
    assert shapes(DISTS.replace("DIST", dist))["z"] == expected


@pytest.mark.parametrize("dist, code", [
    ("Normal(m, 1) [4]", "E0133"),
    ("Normal(0)", "E0121"),
    ("Normal(0, 1, 2)", "E0121"),
    ("Normal(loc = 0, sigma = 1)", "E0121"),
    ("Normal(loc = 0, 1)", "E0121"),
    ("Normal(0, loc = 1)", "E0121"),
    ("Categorical(1)", "E0130"),
    ("Gaussian(0, 1)", "E0120"),
])
def test_distribution_errors(dist, code):
    found = errors(DISTS.replace("DIST", dist))
    assert [d.code for d in found] == [code], [d.message for d in found]


def test_observe_int_and_cat_data():
    source = """
    extern counts(r : real) -> int[2] from "c.py"
    data k : int[2]
    data k2 : int[2]
    data lab : cat(3)
    data f : real[4]
    latent r ~ Gamma(2, 1)
    plate n over lab {
        observe lab = argmax(dense(f, 3, prior = Normal(0, 1)))
    }
    observe k ~ Poisson(r) [2]
    observe k2 = counts(r)
    """
    got = shapes(source)
    assert got["lab"] == ((), "cat", 3) and got["k"] == ((2,), "int") and got["k2"] == ((2,), "int")


def test_scope_roles():
    source = (ROOT / "examples" / "hier_gauss" / "model.him").read_text()
    symbols = check(source).model.symbols
    assert symbols["beta"].role == "global" and symbols["beta"].plates == ()
    assert symbols["z"].role == "local" and symbols["z"].plates == ("n",)
    assert symbols["eps"].role == "noise" and symbols["x"].plate == "n"


def test_statement_order_does_not_matter():
    source = "plate n over x {\n  observe x = h\n  let h = dense(e, 2)\n  noise e ~ Normal(0, 1) [3]\n}\ndata x : real[2]\n"
    assert shapes(source)["h"] == ((2,), "real")


# ------------------------------------------------------------------ regressions (bugs found by these tests)
@pytest.mark.parametrize("source", ["", "\n", "\n\n\n", "# only a comment", "  \n# c\n;\n"])
def test_empty_programs(source):
    result = run_frontend(source, "<m>")
    assert result.program is not None and result.program.statements == []
    assert [d.code for d in result.diagnostics] == ["W0204"]


@pytest.mark.parametrize("dist", ["Normal(0, 1, 2)", "Normal(loc = 0, scal = 1)", "Normal(loc = 0, 1)"])
def test_bad_distribution_arguments_are_diagnostics(dist):
    found = errors(f"data x : real\nlatent m ~ {dist}\nplate n over x {{\n observe x ~ Normal(m, 1)\n}}\n")
    assert [d.code for d in found] == ["E0121"]


@pytest.mark.parametrize("source", [
    "guide {\n    noise ~ flow\n}",
    "fit {\n    data = 1\n}",
    "let y = Bernoulli(noise)",
    "let y = f(noise, noise = 1)",
    "const x = 1e400",
])
def test_keywords_and_huge_numbers_round_trip(source):
    round_trip(source)


def test_keyword_as_value_is_named():
    [diag] = errors("data x : real\nplate n over x {\n observe x = noise\n}\n")
    assert diag.message == "`noise` is a keyword, not a value"


def test_unknown_extern_parameter_type_is_a_diagnostic():
    found = errors('let y = f()\nextern f(a : cat(q)) -> real from "f.py"\n')
    assert "E0123" in [d.code for d in found]


@pytest.mark.parametrize("source, line, column, message", [
    ("let y = dense(x,\n 2\nlet z = 1", 3, 1, "unexpected `let`: the `(` on line 1 is never closed"),
    ("let y = [1, 2)", 1, 14, "unexpected `)`: the `[` on column 9 is never closed"),
    ("plate n over x {\n let a = 1\n", 2, 11, "unexpected end of file: the `{` on line 1 is never closed"),
    ("let y = dense(x y)", 1, 17, "unexpected `y`"),
    ("guide {\n  a ~ ~ }", 2, 7, "unexpected `~`"),
])
def test_syntax_errors_name_the_unclosed_bracket(source, line, column, message):
    with pytest.raises(HimError) as info:
        parse_source(source)
    [diag] = info.value.diagnostics
    assert (diag.span.line, diag.span.column, diag.message) == (line, column, message)


def test_reserved_name_does_not_cascade():
    found = errors("data x : real[2]\nplate n over x {\n noise e ~ Normal(0, 1) [2]\n"
                   " let Normal = e * 2\n observe x = Normal\n}\n")
    assert [d.code for d in found] == ["E0103"]
