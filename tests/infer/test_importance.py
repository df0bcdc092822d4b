"""q's draws importance-resampled to the ratio's posterior (himdsl/infer/importance.py),
against known densities, and as a fit's plan and trust checks use it."""
import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from himdsl.infer import FitSettings
from himdsl.infer.checks import Verdict, q_matches_ratio
from himdsl.infer.importance import khat_threshold, resample
from himdsl.infer.trainer import Trainer
from tests.infer import models


class _Gaussian:
    """A 1-d Gaussian proposal with the guide's interface (u's draws and density)."""

    def __init__(self, sd: float):
        self.sd = sd

    def rsample(self, num):
        u = self.sd * torch.randn(num, 1)
        return {}, None, u

    def log_prob_u(self, u):
        return _normal_log_pdf(u[:, 0], 0.0, self.sd)


def _normal_log_pdf(u, mean, sd):
    return -0.5 * ((u - mean) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)


def test_a_broad_proposal_is_resampled_to_the_target():
    torch.manual_seed(0)
    u, report = resample(_Gaussian(2.0), lambda u: _normal_log_pdf(u[:, 0], 1.0, 0.5), 10_000)
    assert report.used and report.khat < 0.5 and report.pool == 40_000
    assert abs(float(u.mean()) - 1.0) < 0.02 and abs(float(u.std()) / 0.5 - 1) < 0.03
    # each index about weight · num times: few repeats where no weight exceeds 1 / num
    assert len(torch.unique(u)) > 0.8 * len(u)


def test_a_proposal_lighter_tailed_than_the_target_keeps_its_own_draws():
    torch.manual_seed(0)
    guide = _Gaussian(0.3)
    u, report = resample(guide, lambda u: _normal_log_pdf(u[:, 0], 0.0, 1.0), 2_000)
    assert not report.used and report.khat > khat_threshold(report.pool)
    assert abs(float(u.std()) / 0.3 - 1) < 0.1            # q's draws, unweighted


def test_a_q_lighter_tailed_than_the_ratio_posterior_fails_the_fit():
    """q at 0.3 of the target's sd: the weights' k̂ ≈ 0.9 (P(w > t) ~ t^(-1 / (1 - 0.09))),
    so q is no posterior of the target and the fit is not trusted, not merely advised."""
    torch.manual_seed(0)
    _, report = resample(_Gaussian(0.3), lambda u: _normal_log_pdf(u[:, 0], 0.0, 1.0), 2_000)
    check = q_matches_ratio(SimpleNamespace(resampling=report))
    assert not check.ok and not check.advisory and check.value == report.khat
    assert f"{report.khat:.2f} > {report.threshold:.2f}" in check.message
    assert not Verdict([check]).ok and Verdict([check]).failures() == [check.message]
    _, broad = resample(_Gaussian(2.0), lambda u: _normal_log_pdf(u[:, 0], 0.0, 1.0), 2_000)
    assert q_matches_ratio(SimpleNamespace(resampling=broad)).ok


def test_a_target_that_is_nan_somewhere_is_not_trusted():
    torch.manual_seed(0)
    target = lambda u: torch.where(u[:, 0] > 1.5, torch.nan, -u[:, 0] ** 2)   # noqa: E731
    _, report = resample(_Gaussian(1.0), target, 1_000)
    assert not report.used and report.khat == math.inf


@pytest.fixture(scope="module")
def gaussian_linear_fit():
    """sbibm gaussian_linear at CI size: 10-d, posterior N(x / 2, 0.05 I) exactly."""
    data, _ = models.sbibm_task("gaussian_linear")
    trainer = Trainer(models.gaussian_linear(), data, FitSettings(steps=400, simulations=128, seed=0))
    return trainer, trainer.run(), data["x"].numpy()


def test_the_plan_resamples_where_the_ratio_posterior_is_known_and_the_checks_say_how(gaussian_linear_fit):
    trainer, result, _ = gaussian_linear_fit
    assert trainer.plan.resample and "importance-resampled" in trainer.plan.describe()
    line = {c.name: c for c in result.verdict.checks}["q matches the ratio"]
    assert "q matches the ratio" in result.verdict.passed()
    report = trainer.resampling
    assert report is not None and report.used and line.ok and line.value == report.khat
    assert "Pareto k̂" in line.message and f"{report.pool:,}" in line.message
    # the fit's draws are made once: what the check reports is what the user gets
    assert result.posterior() is result.posterior()


def test_resampled_draws_match_the_exact_posterior(gaussian_linear_fit):
    _, result, x = gaussian_linear_fit
    theta = result.posterior()["theta"]
    sd = math.sqrt(0.05)
    errors = (theta.mean(0) - x / 2) / sd
    ratios = theta.std(0) / sd
    assert np.abs(errors).max() < 0.15 and np.abs(ratios - 1).max() < 0.06, (errors, ratios)


def test_resample_off_keeps_q_draws():
    data, _ = models.sbibm_task("two_moons")
    plan = Trainer(models.two_moons(), data, FitSettings(steps=10, simulations=128, resample=False)).plan
    assert not plan.resample and "importance-resampled" not in plan.describe()
    with pytest.raises(ValueError, match="resample"):
        FitSettings(resample="yes").validate()
    # a point-estimated global has no density to weigh q's draws by
    point = Trainer(models.two_moons(), data, FitSettings(steps=10, simulations=128, guide={"theta": "point"})).plan
    assert point.population and not point.resample


def test_a_plate_of_rows_keeps_q_draws():
    """On a plate the ratio's posterior sums N rows' ratios, whose errors q's averaged
    steps average out: the linear regression (N = 500) with a population forced on
    it still keeps q's draws, and the plan says why."""
    data, _ = models.linreg_data()
    plan = Trainer(models.linear_regression(), data,
                   FitSettings(steps=10, simulations=128, covering="on")).plan
    assert plan.population and not plan.resample
    assert "500 rows" in plan.reasons["posterior draws"]
    assert "posterior draws  q's  (q's: the ratio's posterior sums 500 rows" in plan.describe()


