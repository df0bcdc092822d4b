"""Matrix constants (`const m = [[1, 2], [3, 4]]`): checked for a rectangular
shape, usable wherever a vector constant is, written readably in the module."""
from __future__ import annotations

import torch

import himdsl
from himdsl.frontend.parser import parse_source
from himdsl.semantics.constants import evaluate

MODEL = """const m = [[1, 2], [3, 4]]
const m2 = m * 2 + [10, 20]
data x : real[2]
latent b ~ Normal(0, 1) [2]
plate n over x {
  noise e ~ Normal(0, 1) [2]
  let w = m @ b
  observe x = w + m[1] + m2[0, 1] * sum(m) + 0.1 * e
}
"""


def _write(tmp_path, source: str):
    path = tmp_path / "m.him"
    path.write_text(source)
    return str(path)


def test_matrix_constant_checks_compiles_and_simulates(tmp_path):
    path = _write(tmp_path, MODEL)
    assert [d for d in himdsl.check(path) if d.severity == "error"] == []
    model = himdsl.load(path)
    assert model.checked.symbols["m"].shape == (2, 2) and model.checked.symbols["m2"].shape == (2, 2)
    module = model.module()
    g = module.sample_globals(3)
    out = module.simulate(g, rows=5)
    m = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w = g["b"] @ m.T                                            # m @ b for each draw
    torch.testing.assert_close(out["w"], w[:, None, :])          # the same in every row
    expected = w[:, None, :] + m[1] + 24.0 * torch.tensor([3.0, 7.0]) + 0.1 * out["e"]
    torch.testing.assert_close(out["x"], expected)


def test_matrix_constant_is_written_as_the_model_writes_it(tmp_path):
    source = himdsl.load(_write(tmp_path, MODEL)).python()
    assert "\nm = [[1, 2], [3, 4]]\n" in source
    assert "self.register_buffer('m', H.constant(m), persistent=False)" in source
    assert "H.matmul(self.m, b_row, rank_a=2, rank_b=1)" in source


def test_matrix_constant_follows_the_module_to_double_precision(tmp_path):
    module = himdsl.load(_write(tmp_path, MODEL)).module().double()
    out = module.simulate(module.sample_globals(2), rows=3)
    assert out["w"].dtype == torch.float64 and out["x"].dtype == torch.float64


def parse_expr(text: str):
    return parse_source(f"const t = {text}\n").statements[0].value


def test_constant_arithmetic_broadcasts_like_numpy():
    env = {"m": [[1, 2], [3, 4]]}
    assert evaluate(parse_expr("m * 2 + [10, 20]"), env) == [[12, 24], [16, 28]]
    assert evaluate(parse_expr("sum(m)"), env) == [3, 7]
    assert evaluate(parse_expr("m[1, 0]"), env) == 3
    assert evaluate(parse_expr("m[-1]"), env) == [3, 4]


def _errors(tmp_path, const: str):
    path = _write(tmp_path, f"const m = {const}\ndata x : real[2]\nlatent b ~ Normal(0, 1) [2]\n"
                            "noise e ~ Normal(0, 1) [2]\nobserve x = m @ b + e\n")
    return [d for d in himdsl.check(path) if d.severity == "error"]


def test_ragged_matrix_is_rejected_naming_the_row(tmp_path):
    (diag,) = _errors(tmp_path, "[[1, 2], [3, 4], [5]]")
    assert "row 3" in diag.message and "row 1" in diag.message
    assert (diag.span.line, diag.span.column) == (1, 28)          # at `[5]`


def test_list_mixing_numbers_and_rows_is_rejected(tmp_path):
    (diag,) = _errors(tmp_path, "[[1, 2], 3]")
    assert "item 2" in diag.message and (diag.span.line, diag.span.column) == (1, 20)
