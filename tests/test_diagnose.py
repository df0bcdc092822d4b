"""`himdsl diagnose FIT_DIR`: the posterior predictive check flags data the model
cannot produce and passes data it can; importance sampling with the exact
likelihood recovers a closed-form marginal likelihood when q is the exact
posterior and flags a q narrower than it; user mistakes are messages."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

import himdsl
from himdsl.cli import app
from himdsl.diagnosis import (Statistic, diagnose, flag_statistics, importance_line, importance_sampling,
                              predictive_p)
from himdsl.fit_folder import open_fit
from himdsl.fitting import UntrustedFit
from tests.infer.models import NORMAL_MEAN

runner = CliRunner()

# the same model written as a simulator: no exact likelihood
NORMAL_MEAN_IMPLICIT = """
model normal_mean_implicit
data y : real
latent mu ~ Normal(0, 1)
plate n over y {
    noise e ~ Normal(0, 1)
    observe y = mu + e
}
"""
ROWS = 40


def _fit(tmp_path, source: str, y: np.ndarray, name: str, steps: int = 300):
    model = himdsl.load(f"{name}.him", source=source)
    data = tmp_path / f"{name}.npz"
    np.savez(data, y=y.astype(np.float32))
    folder = tmp_path / f"{name}_fit"
    try:
        fit = model.fit(str(data), device="cpu", out=str(folder), steps=steps, seed=1, samples=1000,
                        guide={"mu": "normal"})
    except UntrustedFit as exc:     # data the model cannot produce may fail "data in range"
        fit = exc.fit
    fit.save(str(folder))
    return folder


@pytest.fixture(scope="module")
def right(tmp_path_factory):
    """A fit of data the model produces (y ~ N(0.5, 1))."""
    tmp = tmp_path_factory.mktemp("right")
    y = np.random.default_rng(0).normal(0.5, 1.0, ROWS)
    return _fit(tmp, NORMAL_MEAN, y, "normal_mean"), y


@pytest.fixture(scope="module")
def wrong(tmp_path_factory):
    """The model's unit noise against data three times as spread out."""
    tmp = tmp_path_factory.mktemp("wrong")
    y = np.random.default_rng(1).normal(0.5, 3.0, ROWS)
    return _fit(tmp, NORMAL_MEAN, y, "normal_mean"), y


def test_predictive_p_is_the_mid_p():
    assert predictive_p(2.0, np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.5 + 0.125)
    assert predictive_p(5.0, np.arange(4.0)) == 0.0 and predictive_p(-1.0, np.arange(4.0)) == 1.0


def test_the_tail_is_bonferroni_over_all_statistics():
    statistics = [Statistic("y", "mean", 0.0, 0.0, 1.0, p) for p in (0.0009, 0.0011, 0.5, 0.9991)]
    flag_statistics(statistics)      # 4 statistics: tails 0.01 / 8 = 0.00125
    assert [s.flagged for s in statistics] == [True, True, False, True]


def test_data_the_model_produces_pass(right):
    folder, y = right
    report = diagnose(open_fit(folder), draws=200)
    assert report.replicated == 200
    assert {s.name for s in report.statistics} == {"mean", "sd", "5%", "50%", "95%"}
    observed = {s.name: s.observed for s in report.statistics}
    assert observed["mean"] == pytest.approx(y.mean(), rel=1e-5)
    assert observed["sd"] == pytest.approx(y.std(ddof=1), rel=1e-5)
    # the replicated sd of N(mu, 1) data: about 1, spread about 1 / sqrt(2 (N - 1))
    sd = next(s for s in report.statistics if s.name == "sd")
    assert sd.replicated_mean == pytest.approx(1.0, abs=0.05)
    assert sd.replicated_sd == pytest.approx(1 / math.sqrt(2 * (ROWS - 1)), rel=0.25)
    assert not any(s.flagged for s in report.statistics)
    assert report.rows[0].share_outside < 0.2 and not report.rows[0].flagged
    assert [ok for ok, _, _ in report.lines()][:2] == [True, True]


def test_data_three_times_as_spread_are_flagged(wrong):
    folder, _ = wrong
    report = diagnose(open_fit(folder), draws=200)
    flagged = {s.name for s in report.statistics if s.flagged}
    assert {"sd", "5%", "95%"} <= flagged and "mean" not in flagged
    # |y - mu| > 1.645 for about 58 % of N(0, 9) values
    assert report.rows[0].share_outside > 0.4 and report.rows[0].flagged
    ok, name, message = report.lines()[0]
    assert not ok and "summaries lie outside the replicated data sets" in message


def _set_q_to_exact_posterior(fit, y: np.ndarray, scale: float = 1.0) -> None:
    fit.result.global_guide.set_moments(torch.tensor([float(y.sum() / (len(y) + 1))]),
                                        torch.tensor([scale / math.sqrt(len(y) + 1)]))


