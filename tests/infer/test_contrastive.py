"""The contrastive ratio's training data and what it learns: pairs simulated from
their own θ, exchangeable, robust to simulations at the prior's extremes."""
import math

import numpy as np
import pytest
import torch

from himdsl.infer import FitSettings, Trainer
from tests.infer.models import compiled, hier_gauss, hier_gauss_data, linear_regression, linreg_data
from tests.infer.test_plan import POISSON

TINY = dict(steps=40, batch=16, particles=4, simulations=512, log_every=10)


def test_each_simulation_comes_from_its_own_theta_and_pairs_share_a_row():
    """hier_gauss: x = z + 0.5 ε, so x − z has variance 0.25 for the simulating z and
    much more for the partner's; both members of a pair read the same covariates."""
    torch.manual_seed(0)
    trainer = Trainer(hier_gauss(), hier_gauss_data(n=200)[0], FitSettings(**TINY))
    with torch.no_grad():
        x, theta, partner, ok = trainer.ratio._pairs(None)
    assert x.shape == (512, 1, 2) and theta.shape == (512, 1, 2) and bool(ok.all())
    own = ((x - theta) ** 2).mean().item()
    other = ((x - theta[partner]) ** 2).mean().item()
    assert abs(own - 0.25) < 0.04 and other > 1.0
    assert torch.equal(partner[partner], torch.arange(512))           # pairs are mutual
    data, _ = linreg_data(n=300)
    trainer = Trainer(linear_regression(), data, FitSettings(**TINY))
    with torch.no_grad():
        x, theta, partner, _ = trainer.ratio._pairs(None)
    f = x[:, 0, 1:]                                                    # y, then the covariates f
    assert torch.equal(f, f[partner])


def test_pair_ratio_learns_the_likelihoods_slope():
    """After a short fit the ratio's gradient in z at the data is the exact
    ∂/∂z log N(x; z, 0.25) = (x − z) / 0.25, in the moving average the q step reads
    (the average starts from the network's fitted input scaling)."""
    data, _ = hier_gauss_data(n=200)
    trainer = Trainer(hier_gauss(), data, FitSettings(steps=300, batch=64, particles=8))
    trainer.run()
    view, ratio = trainer.view, trainer.ratio
    x = view.x_features(view.with_data(view.rows(torch.arange(100)), 1))
    z = (x + 0.45 * torch.randn_like(x)).requires_grad_(True)
    grad, = torch.autograd.grad(ratio.log_lik(x, z).sum(), z)
    exact = (x - z) / 0.25
    grad, exact = grad.detach(), exact.detach()
    slope = float((grad * exact).sum() / (exact * exact).sum())
    assert abs(slope - 1) < 0.1, slope
    assert float((grad - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt()) < 0.2


def test_counts_from_the_priors_tail_stay_finite():
    """A random-effects Poisson model reaches rates of 1e13 in its prior's tail: the
    counts reach the ratio on a log scale and its inputs are clipped, so training
    stays finite (it stopped with NaN at step 1 before)."""
    rng = np.random.default_rng(1)
    n = 60
    data = {"exposure": rng.uniform(1, 10, n), "y": rng.poisson(rng.uniform(1, 10, n) * math.e)}
    module = compiled("poisson.him", POISSON)
    trainer = Trainer(module, data, FitSettings(**dict(TINY, steps=60)))
    with torch.no_grad():
        huge = trainer.view.x_features({"y": torch.tensor([[1e13]]), "exposure": torch.tensor([[1.0]])})
    assert float(huge[0, 0, 0]) == pytest.approx(np.log1p(1e13), rel=1e-6)
    result = trainer.run()
    assert all(math.isfinite(r.ratio_loss) for r in result.trace)
    assert np.isfinite(result.posterior(100)["mu"]).all()


NAN_HALF = """
model nan_half
data x : real
latent mu ~ Normal(0, 1)
plate n over x {
    noise e ~ Normal(0, 1)
    observe x = log(mu + e)
}
"""


def test_non_finite_simulations_are_dropped_and_counted():
    """log of a negative number is NaN for part of the simulations: they are left
    out of the ratio's loss, counted, and a fit where most are NaN fails its check."""
    trainer = Trainer(compiled("nan_half.him", NAN_HALF), {"x": np.zeros(20)}, FitSettings(**TINY))
    result = trainer.run()
    share = float(trainer.ratio.dropped) / float(trainer.ratio.simulated)
    assert 0.1 < share < 0.9
    assert all(math.isfinite(r.ratio_loss) for r in result.trace)
    check = next(c for c in result.verdict.checks if c.name == "simulations finite")
    assert check.ok == (share <= 0.5) and check.value == pytest.approx(share)


NAN_RATE = """
model nan_rate
data k : int
latent mu ~ Normal(0, 1)
plate n over k {
    noise e ~ Normal(0, 1)
    noise c ~ Poisson(2 * log(mu + e + 3))
    observe k = c
}
"""


def test_a_sampler_given_an_invalid_parameter_fails_that_simulation_only():
    """A Poisson rate that is NaN (log of a negative) made torch's sampler raise and
    stopped the fit; it is a failed simulation like any other, dropped and counted."""
    data = {"k": np.random.default_rng(0).poisson(2.0, 20)}
    trainer = Trainer(compiled("nan_rate.him", NAN_RATE), data, FitSettings(**TINY))
    result = trainer.run()
    assert float(trainer.ratio.dropped) > 0
    assert all(math.isfinite(r.ratio_loss) for r in result.trace)
