"""`himdsl check` in-process with typer's CliRunner: exit codes and what is printed."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from himdsl.cli import app

ROOT = Path(__file__).resolve().parent.parent
DEEP = str(ROOT / "examples" / "deep_implicit" / "model.him")


def invoke(*args):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("path", sorted(ROOT.glob("examples/*/model.him")), ids=lambda p: p.parent.name)
def test_valid_examples_exit_0(path):
    result = invoke("check", str(path))
    assert result.exit_code == 0, result.output
    assert f"model `{path.parent.name}` is valid" in result.output


def test_broken_model_exits_1_with_location(tmp_path, monkeypatch):
    (tmp_path / "bad.him").write_text("data x : real[2]\nplate n over x {\n    observe x = dense(h3, 2)\n}\n")
    monkeypatch.chdir(tmp_path)
    result = invoke("check", "bad.him")
    assert result.exit_code == 1
    assert "bad.him:3:23: error[E0101]: undefined name `h3`" in result.output
    assert "    |                       ^^" in result.output
    assert "bad.him: 1 error" in result.output
    assert "Traceback" not in result.output


def test_syntax_error_exits_1(tmp_path):
    path = tmp_path / "syntax.him"
    path.write_text("data x : real[2\n")
    result = invoke("check", str(path))
    assert result.exit_code == 1
    assert f"{path}:1:16: error[E0002]: unexpected end of file" in result.output


def test_warnings_only_exit_0(tmp_path):
    path = tmp_path / "warn.him"
    path.write_text("data x : real[2]\ndata unused : real\nplate n over x {\n"
                    "    noise e ~ Normal(0, 1) [2]\n    observe x = e\n}\n")
    result = invoke("check", str(path))
    assert result.exit_code == 0
    assert "warning[W0201]: data `unused` is never used" in result.output
    assert "is valid (1 warning)" in result.output


def test_missing_file_exits_2(tmp_path):
    result = invoke("check", str(tmp_path / "nope.him"))
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_folder_instead_of_file_exits_2(tmp_path):
    result = invoke("check", str(tmp_path))
    assert result.exit_code == 2


def test_bad_flag_exits_2():
    result = invoke("check", "--no-such-flag", DEEP)
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_missing_argument_exits_2():
    assert invoke("check").exit_code == 2


def test_set_overrides_a_constant():
    result = invoke("check", DEEP, "--set", "d=5")
    assert result.exit_code == 0, result.output
    assert "is valid" in result.output


def test_set_that_breaks_a_shape_is_reported(tmp_path):
    path = tmp_path / "m.him"
    path.write_text("const k = 3\ndata x : real[3]\nplate n over x {\n"
                    "    noise e ~ Normal(0, 1) [k]\n    observe x = e\n}\n")
    assert invoke("check", str(path), "--set", "k=3").exit_code == 0
    result = invoke("check", str(path), "--set", "k=4")
    assert result.exit_code == 1
    assert "shape [4]" in result.output and "[3]" in result.output


def test_errors_caused_by_set_name_the_override():
    result = invoke("check", DEEP, "--set", "d=-1")
    assert result.exit_code == 1
    assert "must be positive, got -1" in result.output
    assert result.output.count("the value comes from the command line: `--set d=-1`") == 3


def test_set_unknown_constant_is_an_error():
    result = invoke("check", DEEP, "--set", "nope=1")
    assert result.exit_code == 1
    assert "the model has no constant `nope`" in result.output
    assert "Traceback" not in result.output


def test_set_without_value_exits_2():
    result = invoke("check", DEEP, "--set", "d")
    assert result.exit_code == 2
    assert "NAME=VALUE" in result.output


HIER_GAUSS = str(ROOT / "examples" / "hier_gauss" / "model.him")


def test_data_checked_against_the_model_as_fit_checks_it(tmp_path):
    """--data runs fit's data checks without training: a valid file is described by
    its rows and observed shapes; a wrong shape names the array and exits 2."""
    import numpy as np

    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, x=np.zeros((40, 2), np.float32))
    np.savez(bad, x=np.zeros((40, 3), np.float32))
    result = invoke("check", HIER_GAUSS, "--data", str(good))
    assert result.exit_code == 0, result.output
    assert f"{good}: data for `hier_gauss` are valid (40 rows; observed `x` [2])" in result.output
    result = invoke("check", HIER_GAUSS, "--data", str(bad))
    assert result.exit_code == 2
    assert "array `x` has shape [40, 3]; expected [N, 2]" in result.output
    result = invoke("check", HIER_GAUSS, "--data", str(tmp_path / "missing.npz"))
    assert result.exit_code == 2 and "no such file" in result.output and "Traceback" not in result.output
