"""examples/lotka_volterra/run.py --quick: the Lotka-Volterra experiment end to end at a
tiny budget (LFVI on one observed series; rejection and SMC-ABC from sbi, skipped
when sbi is not installed). Well under a minute on one CPU thread."""
from __future__ import annotations

import importlib.util
import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "examples", "lotka_volterra", "run.py")
TRUE = np.log([0.01, 0.5, 1.0, 0.01])


def _load():
    spec = importlib.util.spec_from_file_location("himdsl_example_lotka_volterra", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_summaries_of_the_observed_series():
    lv = _load().lv
    np.random.seed(0)
    x = lv.lotka_volterra(np.array([lv.TRUE_THETA] * 64)).numpy()
    s = lv.summaries(x)
    assert s.shape == (64, 9) and np.isfinite(s).all()
    raw = lv.raw_summaries(x)
    assert np.all(np.abs(raw[:, 4:]) <= 1 + 1e-9)              # correlations
    assert 20 < raw[:, 0].mean() < 300                           # predators oscillate around ~100
    # a series that died out at once is constant: finite summaries, correlations 0
    dead = lv.raw_summaries(np.zeros((2, lv.N_OBS)))
    assert np.isfinite(dead).all() and np.all(dead[4:] == 0)


def test_lfvi_quick(tmp_path):
    rows = _load().main(["--quick", "--methods", "lfvi", "--out", str(tmp_path)])
    for name in ("results.json", "results.md", "marginals.png", "series.png", "observed.npz",
                 "posterior_lfvi.npz"):
        assert (tmp_path / name).stat().st_size > 0
    (row,) = rows
    assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["nlp_true"] == row["nlp_true"]
    assert row["ratio_mode"] == "contrastive"
    # counted inside lv.py: `simulations` per step plus the ratio's input-scaling
    # pilot (1,024 draws at the time of writing)
    assert 256 * 24 <= row["simulations"] <= 256 * 24 + 2048
    draws = np.load(tmp_path / "posterior_lfvi.npz")["log_theta"]
    assert draws.shape == (4000, 4) and np.all((draws > -5) & (draws < 2))
    lo, hi = np.quantile(draws, [0.01, 0.99], axis=0)
    assert np.all((lo < TRUE) & (TRUE < hi))                     # the truth is inside q
    # 24 steps already move q from the prior (mean -1.5) towards the small true
    # interaction rates (log 0.01 = -4.6)
    assert row["mean"][0] < -2.5 and row["mean"][3] < -2.0
    assert math.isfinite(row["nlp_true"])


def test_abc_quick(tmp_path):
    pytest.importorskip("sbi", reason="the ABC baselines need sbi (pip install -e \".[dev]\")")
    rows = _load().main(["--quick", "--methods", "rejection,smc", "--out", str(tmp_path)])
    by = {r["method"]: r for r in rows}
    assert set(by) == {"rejection", "smc"}
    # counted inside lv.py, whatever sbi does with the simulator
    assert by["rejection"]["simulations"] == 600 and by["rejection"]["draws"] == 30
    assert by["smc"]["simulations"] <= 600 and by["smc"]["populations"] >= 2
    for r in rows:
        # even 600 draws place the interaction rates (true log 0.01 = -4.6) near the
        # truth, far tighter than the prior (mean -1.5, sd 7 / sqrt(12) = 2.02)
        for j in (0, 3):
            assert abs(r["mean"][j] - TRUE[j]) < 1.0 and 0 < r["sd"][j] < 1.2
        assert math.isfinite(r["nlp_true"])
    assert (tmp_path / "marginals.png").stat().st_size > 0
