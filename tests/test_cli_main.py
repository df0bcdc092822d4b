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


def test_an_error_raised_while_training_is_not_blamed_on_the_users_flags(monkeypatch, capsys, tmp_path):
    """torch's validation of a distribution inside training raised ValueError, which
    `fit` reported as a bad setting (exit 2) with a 500-line tensor dump; whatever
    himdsl raises while it trains is its own error (exit 3, traceback saved)."""
    import numpy as np

    import himdsl
    from himdsl.infer import Trainer

    data, _ = himdsl.load("examples/hier_gauss/model.him").simulate(rows=20, seed=0)
    np.savez(tmp_path / "data.npz", **data)

    def broken(self):
        raise ValueError("Expected parameter df of distribution Chi2() to satisfy the constraint")

    monkeypatch.setattr(Trainer, "step", broken)
    monkeypatch.setattr(sys, "argv", ["himdsl", "fit", "examples/hier_gauss/model.him", str(tmp_path / "data.npz"),
                                      "--out", str(tmp_path / "fit"), "--steps", "20"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 3 and "internal error (ValueError: Expected parameter df" in err


def test_python_dash_m_runs_the_same_command_line():
    """`python -m himdsl` is the `himdsl` script: where the script is not on PATH
    (a notebook's kernel, a cluster job), the module form checks a model the same way."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "himdsl", "check", "examples/hier_gauss/model.him"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "hier_gauss" in done.stdout + done.stderr
    broken = subprocess.run([sys.executable, "-m", "himdsl", "check", "no/such/model.him"],
                            capture_output=True, text=True, timeout=120)
    assert broken.returncode != 0 and "Traceback" not in broken.stderr
