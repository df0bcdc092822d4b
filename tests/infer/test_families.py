"""Variational families: densities against torch.distributions, flow invertibility
and log-determinants against autograd, constrained mapping."""
import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from himdsl.infer.families import (AUTO_FLOW_MAX_DIMS, FullRankNormal, GlobalGuide,
                                   MeanFieldNormal, NormalizingFlow, PointMass, _bins,
                                   rq_spline)
from tests.infer.models import hier_gauss, two_moons


def _randomise(module, std=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)


def test_mean_field_matches_torch():
    torch.manual_seed(0)
    q = MeanFieldNormal(3)
    _randomise(q)
    u, log_q = q.rsample(50)
    ref = Normal(q.loc, q.log_scale.exp()).log_prob(u).sum(-1)
    assert torch.allclose(log_q, ref, atol=1e-5)
    assert torch.allclose(q.log_prob(u), ref, atol=1e-5)


def test_full_rank_matches_torch():
    torch.manual_seed(0)
    q = FullRankNormal(4)
    _randomise(q)
    u, log_q = q.rsample(50)
    ref = MultivariateNormal(q.loc, scale_tril=q.scale_tril()).log_prob(u)
    assert torch.allclose(log_q, ref, atol=1e-4)
    assert torch.allclose(q.log_prob(u), ref, atol=1e-4)


def test_point_mass_has_no_spread():
    q = PointMass(2)
    u, log_q = q.rsample(5)
    assert torch.equal(u, q.loc.expand(5, 2)) and torch.equal(log_q, torch.zeros(5))


def test_spline_inverse_and_log_det():
    torch.manual_seed(0)
    x = torch.linspace(-6, 6, 25, dtype=torch.float64)[:, None].requires_grad_()
    w, h, d = (torch.randn(25, 1, k, dtype=torch.float64) for k in (8, 8, 7))
    y, logdet = rq_spline(x, w, h, d, bound=5.0)
    back, inv_logdet = rq_spline(y, w, h, d, bound=5.0, inverse=True)
    grad, = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(back, x, atol=1e-8)
    assert torch.allclose(logdet, -inv_logdet, atol=1e-8)
    assert torch.allclose(grad.log(), logdet, atol=1e-8)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_flow_density_consistent_and_log_det_matches_autograd(dim):
    torch.manual_seed(dim)
    flow = NormalizingFlow(dim).double()
    _randomise(flow, 0.2)
    eps = torch.randn(6, dim, dtype=torch.float64)
    u, log_q = flow.rsample(6)
    assert torch.allclose(flow.log_prob(u), log_q, atol=1e-6)

    def push(e):
        z = e[None]
        for layer in flow.layers:
            z, _ = layer(z)
        return (flow.loc + flow.log_scale.exp() * z)[0]
    for e in eps:
        jac = torch.autograd.functional.jacobian(push, e)
        base = Normal(0.0, 1.0).log_prob(e).sum()
        expected = base - torch.linalg.slogdet(jac)[1]
        assert torch.allclose(flow.log_prob(push(e)[None])[0], expected, atol=1e-6)


def test_a_flow_not_yet_shaping_is_its_normal_part():
    """Moments first: with shaping off the splines are skipped (and get no gradient),
    whatever their parameters, and q is N(loc, diag(scale²))."""
    torch.manual_seed(3)
    flow = NormalizingFlow(3).double()
    _randomise(flow, 0.3)
    flow.shaping = False
    normal = MultivariateNormal(flow.loc, scale_tril=torch.diag(flow.log_scale.exp()))
    u, log_q = flow.rsample(8)
    assert torch.allclose(log_q, normal.log_prob(u), atol=1e-8)
    assert torch.allclose(flow.log_prob(u), normal.log_prob(u), atol=1e-8)
    log_q.sum().backward()
    assert all(p.grad is None for p in flow.layers.parameters())
    flow.shaping = True
    assert not torch.allclose(flow.log_prob(u), normal.log_prob(u), atol=1e-3)


def test_flow_starts_as_identity():
    flow = NormalizingFlow(2)
    u = torch.randn(10, 2)
    assert torch.allclose(flow.log_prob(u), Normal(0.0, 1.0).log_prob(u).sum(-1), atol=1e-5)


def test_global_guide_constrains_and_counts_log_det():
    torch.manual_seed(0)
    guide = GlobalGuide(two_moons(), {})
    assert guide.kinds == ["flow"]
    _randomise(guide, 0.1)
    globals, log_q, u = guide.rsample(200)
    theta = globals["theta"]
    assert theta.abs().max() < 1
    # q(θ) = q(u) / |dθ/du| with θ = 2 sigmoid(u) − 1 elementwise
    log_det = (math.log(2) + torch.nn.functional.logsigmoid(u) + torch.nn.functional.logsigmoid(-u)).sum(-1)
    assert torch.allclose(log_q, guide.families[0].log_prob(u) - log_det, atol=1e-4)