def test_on_a_plate_q_is_weighed_against_the_ratio_posterior_and_a_wide_or_narrow_q_fails():
    """On a plate the draws stay q's, yet q is weighed against the ratio's posterior
    (the prior times Σ_n r over every row). The linear regression (N = 500, globals
    only; minibatches of 100 rows, so q is a full-rank normal) after 300 steps has a
    q still 1.5-2.4 times as wide as the exact posterior: the weights are then light-
    tailed (k̂ well below its bound), but their moments give a narrower posterior, and
    the check fails naming w[0]. The same q at a twentieth of its width fails by k̂,
    naming the rows and what to try. (At 2,000 steps it passes: test_accuracy.py.)"""
    data, exact = models.linreg_data()
    trainer = Trainer(models.linear_regression(), data,
                      FitSettings(steps=300, simulations=128, seed=0, batch=100))
    result = trainer.run()
    assert trainer.plan.weigh_draws == 4000 and not trainer.plan.resample
    assert result.posterior(4000)["w"].std(0)[0] > 1.4 * exact["w_sd"][0]
    wide = {c.name: c for c in result.verdict.checks}["q matches the ratio"]
    assert not wide.ok and wide.value < khat_threshold(4000) and "along `w[0]`" in wide.message
    assert "5 weighings of 4,000 draws" in wide.message and wide.detail["sd_ratio"]["w[0]"] < 0.7
    khats = wide.detail["khats"]
    assert len(khats) == 5 and khats == sorted(khats) and wide.value == pytest.approx(khats[2], abs=1e-3)
    narrow = copy.deepcopy(result.global_guide)
    with torch.no_grad():
        for family in narrow.families:
            family.log_diag += math.log(0.05)
            family.off_diag *= 0.05
    trainer.result = lambda: SimpleNamespace(global_guide=narrow)
    check = q_matches_ratio(trainer)
    assert not check.ok and not check.advisory and check.value > 0.7
    assert "batch = 500" in check.message and "disagree" in check.message


@pytest.mark.parametrize("loc, sd, off", [(0.0, 1.0, False), (0.1, 1.05, False), (0.5, 1.0, True),
                                          (0.0, 1.5, True), (0.0, 0.8, True)])
def test_the_weighed_moments_tell_a_shifted_or_wider_target(loc, sd, off):
    """Weighed to a known normal target, q = N(0, 1)'s draws give its mean and sd:
    a target 0.5 sd away, 1.5 times as wide (k̂ 0.56, below its bound) or 0.8 as wide
    is off; one 0.1 sd away and 5 % wider is within the accuracy targets' widths."""
    from himdsl.infer.checks import PosteriorComparison

    torch.manual_seed(0)
    comparison = PosteriorComparison.weighed(_Gaussian(1.0), lambda u: _normal_log_pdf(u[:, 0], loc, sd), 4000)
    assert comparison.shifts[0] == pytest.approx(loc, abs=0.05)
    assert math.exp(comparison.log_sd_ratios[0]) == pytest.approx(sd, rel=0.1)
    assert (comparison.worst() == 0) is off


@pytest.mark.parametrize("khats, ok", [((0.95, 0.40, 0.50, 0.60, 0.45), True),
                                        ((0.30, 0.80, 0.90, 0.75, 0.20), False)])
def test_on_a_plate_the_median_of_five_weighings_is_judged(monkeypatch, khats, ok):
    """One k̂ near the bound moves with the weighing's random stream: the check judges
    the median of five independent weighings, so one heavy weighing does not fail a
    fit and one light one does not pass it; each weighing draws afresh."""
    import himdsl.infer.checks as checks

    data, _ = models.linreg_data()
    trainer = Trainer(models.linear_regression(), data, FitSettings(steps=10, simulations=128, batch=100))
    scripted, states = iter(khats), []

    def weigh(guide, log_target, draws):
        states.append(torch.get_rng_state())
        guide.rsample(draws)
        return None, None, SimpleNamespace(khat=next(scripted))

    monkeypatch.setattr(checks, "weigh", weigh)
    check = q_matches_ratio(trainer)
    assert check.ok is ok and check.value == sorted(khats)[2]
    assert check.detail == {"draws": 4000, "khats": sorted(khats)}
    assert f"{sorted(khats)[0]:.2f} to {sorted(khats)[-1]:.2f}" in check.message
    assert len({bytes(s.numpy()) for s in states}) == 5


def test_only_a_ratio_of_the_globals_alone_on_a_plate_is_weighed():
    """The ratio's posterior is known up to a constant where the contrastive ratio
    reads the globals alone: not with locals, not with a point-estimated global; on
    many rows fewer draws are weighed, and none where k̂'s bound would be too loose."""
    data, _ = models.linreg_data()
    plan = lambda m, d, **s: Trainer(m, d, FitSettings(steps=10, simulations=128, **s)).plan  # noqa: E731
    assert plan(models.linear_regression(), data, guide={"w": "point"}).weigh_draws == 0
    assert plan(models.hier_gauss(), models.hier_gauss_data()[0]).weigh_draws == 0
    tasks, _ = models.sbibm_task("two_moons")
    assert plan(models.two_moons(), tasks).weigh_draws == 0          # one row: resampled instead
    big, _ = models.linreg_data(n=2000)
    assert plan(models.linear_regression(), big).weigh_draws == 2 ** 21 // 2000
    huge, _ = models.linreg_data(n=5000)
    assert plan(models.linear_regression(), huge).weigh_draws == 0
