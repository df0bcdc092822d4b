"""The ratio estimator recovers a known log density ratio; the hinge loss only its sign."""
import pytest
import torch

from types import SimpleNamespace

from himdsl.infer.ratio import BOUND, RatioEstimator, RatioLearner, StagedRatio, classifier_loss


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


def test_a_new_network_adds_nothing_at_first_and_stays_bounded_in_the_tails():
    """At its start r is unchanged. The new network reads its inputs bounded softly
    at BOUND of its units: near its centre it resolves them linearly; in the prior's
    tails, where its pairs never were, its inputs (and so its product units and
    quadratic form) stay within the bound whatever its weights."""
    torch.manual_seed(0)
    staged = StagedRatio(2, hidden=(8, 8))
    staged.fit_scaling([5 * torch.randn(200, 2)])
    torch.nn.init.normal_(staged.stages[0].net[-1].weight)
    near, far = 0.5 * torch.randn(32, 2), torch.full((4, 2), 1e4)
    u = torch.cat([near, far])
    before = staged(u).detach()
    stage = staged.add_stage(torch.zeros(2), torch.full((2,), 0.5))
    torch.testing.assert_close(staged(u).detach(), before)
    torch.testing.assert_close(stage.origin_sd, torch.full((2,), 0.5))
    assert all(p.requires_grad for p in staged.parameters())
    inputs = stage.scale(u)
    inner = (near / 0.5).abs().max(-1).values < 1.5                            # ~linear where the pairs are
    torch.testing.assert_close(inputs[:32][inner], (near / 0.5)[inner], rtol=0.05, atol=1e-3)
    assert inputs.abs().max() <= BOUND
    for layer in (stage.prod_a, stage.prod_b, stage.left, stage.right, stage.net[-1]):
        torch.nn.init.normal_(layer.weight)
    torch.testing.assert_close(staged(u).detach() - staged.stages[0](u).detach(), stage(u).detach())
    torch.testing.assert_close(stage(far).detach(), stage(100 * far).detach())  # flat beyond its bound


def _learner() -> RatioLearner:
    settings = SimpleNamespace(ratio=SimpleNamespace(hidden=(8,)), ratio_lr=1e-3)
    learner = RatioLearner(2, settings, ema=0.9, device="cpu")
    learner.fit_input_scaling([torch.randn(4000, 2) * torch.tensor([1.0, 4.0])])
    return learner


@pytest.mark.parametrize("terms, stages, width", [(1.0, 2, 0.01), (1e4, 2, 1.0), (1e6, 1, 4.0)])
def test_an_input_shared_by_many_terms_is_read_at_one_terms_width(terms, stages, width):
    """A column shared by T terms of the log likelihood (a global read by N rows) is
    standardised at sqrt(T) times its spread in the pairs, capped at its first units:
    a new network only when that width is below half of the latest one's units."""
    torch.manual_seed(0)
    learner = _learner()
    features = torch.randn(4000, 2) * torch.tensor([1.0, 0.01])    # column 1 narrowed 400x
    learner.restandardise(features, may_add=True, terms=torch.tensor([1.0, terms]))
    assert len(learner.net.stages) == stages
    assert learner.net.head.scale.sd[0] == pytest.approx(1.0, rel=0.1)
    assert learner.net.head.scale.sd[1] == pytest.approx(width, rel=0.1)


def test_a_new_network_joins_the_optimiser_and_the_average_and_only_the_first_moves():
    """A new network is a new parameter group (the others keep their Adam moments)
    and the average gets a copy equal to it; pairs that moved STAGE_DRIFT of the
    latest network's units start another; once a bounded network exists, nothing
    moves (its inputs are not affine), and without `may_add` nothing is added."""
    torch.manual_seed(0)
    learner = _learner()
    centre = torch.tensor([0.3, -0.2])
    learner.restandardise(centre + 0.8 * torch.randn(4000, 2), may_add=True)     # 4 -> 0.8: narrowed
    net, averaged = learner.net, learner.average.average
    assert len(net.stages) == 2 and len(learner.opt.param_groups) == 2
    assert all(p is q for p, q in zip(learner.opt.param_groups[1]["params"], net.head.parameters()))
    assert averaged is not net and len(averaged.stages) == 2
    u = torch.randn(64, 2)
    torch.testing.assert_close(averaged.head(u), net.head(u))
    first = net.stages[0].scale.mean.clone()
    learner.restandardise(centre + 0.1 + 0.8 * torch.randn(4000, 2), may_add=True)   # neither: no change
    assert len(net.stages) == 2 and torch.equal(net.stages[0].scale.mean, first)
    moved = centre + torch.tensor([2.5 * 0.8, 0.0]) + 0.8 * torch.randn(4000, 2)
    learner.restandardise(moved, may_add=False)
    assert len(net.stages) == 2
    learner.restandardise(moved, may_add=True)
    assert len(net.stages) == 3 and len(averaged.stages) == 3 and len(learner.opt.param_groups) == 3


def test_a_state_with_more_or_fewer_stages_loads():
    """A checkpoint taken after new networks restores into a ratio built with one;
    a ratio restored to an earlier state drops them (and its optimiser follows)."""
    learner = _learner()
    learner.restandardise(0.5 * torch.randn(4000, 2), may_add=True)
    staged = learner.net
    torch.nn.init.normal_(staged.head.net[-1].weight)
    u = 3 * torch.randn(16, 2)
    fresh = _learner()
    fresh.net.load_state_dict(staged.state_dict())
    torch.testing.assert_close(fresh.net(u), staged(u))
    assert len(fresh.net.stages) == 2 and fresh.net.head.scale.bound == BOUND
    fresh.sync_optimiser()
    assert len(fresh.opt.param_groups) == 2
    staged.load_state_dict(StagedRatio(2, hidden=(8,)).state_dict())
    learner.sync_optimiser()
    assert len(staged.stages) == 1 and len(learner.opt.param_groups) == 1


def test_a_ratio_saved_before_stages_and_offsets_loads():
    old = RatioEstimator(2, hidden=(8,))
    torch.nn.init.normal_(old.net[-1].weight)
    state = {k: v for k, v in old.state_dict().items() if not k.endswith(("offset", "origin_sd"))}
    staged = StagedRatio(2, hidden=(8,))
    staged.load_state_dict(state)
    u = torch.randn(8, 2)
    torch.testing.assert_close(staged(u), old(u))
