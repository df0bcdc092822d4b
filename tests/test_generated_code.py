"""The generated module is code a user would own: every example's module parses,
keeps lines within 100 characters, imports only what it uses, binds no variable
it never reads, binds each name once, passes no bare integers by position, and
writes constants as the model does."""
from __future__ import annotations

import ast
import builtins
import glob

import pytest

import himdsl
from himdsl.codegen.emit import LINE_LIMIT, wrap

MODELS = sorted(glob.glob("examples/*/*.him"))


def _tree(path: str) -> tuple[str, ast.Module]:
    source = himdsl.load(path).python()
    return source, ast.parse(source)


def _names_loaded(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _stored(function: ast.FunctionDef) -> list[str]:
    return [n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]


@pytest.mark.parametrize("path", MODELS)
def test_lines_fit_in_100_characters(path):
    source, _ = _tree(path)
    long = [line for line in source.splitlines()
            if len(line) > LINE_LIMIT and not line.lstrip().startswith("source_dir = ")]
    assert not long


@pytest.mark.parametrize("path", MODELS)
def test_every_import_is_used(path):
    _, tree = _tree(path)
    imported = {alias.asname or alias.name for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}
    assert imported - _names_loaded(tree) == set()


@pytest.mark.parametrize("path", MODELS)
def test_no_dead_locals_and_each_local_bound_once(path):
    _, tree = _tree(path)
    for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        stored = [name for name in _stored(function) if name != "_"]
        assert set(stored) - _names_loaded(function) == set(), function.name
        assert len(stored) == len(set(stored)), function.name


@pytest.mark.parametrize("path", MODELS)
def test_every_name_read_is_defined(path):
    _, tree = _tree(path)
    module_level = {alias.asname or alias.name for node in tree.body
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    module_level |= {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        defined = module_level | set(_stored(function)) | {a.arg for a in function.args.args}
        assert _names_loaded(function) - defined - set(dir(builtins)) == set(), function.name


@pytest.mark.parametrize("path", MODELS)
def test_each_method_and_module_name_defined_once(path):
    _, tree = _tree(path)
    top = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
    top += [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    assert len(top) == len(set(top))
    (cls,) = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    methods = [node.name for node in cls.body if isinstance(node, ast.FunctionDef)]
    assert len(methods) == len(set(methods))


def _is_integer(node) -> bool:
    if isinstance(node, ast.UnaryOp):
        return _is_integer(node.operand)
    if isinstance(node, ast.Tuple):
        return bool(node.elts) and all(_is_integer(e) for e in node.elts)
    return isinstance(node, ast.Constant) and type(node.value) is int


@pytest.mark.parametrize("path", MODELS)
def test_no_positional_integers_in_calls_the_compiler_writes(path):
    """Integers the generated code passes (ranks, sizes, shapes, axes) are named;
    `math.sqrt(2)` is the model's own expression."""
    _, tree = _tree(path)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and not (isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
                      and n.func.value.id == "math")]
    assert [ast.unparse(c) for c in calls if any(_is_integer(a) for a in c.args)] == []


def test_constants_are_written_as_the_model_writes_them():
    moons = himdsl.load("examples/two_moons/model.him").python()
    assert "pi = 3.141592653589793" in moons and "low=-pi / 2," in moons and "high=pi / 2," in moons
    assert "1.5707963267948966" not in moons and "/ math.sqrt(2)" in moons
    linear = himdsl.load("examples/gaussian_linear/model.him").python()
    assert "s = math.sqrt(0.1)" in linear and "theta + s * eps" in linear and "scale=s" in linear


def test_a_constant_set_on_the_command_line_holds_the_value_set(tmp_path):
    path = tmp_path / "m.him"
    path.write_text("const s = sqrt(0.1)\ndata x : real\nlatent t ~ Normal(0, 1)\nnoise e ~ Normal(0, 1)\n"
                    "observe x = t + s * e\n")
    model = himdsl.load(str(path), overrides={"s": 2.0})
    assert "s = 2.0" in model.python() and "the model writes `const s = sqrt(0.1)`" in model.python()
    module = model.module()
    g = module.sample_globals(3)
    out = module.simulate(g)
    assert (out["x"] - g["t"] - 2.0 * out["e"]).abs().max() < 1e-6


def test_wrap_breaks_at_the_last_bracket_then_at_items_then_at_operators():
    assert wrap("x = f(a, b)", 100) == ["x = f(a, b)"]
    assert wrap("x = f(aaaa, bbbb)", 12) == ["x = f(", "    aaaa,", "    bbbb,", ")"]
    assert wrap("x = f(aaaa, bbbb, cc)", 16) == ["x = f(", "    aaaa, bbbb,", "    cc,", ")"]
    assert wrap("    y = out['y'] = aaaa + bbbb * c", 20) == \
        ["    y = out['y'] = (", "        aaaa", "        + bbbb * c", "    )"]
    assert wrap("t = ('a',)", 5) == ["t = (", "    'a',", ")"]
    # a keyword argument's long value: bracketed after `name=`, its comma kept outside
    assert wrap("loc=f(a) + g(b) * x,", 12) == ["loc=(", "    f(a)", "    + g(b) * x", "),"]
