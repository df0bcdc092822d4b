"""`himdsl calibrate`: the SBC statistics against closed-form answers (numpy only),
and the command end to end with a tiny K on a conjugate model."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import himdsl
from himdsl import calibration as sbc
from himdsl import cli

CONJUGATE = """model conjugate
data x : real
latent mu ~ Normal(0, 1)
plate n over x {
    observe x ~ Normal(mu, 1)
}
"""


# ------------------------------------------------------------------ statistics
def test_rank_counts_the_draws_below_the_truth():
    rng = np.random.default_rng(0)
    draws = np.array([[[0.1], [0.7], [0.3]]])
    assert sbc.sbc_ranks(np.array([[0.5]]), draws, rng).tolist() == [[2]]
    # ties are broken at random over every rank they allow
    tied = np.array([[[1.0], [1.0], [0.0]]])
    ranks = {int(sbc.sbc_ranks(np.array([[1.0]]), tied, rng)[0, 0]) for _ in range(200)}
    assert ranks == {1, 2, 3}


def test_thin_takes_evenly_spaced_draws():
    draws = np.arange(4000)
    kept = sbc.thin(draws, 99)
    assert len(kept) == 99 and kept[0] == 0 and np.all(np.diff(kept) == 40)
    assert len(sbc.thin(np.arange(50), 99)) == 50


@pytest.mark.parametrize("x", [0.3, 2.0, 7.5, 30.0])
def test_chi_square_tail_matches_closed_forms(x):
    assert sbc.chi_square_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10)
    assert sbc.chi_square_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-10)
    assert sbc.chi_square_sf(x, 4) == pytest.approx(math.exp(-x / 2) * (1 + x / 2), rel=1e-10)


def test_uniformity_statistic_of_flat_and_piled_ranks():
    flat = np.repeat(np.arange(100), 2)[:, None]              # 200 fits, 2 at every rank
    test = sbc.uniformity_test(flat, 99, bins=20)[0]
    assert test["statistic"] == 0 and test["p_value"] == pytest.approx(1.0) and test["df"] == 19
    piled = np.zeros((200, 1), dtype=np.int64)                 # every truth below every draw
    test = sbc.uniformity_test(piled, 99, bins=20)[0]
    assert test["statistic"] == pytest.approx(200 * 19)        # K (B - 1)
    assert test["p_value"] < 1e-100


def test_bins_follow_the_number_of_fits():
    assert sbc.rank_bins(6, 99) == 2 and sbc.rank_bins(20, 99) == 4 and sbc.rank_bins(100, 99) == 20
    assert sbc.rank_bins(1000, 99) == 20 and sbc.rank_bins(100, 9) == 10
    # unequal bins carry unequal probabilities
    _, probability = sbc.bin_counts(np.zeros((5, 1), dtype=np.int64), 9, 3)
    assert probability.tolist() == pytest.approx([0.4, 0.3, 0.3])


def conjugate_draws(fits: int, rows: int, draws: int, seed: int = 1, shift: float = 0.0,
                    width: float = 1.0):
    """Truths from mu ~ N(0, 1), x_n ~ N(mu, 1); posterior draws from the exact
    N(sum x / (n + 1), 1 / (n + 1)), moved by `shift` posterior sds and scaled by `width`."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=fits)
    x = mu[:, None] + rng.normal(size=(fits, rows))
    mean, sd = x.sum(axis=1) / (rows + 1), math.sqrt(1 / (rows + 1))
    posterior = mean[:, None] + sd * (shift + width * rng.normal(size=(fits, draws)))
    return mu[:, None], posterior[..., None], rng


def scores(truth, draws, rng):
    ranks = sbc.sbc_ranks(truth, sbc.thin(draws.transpose(1, 0, 2), 99).transpose(1, 0, 2), rng)
    band = sbc.ecdf_band(len(truth), 99)
    references = rng.normal(size=truth.shape)                 # reference points from the prior
    tarp = sbc.tarp_curve(sbc.tarp_fractions(truth, draws, references, np.ones(1)))
    return (sbc.uniformity_test(ranks, 99)[0]["p_value"], sbc.inside_band(ranks, 99, band)[0],
            sbc.covered(truth, draws).mean(axis=0)[:, 0], tarp)


