"""q's score centred on the ratio's own simulations (objective.py, "Centred score"):
a ratio off by a function of θ alone gives q the exact likelihood's gradient again,
the value q's objective reports is unchanged, and the checks judge the posterior a
centred q follows."""
import dataclasses

import pytest
import torch

from himdsl.infer import FitSettings
from himdsl.infer.checks import centred_target, ratio_is_a_likelihood
from himdsl.infer.covering import ratio_posterior
from himdsl.infer.data import ModelView
from himdsl.infer.plan import make_plan
from himdsl.infer.trainer import Trainer
from tests.infer.models import LOCATION_SCALE, compiled

ROWS = 200
ONE_ROW = """
model one_row
data x : real[3]
latent mu ~ Normal(0, 1)
noise e ~ Normal(0, 1) [3]
observe x = mu + e
"""


@pytest.fixture(scope="module")
def fitted() -> Trainer:
    """A contrastive fit of 80 steps: only its plan, guide and rows are used."""
    data = {"x": 0.7 + 1.3 * torch.randn(ROWS, generator=torch.Generator().manual_seed(1))}
    trainer = Trainer(compiled("m.him", LOCATION_SCALE), data,
                      FitSettings(seed=0, steps=80, ratio_inputs="parents", score_centring=True))
    trainer.run()
    return trainer


def _exact(x, theta):
    """log N(x | mu, s) per row, θ = (mu, s)."""
    mu, s = theta[..., 0], theta[..., 1]
    return -s.log() - 0.5 * ((x - mu) / s) ** 2


def _biased(trainer: Trainer, bias) -> Trainer:
    """The trainer with ℓ + bias(mu, s) as its ratio: an error in θ alone, which
    moves the summed ratio's posterior by N times its score."""
    def log_lik(x, theta, averaged=True):
        theta = theta.expand(*x.shape[:2], -1)
        return _exact(x[..., 0], theta) + bias(theta[..., 0], theta[..., 1])
    trainer.ratio.log_lik = log_lik
    return trainer


def _gradient(trainer: Trainer, centring: bool, draws: int = 4000) -> torch.Tensor:
    """q's gradient from every row at one (mu, s), averaged over `draws` copies (each
    centred on its own simulations)."""
    trainer.plan = dataclasses.replace(trainer.plan, score_centring=centring)
    trainer.objective.plan = trainer.plan
    mu = torch.full((draws,), 0.6, requires_grad=True)
    s = torch.full((draws,), 1.2, requires_grad=True)
    rows = trainer.view.rows(None)
    terms = trainer.objective.row_terms({"mu": mu, "s": s}, rows, draws)
    grads = torch.autograd.grad(terms.sum(), [mu, s])
    return torch.stack([g.mean() for g in grads])


def _exact_gradient(trainer: Trainer) -> torch.Tensor:
    theta = torch.tensor([0.6, 1.2], requires_grad=True)
    x = trainer.view.rows(None)["x"].reshape(-1)
    return torch.autograd.grad(_exact(x, theta).sum(), theta)[0]


def test_the_plan_centres_q_on_a_plate_when_asked_and_says_so(fitted):
    assert fitted.plan.score_centring
    assert "centred on simulations at q's draw" in fitted.plan.describe()
    assert "200 rows share the globals" in fitted.plan.reasons["q's score"]
    data = {"x": torch.randn(20)}
    default = make_plan(ModelView(compiled("m.him", LOCATION_SCALE), data), FitSettings(), False)
    assert not default.score_centring and "q's score" not in default.describe()


def test_where_centring_cannot_apply_the_plan_says_why():
    one_row = compiled("one.him", ONE_ROW)
    plan = make_plan(ModelView(one_row, {"x": torch.randn(3)}), FitSettings(score_centring=True), False)
    assert not plan.score_centring and "not centred" in plan.describe()
    assert "one row of data" in plan.reasons["q's score"]
    with pytest.raises(ValueError, match="budget"):
        make_plan(ModelView(compiled("m.him", LOCATION_SCALE), {"x": torch.randn(20)}),
                  FitSettings(score_centring=True, budget=100_000), False)
    with pytest.raises(ValueError, match="score_centring"):
        FitSettings(score_centring="yes").validate()


def test_a_ratio_off_by_a_function_of_theta_gives_the_exact_gradient_when_centred(fitted):
    """bias = 0.3 mu − 0.5 (s − 1)²: its score (0.3, −(s − 1)) a row, summed over 200
    rows, is a gradient error of (60, −40); centred, what is left is the simulations'
    noise, a few units over 4,000 draws."""
    trainer = _biased(fitted, lambda mu, s: 0.3 * mu - 0.5 * (s - 1) ** 2)
    exact = _exact_gradient(trainer)
    plain = _gradient(trainer, centring=False)
    centred = _gradient(trainer, centring=True)
    assert plain == pytest.approx(exact + torch.tensor([60.0, -40.0]), abs=0.5)
    assert centred == pytest.approx(exact, abs=3.0)


def test_centring_leaves_the_value_of_q_objective(fitted):
    trainer = _biased(fitted, lambda mu, s: 0.3 * mu)
    torch.manual_seed(0)
    rows = trainer.view.rows(None)
    globals = {"mu": torch.tensor([0.6, 0.1]), "s": torch.tensor([1.2, 0.9])}
    values = []
    for centring in (False, True):
        trainer.objective.plan = dataclasses.replace(trainer.plan, score_centring=centring)
        values.append(trainer.objective.row_terms(globals, rows, 2))
    assert torch.equal(values[0], values[1])


def test_the_checks_weigh_q_against_the_posterior_it_follows(fitted):
    """With centring the target of "q matches the ratio" is the ratio's posterior less
    N times its mean score's integral: for ℓ + 0.3 mu that is the exact posterior
    again (up to a constant), where the ratio's own leans by 0.3 N mu."""
    trainer = _biased(fitted, lambda mu, s: 0.3 * mu)
    trainer.plan = dataclasses.replace(trainer.plan, score_centring=True)
    guide = trainer.result().global_guide
    _, log_posterior_u = ratio_posterior(trainer.model, guide, trainer.ratio)
    target = centred_target(trainer, guide, log_posterior_u)
    with torch.no_grad():
        u = guide.rsample(64)[2]
        exact = log_posterior_u(u) - ROWS * 0.3 * guide.constrain(u)[0]["mu"]
        difference = target(u) - exact
    assert float(difference.std()) < 0.5      # over a spread of log π in the hundreds
    assert float(log_posterior_u(u).std()) > 5 * float(difference.std())


def test_the_identity_judges_the_centred_ratio(fitted):
    """A ratio whose curvature alone is off, ℓ − (mu − m)² / s² (twice the likelihood's
    curvature along mu), fails the identity as too narrow without centring and passes
    with it: centred, q follows the exact likelihood's gradient."""
    with torch.no_grad():
        m = float(fitted.result().global_guide.rsample(20_000)[0]["mu"].mean())
    trainer = _biased(fitted, lambda mu, s: -(mu - m) ** 2 / s ** 2)
    trainer.plan = dataclasses.replace(trainer.plan, score_centring=False)
    plain = ratio_is_a_likelihood(trainer)
    assert not plain.ok and "most likely too narrow" in plain.message
    trainer.plan = dataclasses.replace(trainer.plan, score_centring=True)
    centred = ratio_is_a_likelihood(trainer)
    assert centred.ok and centred.value == pytest.approx(1.0, abs=0.1)