def test_auto_family_by_dimension_and_explicit_choice():
    assert GlobalGuide(hier_gauss(), {}).kinds == ["flow"]
    assert GlobalGuide(hier_gauss(), {}, full_batch=False).kinds == ["mvnormal"]   # minibatches
    assert GlobalGuide(hier_gauss(), {"beta": "mvnormal"}).kinds == ["mvnormal"]
    assert AUTO_FLOW_MAX_DIMS >= 10
    with pytest.raises(ValueError, match="unknown guide family"):
        GlobalGuide(hier_gauss(), {"beta": "spline"})


def test_global_guide_log_prob_matches_sampling_density():
    torch.manual_seed(1)
    guide = GlobalGuide(two_moons(), {})
    _randomise(guide, 0.1)
    globals, log_q, _ = guide.rsample(100)
    assert torch.allclose(guide.log_prob(globals), log_q, atol=1e-3)


def test_q_starts_at_the_priors_median_with_a_fraction_of_its_spread():
    guide = GlobalGuide(hier_gauss(), {"beta": "normal"})
    guide.init_from_prior({"beta": torch.randn(4096, 2) * 3 + 1}, scale=0.1)
    u = guide.rsample(20_000)[2]
    assert torch.allclose(u.mean(0), torch.ones(2), atol=0.15)
    assert torch.allclose(u.std(0), torch.full((2,), 0.3), rtol=0.1)


def _wide_guide(family: str) -> GlobalGuide:
    """hier_gauss's guide standardised by a prior N(170, 100²) per coordinate."""
    guide = GlobalGuide(hier_gauss(), {"beta": family})
    guide.init_from_prior({"beta": torch.randn(4096, 2) * 100 + 170}, scale=0.1)
    return guide


@pytest.mark.parametrize("family", ["normal", "mvnormal", "flow"])
def test_families_live_in_the_priors_units(family):
    """q's parameters are O(1) whatever the prior's scale, so an optimiser's step
    moves q by the same fraction of the prior; the density stays that of u."""
    torch.manual_seed(0)
    guide = _wide_guide(family)
    assert torch.allclose(guide.center, torch.full((2,), 170.0), atol=5.0)
    assert torch.allclose(guide.spread, torch.full((2,), 100.0), rtol=0.1)
    assert float(guide.families[0].loc.detach().abs().max()) < 1e-6      # at the prior's median
    _randomise(guide.families[0], 0.2)
    globals, log_q, u = guide.rsample(500)
    assert torch.allclose(guide.log_prob_u(u), log_q, atol=1e-3)
    assert torch.allclose(guide.log_prob(globals), log_q, atol=1e-3)
    assert 30 < float(u.std(0).mean()) < 200      # spread ≈ 100 × the family's ~0.2–1


def test_set_moments_places_q_in_unconstrained_units():
    torch.manual_seed(0)
    guide = _wide_guide("mvnormal")
    guide.set_moments(torch.tensor([3.0, -2.0]), torch.tensor([0.5, 2.0]))
    u = guide.rsample(40_000)[2]
    assert torch.allclose(u.mean(0), torch.tensor([3.0, -2.0]), atol=0.05)
    assert torch.allclose(u.std(0), torch.tensor([0.5, 2.0]), rtol=0.03)


def test_a_checkpoint_without_standardisation_loads_as_the_same_q():
    """Fits saved before q was standardised hold families over u itself."""
    torch.manual_seed(0)
    saved = GlobalGuide(hier_gauss(), {"beta": "mvnormal"})
    _randomise(saved, 0.3)
    state = {k: v for k, v in saved.state_dict().items() if k not in ("center", "spread")}
    loaded = _wide_guide("mvnormal")
    loaded.load_state_dict(state)
    u = torch.randn(20, 2)
    assert torch.equal(loaded.center, torch.zeros(2)) and torch.equal(loaded.spread, torch.ones(2))
    assert torch.allclose(loaded.log_prob_u(u), saved.log_prob_u(u))


def test_the_spline_inverse_stays_finite_with_sharp_bins_and_points_on_knots():
    """A flow fitted to a posterior 40x narrower than the prior has sharp bins; in
    float32 a point on a knot, or rounding just outside its bin, turned log q into
    NaN (a covering population's particle stopped a fit). Positions within a bin
    are kept in [0, 1], and the spline still inverts its forward map."""
    torch.manual_seed(0)
    n, k = 20000, 8
    raw_w, raw_h, raw_d = (torch.randn(n, m) * 100 for m in (k, k, k - 1))
    _, knots = _bins(raw_h, 5.0, 1e-3)
    on_knot = knots.gather(-1, torch.randint(0, k, (n, 1)))[:, 0]
    y = torch.where(torch.rand(n) < 0.5, on_knot, torch.rand(n) * 10 - 5)
    x, logdet = rq_spline(y, raw_w, raw_h, raw_d, inverse=True)
    assert torch.isfinite(x).all() and torch.isfinite(logdet).all()
    back, forward_logdet = rq_spline(x, raw_w, raw_h, raw_d)
    assert (back - y).abs().max() < 0.1 and (logdet + forward_logdet).abs().max() < 0.1