def test_exact_posterior_gives_uniform_ranks_nominal_coverage_and_a_diagonal_tarp():
    fits = 1000
    p_value, in_band, coverage, tarp = scores(*conjugate_draws(fits, 10, 4000))
    assert p_value > 0.01 and in_band
    for level, value in zip(sbc.LEVELS, coverage):
        assert abs(value - level) < 3 * math.sqrt(level * (1 - level) / fits)
    assert tarp["p_value"] > 0.01 and tarp["max_deviation"] < 0.05
    assert tarp["ecp"][10] == pytest.approx(0.5, abs=3 * math.sqrt(0.25 / fits))


@pytest.mark.parametrize("shift,width", [(1.0, 1.0), (0.0, 0.5), (0.0, 2.0)])
def test_a_wrong_posterior_is_detected(shift, width):
    """Biased by one posterior sd, half as wide, twice as wide."""
    p_value, in_band, coverage, tarp = scores(*conjugate_draws(1000, 10, 4000, shift=shift, width=width))
    assert p_value < 1e-6 and not in_band
    assert abs(coverage[1] - 0.8) > 0.1                        # the 80 % interval
    assert tarp["p_value"] < 1e-3


def test_ecdf_band_holds_a_uniform_ecdf_with_its_probability():
    rng = np.random.default_rng(5)
    for fits in (6, 20, 100):
        band = sbc.ecdf_band(fits, 99, seed=3)
        ranks = rng.integers(0, 100, size=(fits, 10000))
        assert 0.98 <= np.mean(sbc.inside_band(ranks, 99, band)) <= 0.996, fits


def test_binomial_cdf_matches_a_sum_of_probabilities():
    cdf = sbc.binomial_cdf(5, np.array([0.3]))[0]
    pmf = [math.comb(5, c) * 0.3 ** c * 0.7 ** (5 - c) for c in range(6)]
    assert cdf == pytest.approx(np.cumsum(pmf))


def test_tarp_fraction_by_hand():
    # truth 0, reference 1: draws at distances 1.5, 0.5, 0.5, 2 -> two of four are closer
    draws = np.array([[[-0.5], [0.5], [1.5], [3.0]]])
    f = sbc.tarp_fractions(np.array([[0.0]]), draws, np.array([[1.0]]), np.ones(1))
    assert f.tolist() == [0.5]
    # coordinates are divided by their scale: the second one stops dominating
    draws = np.array([[[0.1, 1.0], [0.5, 0.0]]])
    truth, reference = np.array([[0.4, 0.0]]), np.array([[0.0, 0.0]])
    assert sbc.tarp_fractions(truth, draws, reference, np.array([1.0, 1.0])).tolist() == [0.0]
    assert sbc.tarp_fractions(truth, draws, reference, np.array([1.0, 100.0])).tolist() == [0.5]
    curve = sbc.tarp_curve(np.array([0.1, 0.3, 0.6, 0.9]), alphas=(0.0, 0.5, 1.0))
    assert curve["ecp"] == [0.0, 0.5, 1.0] and curve["max_deviation"] == pytest.approx(0.2)   # 2/4 - 0.3


def test_kolmogorov_tail_matches_known_quantiles():
    n = 10 ** 6
    assert sbc.kolmogorov_sf(1.3581 / math.sqrt(n), n) == pytest.approx(0.05, abs=2e-4)
    assert sbc.kolmogorov_sf(1.6276 / math.sqrt(n), n) == pytest.approx(0.01, abs=1e-4)


def test_a_fits_seeds_depend_on_its_index_alone():
    assert sbc.task_seeds(0, 6)[:4] == sbc.task_seeds(0, 4)
    assert len(set(sbc.task_seeds(0, 6))) == 6 and sbc.task_seeds(1, 4) != sbc.task_seeds(0, 4)


# ------------------------------------------------------------------ fits
@pytest.fixture
def conjugate(tmp_path):
    path = tmp_path / "conjugate.him"
    path.write_text(CONJUGATE)
    return path


def test_the_worker_count_does_not_change_the_results(conjugate):
    model = himdsl.load(str(conjugate))
    one = sbc.calibrate(model, 3, rows=10, steps=10, seed=3, workers=1)
    two = sbc.calibrate(model, 3, rows=10, steps=10, seed=3, workers=2)     # spawned processes
    assert [o.status for o in one.outcomes] == [o.status for o in two.outcomes] == ["ok"] * 3
    assert [o.rank for o in one.outcomes] == [o.rank for o in two.outcomes]
    assert [o.truth for o in one.outcomes] == [o.truth for o in two.outcomes]
    assert [o.tarp for o in one.outcomes] == [o.tarp for o in two.outcomes]


