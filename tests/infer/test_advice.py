"""The verdict's advisory lines: each measure against a known answer, and on fits a
good one passes while a broken one (too few steps) is flagged."""
import math

import pytest
import torch

from himdsl.infer import FitSettings, fit
from himdsl.infer.advice import PPC_TAIL, _ppc_extreme, expected_calibration_error
from tests.infer.models import hier_gauss, hier_gauss_data


def test_a_calibrated_classifier_has_a_small_ece_and_an_overconfident_one_a_large_one():
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(40000, generator=gen)
    right = torch.rand(40000, generator=gen) < torch.sigmoid(logits.abs())   # calibrated answers
    margins = torch.where(right, logits.abs(), -logits.abs())
    ece, accuracy, curve = expected_calibration_error(margins)
    assert ece < 0.01
    assert accuracy == pytest.approx(float(torch.sigmoid(logits.abs()).mean()), abs=0.01)
    assert all(abs(conf - acc) < 0.03 for conf, acc, count in curve if count > 1000)
    overconfident, _, _ = expected_calibration_error(4 * margins)
    assert overconfident > 0.08


def test_the_predictive_check_of_many_features_rarely_flags_data_the_model_made():
    """Data drawn like the replicates, 20 features (40 summaries): flagged in at most
    2 of 100 trials (expected 0.5); a fixed tail per summary flagged about half."""
    gen = torch.Generator().manual_seed(0)
    flagged = 0
    for _ in range(100):
        simulated = torch.randn(100, 256, 20, generator=gen)
        worst, _, tested = _ppc_extreme(simulated, torch.randn(1, 256, 20, generator=gen), [])
        flagged += not PPC_TAIL / tested <= worst <= 1 - PPC_TAIL / tested
    assert tested == 40 and flagged <= 2
    shifted = torch.randn(1, 256, 20, generator=gen)
    shifted[..., 7] += 0.5                       # 8 standard errors of a mean of 256 rows
    worst, where, tested = _ppc_extreme(torch.randn(100, 256, 20, generator=gen), shifted, [])
    assert worst < PPC_TAIL / tested and where == "mean of 7"


def _advice(steps):
    data, _ = hier_gauss_data(n=300, seed=3)
    result = fit(hier_gauss(), data, FitSettings(steps=steps, log_every=25, seed=0))
    return {c.name: c for c in result.verdict.advice()}


def test_a_good_fit_is_not_flagged_and_a_broken_one_is():
    good = _advice(1000)
    assert all(c.ok for c in good.values()), [c.message for c in good.values()]
    assert set(good) >= {"ratio calibration", "ELBO settled", "posterior predictive"}
    assert "long enough to judge" not in good
    broken = _advice(50)
    # 50 steps leave a final quarter of 12, too short to trace q: a smoke test, said so
    smoke = broken["long enough to judge"]
    assert not smoke.ok and "50 steps are too few to judge" in smoke.message
    assert "q settled, ratio is a likelihood and ratio's score unbiased need" in smoke.message
    assert not broken["posterior predictive"].ok
    assert "outside what the fitted model simulates" in broken["posterior predictive"].message
    # after 50 steps q is still climbing: its ELBO rises between the final quarter's halves
    assert not broken["ELBO settled"].ok and broken["ELBO settled"].value > 0.5
    assert "run more steps" in broken["ELBO settled"].message
    assert math.isfinite(broken["ratio calibration"].value)
    # fit.json keeps the reliability curve behind the ECE: the bins hold every held-out
    # simulation, and their count-weighted gaps are the ECE
    detail = broken["ratio calibration"].detail
    counts = [b["count"] for b in detail["reliability"]]
    assert sum(counts) == detail["simulations"] >= 100
    gaps = sum(b["count"] * abs(b["confidence"] - b["accuracy"]) for b in detail["reliability"])
    assert gaps / sum(counts) == pytest.approx(broken["ratio calibration"].value, abs=1e-3)


def test_the_locals_means_check_measures_their_error_against_the_exact_posterior():
    """A group's intercept and slope at x in [2, 3] (benchmarks/collinear_locals.py),
    1,000 steps and no polish after them: the guide's means are still ~0.4 of their
    sds off the exact posterior along the ridge, and one Newton step of each row's
    ELBO measures that (0.416 for 0.409 when written)."""
    from benchmarks import collinear_locals
    from tests.infer.models import NORMAL_MEAN, compiled
    from dataclasses import replace

    from himdsl.infer.trainer import Trainer
    rows = collinear_locals.data(groups=100)
    trainer = Trainer(compiled("slopes.him", collinear_locals.SOURCE), rows, FitSettings(steps=1000))
    trainer.plan = replace(trainer.plan, polish_locals=False)     # the guide as the loop left it
    result = trainer.run()
    scores = collinear_locals.score(result, rows)
    actual = math.sqrt((scores["a"]["rmse_in_sd"] ** 2 + scores["b"]["rmse_in_sd"] ** 2) / 2)
    check = {c.name: c for c in result.verdict.advice()}["locals' means"]
    assert actual > 0.2 and not check.ok and "run more steps" in check.message
    assert check.value == pytest.approx(actual, rel=0.1)


def test_a_fit_with_the_exact_likelihood_weighs_q_against_the_exact_posterior():
    """y ~ N(mu, 1): a fitted q passes; the same q at 0.2 of its width has weights
    with a Pareto tail k = 1 − 0.2² ≈ 0.96 and is flagged (advice: the fit stands)."""
    from tests.infer.models import NORMAL_MEAN, compiled
    from himdsl.infer import Trainer
    from himdsl.infer.advice import exact_importance

    y = torch.randn(40, generator=torch.Generator().manual_seed(0)) + 0.5
    trainer = Trainer(compiled("normal_mean.him", NORMAL_MEAN), {"y": y.numpy()},
                      FitSettings(steps=300, seed=1, guide={"mu": "normal"}))
    assert trainer.plan.method == "vi"
    result = trainer.run()
    check = next(c for c in result.verdict.checks if c.name == "q against the exact posterior")
    assert check.ok and check.advisory and check.value < 0.5
    narrow = trainer.result()
    with torch.no_grad():
        narrow.global_guide.families[0].log_scale.add_(math.log(0.2))
    trainer.result = lambda verdict=False: narrow
    check = exact_importance(trainer)
    assert not check.ok and check.value > 0.7 and "q misses part of it" in check.message
