"""The console entry point: an internal error is one line plus a saved traceback."""
import sys

import pytest

from himdsl import cli


def test_internal_error_is_reported_without_a_traceback(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("unexpected state")

    monkeypatch.setattr(cli, "run_frontend", broken)
    monkeypatch.setattr(sys, "argv", ["himdsl", "check", "examples/hier_gauss/model.him"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 3
    assert "internal error (RuntimeError: unexpected state)" in err and "Traceback" not in err
    saved = err.rsplit("the traceback is in ", 1)[1].strip()
    assert "Traceback" in open(saved).read()