def test_exact_q_gives_the_marginal_likelihood_as_elbo(right):
    folder, y = right
    fit = open_fit(folder)
    _set_q_to_exact_posterior(fit, y.astype(np.float32))
    report = importance_sampling(fit, draws=500)
    y32 = y.astype(np.float32).astype(np.float64)
    evidence = stats.multivariate_normal(np.zeros(ROWS), np.eye(ROWS) + 1.0).logpdf(y32)
    # every log weight is log p(y) (q is the posterior), so the ELBO is it, per row
    assert report.elbo_exact == pytest.approx(evidence / ROWS, abs=1e-4)
    assert report.ok and all(abs(v) < 1e-3 for v in report.weighted_shift.values())


def test_a_q_narrower_than_the_posterior_is_flagged(right):
    folder, y = right
    fit = open_fit(folder)
    _set_q_to_exact_posterior(fit, y.astype(np.float32), scale=0.4)
    reports = []
    for seed in range(7):
        torch.manual_seed(seed)
        reports.append(importance_sampling(fit, draws=2000))
    # a q r = 0.4 times as wide: P(w > t) ~ t^(-1 / (1 - r^2)), so k = 0.84; one k̂
    # from 2,000 draws scatters by about 0.15 around it (the tail's 134 largest weights)
    assert np.median([r.khat for r in reports]) == pytest.approx(0.84, abs=0.1)
    assert sum(r.ok is False for r in reports) >= 5
    ok, _, message = importance_line(reports[0])
    assert ok is False and "q misses part of the exact posterior" in message


def test_a_trained_q_passes_importance_sampling(right):
    folder, _ = right
    report = importance_sampling(open_fit(folder), draws=1000)
    assert report.khat < report.threshold
    assert abs(report.weighted_shift["mu"]) < 0.1


def test_a_fit_with_the_exact_likelihood_has_no_surrogate_elbo(right):
    """normal_mean is explicit (method vi): its trace's ELBO is the exact one, not
    LFVI's surrogate, so the line shows only the ELBO with the exact likelihood."""
    folder, _ = right
    report = importance_sampling(open_fit(folder), draws=1000)
    assert report.elbo_surrogate is None
    assert "surrogate" not in importance_line(report)[2]


def test_an_implicit_likelihood_has_no_importance_weights(tmp_path):
    y = np.random.default_rng(0).normal(0.5, 1.0, ROWS)
    folder = _fit(tmp_path, NORMAL_MEAN_IMPLICIT, y, "implicit", steps=100)
    report = diagnose(open_fit(folder), draws=50)
    # the reason names the observation written as a simulation and how to give it a density
    assert report.importance.khat is None
    assert "`y` is written as a simulation" in report.importance.reason
    assert "`~` with its distribution" in report.importance.reason
    assert report.lines()[2][0] is None


def test_cli_writes_the_report_and_the_picture(right, tmp_path):
    folder, _ = right
    result = runner.invoke(app, ["diagnose", str(folder), "--draws", "100", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "posterior predictive:" in result.output and "Pareto k̂" in result.output
    saved = json.loads((tmp_path / "d" / "diagnose.json").read_text())
    assert saved["replicated_data_sets"] == 100 and saved["importance"]["ok"] is True
    assert saved["fit_verdict"]["ok"] is True
    assert (tmp_path / "d" / "ppc.png").read_bytes()[:4] == b"\x89PNG"


def test_the_same_seed_gives_the_same_report(right, tmp_path):
    folder, _ = right
    reports = [diagnose(open_fit(folder), draws=50, seed=3).to_dict() for _ in range(2)]
    assert reports[0] == reports[1]


def test_mistakes_are_messages(right, tmp_path):
    folder, _ = right
    cases = {
        "not a folder": [str(tmp_path / "nothing")],
        "no fit.json there": [str(tmp_path)],
    }
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    record = json.loads((moved / "fit.json").read_text())
    record["data"]["file"] = str(tmp_path / "gone.npz")
    (moved / "fit.json").write_text(json.dumps(record))
    cases["is gone; give its new place with --data"] = [str(moved)]
    other = tmp_path / "other.npz"
    np.savez(other, y=np.zeros(ROWS, dtype=np.float32))
    cases["is not the one the fit used"] = [str(moved), "--data", str(other)]
    for expected, args in cases.items():
        result = runner.invoke(app, ["diagnose", *args])
        assert result.exit_code == 2 and expected in result.output, (args, result.output)
        assert "Traceback" not in result.output
    # the moved data file, given with --data, is accepted
    result = runner.invoke(app, ["diagnose", str(moved), "--data", record_file(folder), "--draws", "20"])
    assert result.exit_code == 0, result.output


def record_file(folder) -> str:
    return json.loads((folder / "fit.json").read_text())["data"]["file"]
