"""The ratio estimator recovers a known log density ratio; the hinge loss only its sign."""
import pytest
import torch

from types import SimpleNamespace

import torch.nn.functional as F

from himdsl.infer.ratio import WINDOW, RatioEstimator, RatioLearner, StagedRatio, classifier_loss


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


def test_restandardising_keeps_the_ratio_and_rescales_adams_moments():
    """New input moments are absorbed by every layer that reads the standardised
    input (products, MLP, quadratic form): r is unchanged, and Adam's moments of the
    rescaled columns are divided by the scale change as their gradients are."""
    torch.manual_seed(0)
    ratio = RatioEstimator(3, hidden=(16, 16))
    ratio.fit_scaling([10 * torch.randn(500, 3)])
    for layer in (ratio.prod_a, ratio.prod_b, ratio.left, ratio.right, ratio.net[0]):
        torch.nn.init.normal_(layer.weight)          # a trained network: every path matters
    opt = torch.optim.Adam(ratio.parameters(), lr=1e-2)
    u = 2.0 + 0.3 * torch.randn(64, 3)
    ratio(u).square().sum().backward()
    opt.step()
    before = ratio(u).detach()
    m, v = (opt.state[ratio.net[0].weight][k][:, :3].clone() for k in ("exp_avg", "exp_avg_sq"))
    old_sd = ratio.scale.sd.clone()
    centre, spread = torch.tensor([2.0, 2.0, 2.0]), torch.tensor([0.3, 0.3, 0.3])
    ratio.restandardise(centre, spread, opt)
    torch.testing.assert_close(ratio(u).detach(), before, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(ratio.scale.sd, spread)
    scale = spread / old_sd
    torch.testing.assert_close(opt.state[ratio.net[0].weight]["exp_avg"][:, :3], m / scale)
    torch.testing.assert_close(opt.state[ratio.net[0].weight]["exp_avg_sq"][:, :3], v / scale ** 2)


def test_a_constant_column_keeps_its_spread_when_restandardised():
    ratio = RatioEstimator(2, hidden=(8,))
    ratio.fit_scaling([torch.randn(100, 2)])
    old = ratio.scale.sd.clone()
    ratio.restandardise(torch.tensor([0.5, 1.0]), torch.tensor([0.2, 0.0]))
    assert ratio.scale.sd[0] == pytest.approx(0.2)
    assert ratio.scale.sd[1] == old[1]


def test_a_new_stage_keeps_the_ratio_trains_alone_and_takes_over_its_window():
    """At the switch r is unchanged; over the fade's steps the new network takes the
    inputs within WINDOW of its units over from the old one, which keeps the rest:
    beyond its window the new network adds nothing, however large it is there."""
    torch.manual_seed(0)
    staged = StagedRatio(2, hidden=(8, 8))
    staged.fit_scaling([5 * torch.randn(200, 2)])
    torch.nn.init.normal_(staged.head.net[-1].weight)
    near, far = 0.5 * torch.randn(32, 2), torch.full((4, 2), 12.0)
    u = torch.cat([near, far])
    before = staged(u).detach()
    staged.add_stage(100, 50, torch.zeros(2), torch.full((2,), 0.5))
    torch.testing.assert_close(staged(u).detach(), before)
    assert not any(p.requires_grad for p in staged.stages[0].parameters())
    assert all(p.requires_grad for p in staged.head.parameters())
    torch.testing.assert_close(staged.head.origin_sd, torch.full((2,), 0.5))
    torch.nn.init.normal_(staged.head.net[-1].weight)
    old, new = staged.stages[0](u).detach(), staged.head(u).detach()
    staged.advance(120)
    window = torch.exp(-0.5 * (F.relu(u.abs() / 0.5 - WINDOW) ** 2).sum(-1))
    torch.testing.assert_close(staged(u).detach(), window * new + (1 - 0.4 * window) * old)
    staged.advance(400)
    torch.testing.assert_close(staged(u).detach()[:32], (window * new + (1 - window) * old)[:32])
    assert window[:32].min() > 0.5 and window[32:].max() < 1e-30      # near: the new one's; far: the old one's
    assert new[32:].abs().min() > 1.0                                  # the new one is not zero there
    torch.testing.assert_close(staged(u).detach()[32:], old[32:])


def _learner() -> RatioLearner:
    settings = SimpleNamespace(ratio=SimpleNamespace(hidden=(8,)), ratio_lr=1e-3)
    learner = RatioLearner(2, settings, ema=0.0, device="cpu")
    learner.fit_input_scaling([torch.randn(4000, 2) * torch.tensor([1.0, 4.0])])
    return learner


@pytest.mark.parametrize("terms, stages, width", [(1.0, 2, 0.01), (1e4, 2, 1.0), (1e6, 1, 4.0)])
def test_an_input_shared_by_many_terms_is_read_at_one_terms_width(terms, stages, width):
    """A column shared by T terms of the log likelihood (a global read by N rows) is
    standardised at sqrt(T) times its spread in the pairs, capped at its first units:
    a new stage only when that width is below half of the training stage's units."""
    torch.manual_seed(0)
    learner = _learner()
    features = torch.randn(4000, 2) * torch.tensor([1.0, 0.01])    # column 1 narrowed 400x
    learner.restandardise(features, stage_at=100, fade=100, terms=torch.tensor([1.0, terms]))
    assert len(learner.net.stages) == stages
    assert learner.net.head.scale.sd[0] == pytest.approx(1.0, rel=0.1)
    assert learner.net.head.scale.sd[1] == pytest.approx(width, rel=0.1)


def test_a_state_with_more_or_fewer_stages_loads():
    """A checkpoint taken while a new network takes over restores into a network
    built with one, going on alike; a network restored to an earlier state drops it."""
    staged = StagedRatio(2, hidden=(8,))
    staged.add_stage(10, 100, torch.zeros(2), torch.ones(2))
    staged.advance(60)
    torch.nn.init.normal_(staged.head.net[-1].weight)
    u = 3 * torch.randn(16, 2)
    fresh = StagedRatio(2, hidden=(8,))
    fresh.load_state_dict(staged.state_dict())
    torch.testing.assert_close(fresh(u), staged(u))
    assert len(fresh.stages) == 2 and not any(p.requires_grad for p in fresh.stages[0].parameters())
    fresh.advance(80)
    staged.advance(80)
    torch.testing.assert_close(fresh(u), staged(u))
    one = StagedRatio(2, hidden=(8,)).state_dict()
    staged.load_state_dict(one)
    assert len(staged.stages) == 1 and staged.share.numel() == 0


def test_a_ratio_saved_before_stages_and_offsets_loads():
    old = RatioEstimator(2, hidden=(8,))
    torch.nn.init.normal_(old.net[-1].weight)
    state = {k: v for k, v in old.state_dict().items() if not k.endswith(("offset", "origin_sd"))}
    staged = StagedRatio(2, hidden=(8,))
    staged.load_state_dict(state)
    u = torch.randn(8, 2)
    torch.testing.assert_close(staged(u), old(u))
