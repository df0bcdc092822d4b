"""The ratio estimator recovers a known log density ratio; the hinge loss only its sign."""
import torch

from himdsl.infer.ratio import RatioEstimator, classifier_loss


def _train(loss_name, steps=1500, seed=0):
    torch.manual_seed(seed)
    ratio = RatioEstimator(1, hidden=(32, 32))
    p = torch.distributions.Normal(1.0, 1.0)
    q = torch.distributions.Normal(0.0, 1.5)
    ratio.fit_scaling([torch.cat([p.sample((2000, 1)), q.sample((2000, 1))])])
    opt = torch.optim.Adam(ratio.parameters(), lr=3e-3)
    for k in range(steps):
        for group in opt.param_groups:
            group["lr"] = 3e-3 * (1 - k / steps) + 1e-4
        loss, _ = classifier_loss(ratio(p.sample((512, 1))), ratio(q.sample((512, 1))), loss_name)
        opt.zero_grad()
        loss.backward()
        opt.step()
    grid = torch.linspace(-1.5, 2.5, 41)[:, None]
    with torch.no_grad():
        return ratio(grid), (p.log_prob(grid) - q.log_prob(grid))[:, 0]


def test_log_loss_recovers_gaussian_log_ratio():
    estimate, exact = _train("log")
    assert (estimate - exact).abs().max() < 0.12


def test_hinge_loss_gets_the_sign():
    estimate, exact = _train("hinge", steps=600)
    clear = exact.abs() > 0.3
    assert torch.equal(estimate[clear] > 0, exact[clear] > 0)


def test_accuracy_of_perfect_classifier():
    _, acc = classifier_loss(torch.full((4,), 3.0), torch.full((4,), -3.0))
    assert acc == 1.0
