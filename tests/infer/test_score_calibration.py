"""The score calibration works in the coordinates q moves in: a constant c is a
tilt of q there, never a force that grows in q's tail."""
import numpy as np
import torch
from torch.distributions import Gamma, HalfNormal, Normal, Uniform, constraints

from himdsl.infer import FitSettings, Trainer
from himdsl.infer.score_calibration import ScoreCalibration, support_map
from tests.infer.models import compiled

COUNTS = """
model counts
const V = 4
data y : int[V]
latent mu ~ Normal(0, 2)
latent phi ~ Gamma(2, 0.2)
plate s over y {
    latent a ~ Normal(mu, 1)
    noise g ~ Gamma(phi, phi) [V]
    noise k ~ Poisson(exp(a) * g)
    observe y = k
}
"""


def test_each_support_has_its_unconstrained_coordinate():
    assert support_map(Normal(0.0, 1.0).support) == (0, 0.0, 1.0)
    assert support_map(HalfNormal(1.0).support) == (1, 0.0, 1.0)
    assert support_map(Gamma(2.0, 0.2).support) == (1, 0.0, 1.0)     # θ ≥ 0
    assert support_map(constraints.greater_than(2.0))[:2] == (1, 2.0)
    assert support_map(Uniform(-1.0, 3.0).support) == (2, -1.0, 3.0)
    assert support_map(constraints.independent(constraints.positive, 1))[0] == 1
    # an interval whose bound varies (read from a latent) keeps θ itself
    assert support_map(Uniform(torch.zeros(3), torch.tensor([1.0, 2.0, 3.0])).support)[0] == 0


def test_the_correction_is_a_constant_tilt_in_q_coordinates():
    """d(c · u(θ))/du = c wherever θ is: a positive θ at 1e12 is pushed no harder
    than one at 1 (applied to θ itself the push there would be c · 1e12)."""
    cal = ScoreCalibration(3)
    cal.set_supports([constraints.real, constraints.positive, constraints.interval(-1.0, 3.0)])
    cal.score.copy_(torch.tensor([0.3, -0.2, 0.5]))
    u = torch.tensor([[0.5, 0.0, 0.0], [-4.0, 27.6, 6.0], [9.0, -20.0, -6.0]], requires_grad=True)
    theta = torch.stack([u[:, 0], u[:, 1].exp(), -1 + 4 * torch.sigmoid(u[:, 2])], -1)
    grad, = torch.autograd.grad(cal.correction(theta).sum(), u)
    assert torch.allclose(grad, cal.score.expand(3, 3), rtol=1e-3)
    assert torch.allclose(cal.coordinates(theta.detach()), u.detach(), atol=1e-3)


def test_the_mean_score_is_measured_in_q_coordinates():
    """For r = f(log θ) the score in u is f'(log θ) whatever θ: the update folds in
    ∂r/∂θ · dθ/du, here exactly 0.7 from θ at 0.01 to 1e6."""
    cal = ScoreCalibration(1)
    cal.set_supports([constraints.positive])
    theta = torch.logspace(-2, 6, 50).reshape(-1, 1).requires_grad_(True)
    score, = torch.autograd.grad((0.7 * theta.log()).sum(), theta)
    for k in range(2000):
        cal.update(k, score, theta.detach())
    assert abs(cal.score.item() - 0.7) < 1e-4


def test_the_ratio_reads_each_parents_support():
    """A count model's ratio reads a (a Normal local: itself) and phi (a Gamma global:
    its log)."""
    rng = np.random.default_rng(0)
    data = {"y": rng.poisson(3.0, size=(30, 4))}
    trainer = Trainer(compiled("counts.him", COUNTS), data,
                      FitSettings(steps=2, batch=8, particles=4, simulations=64))
    assert trainer.plan.ratio == "contrastive"
    assert trainer.ratio.calibration.kind.tolist() == [0, 1]


ROBUST = """
model robust
data xc : real
data y : real
latent a ~ Normal(0, 5)
latent b ~ Normal(0, 5)
latent sigma ~ HalfNormal(2)
latent df ~ Gamma(2, 0.1)
latent w ~ Beta(1, 9)
plate n over y {
    noise t ~ StudentT(df, 0, 1)
    noise u ~ Uniform(0, 1)
    noise o ~ Normal(0, 1)
    let loc = a + b * xc
    observe y = loc + where(u < w, 10 * sigma * o, sigma * t)
}
"""


def test_a_latent_the_ratio_reads_as_a_likelihood_input_keeps_its_support():
    """Read as a likelihood input beside a `let`, sigma and df (positive) are
    calibrated in their logs and w (in (0, 1)) in its logit; the let is itself.
    Calibrated on df's own value, a fit's q(df) ran to 1e23."""
    rng = np.random.default_rng(0)
    xc = rng.normal(size=40)
    data = {"xc": xc, "y": 1 + 2 * xc + 0.5 * rng.standard_t(8, size=40)}
    trainer = Trainer(compiled("robust.him", ROBUST), data,
                      FitSettings(steps=2, batch=8, particles=4, simulations=64))
    assert trainer.plan.ratio_inputs == "inputs"
    reads = dict(zip(trainer.view.model.likelihood_inputs, trainer.ratio.calibration.kind.tolist()))
    assert reads == {"sigma": 1, "df": 1, "w": 2, "loc": 0}


def test_on_the_real_line_the_calibration_is_the_plain_mean_score():
    """Where every coordinate is θ itself the calibration is bit for bit the mean of
    ∂r/∂θ (a product with ones would reorder a strided mean's sum and move a fit)."""
    cal = ScoreCalibration(2)
    cal.set_supports([constraints.real, constraints.real])
    score = torch.randn(300, 3)[:, 1:]                       # strided, as autograd gives it
    theta = torch.randn(300, 2)
    cal.update(0, score, theta)
    expected = torch.zeros(2).lerp_(score.mean(0), 1 - 0.1)
    assert torch.equal(cal.score, expected)
    assert cal.coordinates(theta) is theta
