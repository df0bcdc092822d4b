"""Golden diagnostics: every `tests/golden/bad/<case>.him` is checked with
`himdsl check <case>.him` (run in that folder, so paths are relative) and the
printed output, preceded by `exit: N`, must equal `<case>.expected`.

    pytest tests/test_diagnostics.py --update-golden    # rewrite, then review the diff
"""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from himdsl.cli import app
from himdsl.driver import run_frontend

BAD = Path(__file__).parent / "golden" / "bad"
CASES = sorted(p.stem for p in BAD.glob("*.him"))


def check_output(case: str, monkeypatch) -> str:
    """`exit: N` and everything `himdsl check` prints (stderr and stdout)."""
    monkeypatch.chdir(BAD)
    result = CliRunner().invoke(app, ["check", f"{case}.him"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return f"exit: {result.exit_code}\n{result.output}"


def test_enough_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES)
def test_golden(case, monkeypatch, update_golden):
    actual = check_output(case, monkeypatch)
    expected_path = BAD / f"{case}.expected"
    if update_golden or not expected_path.exists():
        expected_path.write_text(actual)
        if not update_golden:
            pytest.fail(f"created {expected_path.name}: review it and rerun")
    assert actual == expected_path.read_text()


@pytest.mark.parametrize("case", CASES)
def test_no_traceback_and_locations(case, monkeypatch):
    """Every diagnostic has a real location inside the file (except the count line)."""
    monkeypatch.chdir(BAD)
    result = run_frontend(path=f"{case}.him")
    lines = result.source.splitlines()
    for diag in result.diagnostics:
        assert 1 <= diag.span.line <= max(1, len(lines)), diag
        for note in diag.notes:
            assert 1 <= note.span.line <= len(lines), note