def outcome(index: int, status: str, rank: int | None = None) -> sbc.FitOutcome:
    scored = rank is not None
    return sbc.FitOutcome(index, status, "" if status == "ok" else f"reason {index}", 1.0,
                          [0.0] if scored else None, [rank] if scored else None,
                          [[True], [True], [True]] if scored else None, 0.5 if scored else None)


def test_failed_fits_are_counted_and_left_out_of_the_statistics():
    outcomes = [outcome(0, "ok", 10), outcome(1, "untrusted", 99), outcome(2, "ok", 50),
                outcome(3, "error"), outcome(4, "ok", 90)]
    run = {"fits": 5, "rows": 10, "steps": 30, "seed": 0, "rank_draws": 99, "workers": 1}
    report = sbc.Calibration("m.him", ["mu"], outcomes, run, 5.0)
    assert report.stats["fits_used"] == 3
    saved = report.to_json()
    assert saved["fits"] == {"ok": 3, "untrusted": 1, "error": 1, "failures": [
        {"fit": 1, "status": "untrusted", "message": "reason 1"},
        {"fit": 3, "status": "error", "message": "reason 3"}]}
    assert saved["ranks"]["mu"] == [10, 99, 50, None, 90]
    assert saved["status"] == ["ok", "untrusted", "ok", "error", "ok"]
    # statistics over the three trusted fits: ranks 10, 50, 90 in 2 bins of 50 ranks
    assert saved["globals"]["mu"]["uniformity"]["statistic"] == pytest.approx((1 - 1.5) ** 2 / 1.5 + (2 - 1.5) ** 2 / 1.5)
    table = report.table()
    assert "3 ok, 1 untrusted, 1 failed" in table
    assert "fit 1 untrusted: reason 1" in table and "fit 3 error: reason 3" in table


