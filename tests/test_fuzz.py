"""The fuzzer (benchmarks/fuzz.py): a short fixed-seed run, and every crash it has
found, minimised, kept in tests/fuzz_regressions/ (one folder per crash: the model,
the data file and case.json, which says what the command line must do instead)."""
import json
from pathlib import Path

import pytest

from benchmarks import fuzz

REGRESSIONS = sorted(p.parent for p in (Path(__file__).parent / "fuzz_regressions").glob("*/case.json"))


@pytest.mark.parametrize("folder", REGRESSIONS, ids=lambda p: p.name)
def test_fuzz_regression_ends_in_a_user_facing_message(folder, tmp_path):
    expected = json.loads((folder / "case.json").read_text())
    outcome = fuzz.run_case(fuzz.load_case(folder), fuzz.Workspace(tmp_path))
    assert outcome.status == expected["status"], outcome.message
    assert expected["expect"] in outcome.message


def test_short_fuzz_run_finds_no_internal_error():
    report = fuzz.fuzz(inputs=2500, seed=0, time_limit=40, chunk=250)
    crashes = [f"{' '.join(map(str, s))}:\n{outcome.message}" for s, (_, _, outcome) in report.crashes.items()]
    assert report.inputs >= 250
    assert not crashes, "\n".join(crashes)


def test_a_mutated_input_is_reproducible():
    """The same hypothesis seed gives the same inputs (the run's seed means something)."""
    first, second = (fuzz.fuzz(inputs=20, seed=7, chunk=20) for _ in range(2))
    assert first.outcomes == second.outcomes


def test_the_command_line_reports_a_model_too_large_for_memory(monkeypatch, capsys, tmp_path):
    """Exit 1 with a message, not exit 3 "internal error" (cli.main)."""
    from himdsl import cli

    model = tmp_path / "model.him"
    model.write_bytes((REGRESSIONS[0].parent / "layer_too_large_for_memory" / "model.him").read_bytes())
    monkeypatch.setattr("sys.argv", ["himdsl", "compile", str(model)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1 and "error: out of memory (" in capsys.readouterr().err