def test_a_fit_that_raises_becomes_an_error_outcome(tmp_path):
    """sqrt of a negative mean: the data (truth < 0) or the loss (q's draws) is NaN,
    so every fit fails; each is reported with its cause, none is dropped."""
    path = tmp_path / "root.him"
    path.write_text(CONJUGATE.replace("model conjugate", "model root")
                    .replace("Normal(mu, 1)", "Normal(sqrt(mu), 1)"))
    result = CliRunner().invoke(cli.app, ["calibrate", str(path), "--fits", "3", "--rows", "10",
                                          "--steps", "30", "--workers", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 4, result.output
    report = json.loads((tmp_path / "o" / "calibration.json").read_text())
    assert report["fits"]["error"] == 3 and report["ranks"]["mu"] == [None] * 3
    with open(tmp_path / "o" / "ranks.csv") as handle:
        negative = [float(row["true mu"]) < 0 for row in csv.DictReader(handle)]
    for failure, below in zip(report["fits"]["failures"], negative):
        cause = "DataError" if below else "NonFiniteLossError"
        assert failure["message"].startswith(cause) and "nan" in failure["message"].lower()
    assert "too few" in result.output


def test_calibrate_command_writes_its_files(conjugate, tmp_path):
    out = tmp_path / "sbc"
    result = CliRunner().invoke(cli.app, ["calibrate", str(conjugate), "--fits", "6", "--rows", "10",
                                          "--steps", "30", "--workers", "1", "--seed", "2",
                                          "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "mu" in result.output and "6 ok" in result.output
    report = json.loads((out / "calibration.json").read_text())
    assert report["settings"]["fits"] == 6 and report["settings"]["steps"] == 30
    assert report["settings"]["rows"] == 10 and report["settings"]["rank_draws"] == 99
    assert report["fits"]["ok"] + report["fits"]["untrusted"] + report["fits"]["error"] == 6
    ranks = report["ranks"]["mu"]
    assert len(ranks) == 6 and all(0 <= r <= 99 for r in ranks)
    assert set(report["globals"]["mu"]["coverage"]) == {"50", "80", "95"}
    assert 0 <= report["globals"]["mu"]["uniformity"]["p_value"] <= 1
    assert len(report["tarp"]["ecp"]) == len(report["tarp"]["alpha"]) == 21
    with open(out / "ranks.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["rank mu"]) for r in rows] == ranks
    assert (out / "sbc.png").stat().st_size > 1000


@pytest.mark.parametrize("args,message", [
    (["--fits", "1"], "at least 2"),
    (["--fits", "3", "--workers", "0"], "--workers"),
    (["--fits", "3", "--data", "missing.npz"], "no such file"),
])
def test_calibrate_refuses_bad_requests(conjugate, tmp_path, args, message):
    result = CliRunner().invoke(cli.app, ["calibrate", str(conjugate), "--out", str(tmp_path / "o")] + args)
    assert result.exit_code == 2 and message in result.output
    assert isinstance(result.exception, SystemExit)


def test_calibrate_refuses_a_missing_model_an_output_file_and_rows_without_a_plate(conjugate, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli.app, ["calibrate", str(tmp_path / "none.him"), "--fits", "3"])
    assert result.exit_code == 2 and "no such file" in result.output
    taken = tmp_path / "taken"
    taken.write_text("")
    result = runner.invoke(cli.app, ["calibrate", str(conjugate), "--fits", "3", "--out", str(taken)])
    assert result.exit_code == 2 and "a file of that name exists" in result.output
    result = runner.invoke(cli.app, ["calibrate", "examples/two_moons/model.him", "--fits", "3",
                                     "--rows", "5", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "no plate" in result.output


# ------------------------------------------------------------------ a stopped run
def _stop_after(count: int):
    finished = []

    def done(outcome):
        finished.append(outcome)
        if len(finished) == count:
            raise KeyboardInterrupt
    return done


def test_a_stopped_run_keeps_its_fits_and_resumes_to_the_same_report(conjugate, tmp_path):
    model = himdsl.load(str(conjugate))
    args = dict(rows=10, steps=20, seed=5, workers=1)
    straight = sbc.calibrate(model, 4, out=str(tmp_path / "straight"), **args)
    out = str(tmp_path / "stopped")
    with pytest.raises(KeyboardInterrupt):
        sbc.calibrate(model, 4, out=out, done=_stop_after(2), **args)
    lines = (tmp_path / "stopped" / "fits.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["run"]["fits"] == 4
    with open(tmp_path / "stopped" / "fits.jsonl", "a") as handle:
        handle.write('{"index": 3, "status": "o')          # a line cut short by a crash
    ran = []
    resumed = sbc.calibrate(model, 4, out=out, done=ran.append, resume=True, **args)
    assert [o.index for o in ran] == [2, 3]                 # only the fits not finished
    for key in ("status", "rank", "truth", "tarp", "covered"):
        assert [getattr(o, key) for o in resumed.outcomes] == [getattr(o, key) for o in straight.outcomes]
    assert resumed.stats["globals"] == straight.stats["globals"]


def test_an_unfinished_run_is_not_overwritten_and_resume_checks_the_run(conjugate, tmp_path):
    model = himdsl.load(str(conjugate))
    out = str(tmp_path / "o")
    with pytest.raises(sbc.CalibrationError, match="no fits.jsonl"):
        sbc.calibrate(model, 3, rows=10, steps=20, workers=1, out=out, resume=True)
    with pytest.raises(KeyboardInterrupt):
        sbc.calibrate(model, 3, rows=10, steps=20, workers=1, out=out, done=_stop_after(1))
    with pytest.raises(sbc.CalibrationError, match="holds 1 finished fits of a run that did not end"):
        sbc.calibrate(model, 3, rows=10, steps=20, workers=1, out=out)
    with pytest.raises(sbc.CalibrationError, match=r"other settings \(fit_settings, steps\)"):
        sbc.calibrate(model, 3, rows=10, steps=30, workers=1, out=out, resume=True)


def test_ctrl_c_prints_the_command_that_continues(conjugate, tmp_path, monkeypatch):
    real = sbc.run_task

    def stop_at_the_third(task):
        if task.index == 2:
            raise KeyboardInterrupt
        return real(task)
    monkeypatch.setattr(sbc, "run_task", stop_at_the_third)
    out = tmp_path / "o"
    args = ["calibrate", str(conjugate), "--fits", "4", "--rows", "10", "--steps", "20", "--workers", "1"]
    result = CliRunner().invoke(cli.app, args + ["--out", str(out)])
    assert result.exit_code == 130
    assert f"the 2 finished fits are kept in {out / 'fits.jsonl'}" in result.output
    command = result.output.split("continue with `")[1].split("`")[0].split()
    monkeypatch.setattr(sbc, "run_task", real)
    result = CliRunner().invoke(cli.app, command[1:])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "calibration.json").read_text())["fits"]["ok"] == 4
