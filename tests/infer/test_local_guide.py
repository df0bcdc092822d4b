"""Local guides in the prior's coordinates: z = T(loc + scale · v) stays in the
prior's support, its log density is exact, and at v ~ N(0, 1) q is the prior."""
import numpy as np
import pytest
import torch
from torch import distributions as D

from benchmarks.collinear_locals import SOURCE as SLOPES
from himdsl.infer.data import Block
from himdsl.infer.local_guide import GaussianLocalGuide, prior_coordinates

PRIORS = {
    "normal": D.Normal(torch.full((3, 4, 2), 1.5), torch.full((3, 4, 2), 0.3)),
    "halfnormal": D.HalfNormal(torch.full((3, 4, 2), 2.0)),
    "gamma": D.Gamma(torch.full((3, 4, 2), 4.0), torch.full((3, 4, 2), 2.0)),
    "uniform": D.Uniform(torch.full((3, 4, 2), -1.0), torch.full((3, 4, 2), 3.0)),
    "beta": D.Beta(torch.full((3, 4, 2), 2.0), torch.full((3, 4, 2), 5.0)),
    "lognormal": D.LogNormal(torch.full((3, 4, 2), 0.5), torch.full((3, 4, 2), 0.4)),
}


def _coords(prior):
    return prior_coordinates({"z": D.Independent(prior, 1)}, [Block("z", (2,))], ("z",),
                             torch.zeros(3, 4, 2))


@pytest.mark.parametrize("name", list(PRIORS))
def test_coordinates_keep_the_support_and_invert_with_the_exact_jacobian(name):
    coords = _coords(PRIORS[name])
    v = torch.randn(3, 4, 2)
    z, logdet = coords.forward(v)
    assert bool(PRIORS[name].support.check(z).all())
    back, logdet_back = coords.inverse(z)
    assert torch.allclose(back, v, atol=1e-3) and torch.allclose(logdet, logdet_back, atol=1e-3)
    # the map is elementwise, so log |dz/dv| sums each coordinate's log derivative
    v1 = v.clone().requires_grad_(True)
    z1, ld = coords.forward(v1)
    grads = [torch.autograd.grad(z1[..., i].sum(), v1, retain_graph=True)[0][..., i] for i in range(2)]
    assert torch.allclose(ld, sum(g.abs().log() for g in grads), atol=1e-4)


def test_a_fresh_guide_in_prior_coordinates_is_close_to_the_prior():
    """Location-scale priors are matched exactly at initialisation (the guide's mean
    network starts near 0 and its log sd at 0)."""
    torch.manual_seed(0)
    prior = D.Normal(torch.full((1, 500, 2), 4.0), torch.full((1, 500, 2), 0.05))
    guide = GaussianLocalGuide(x_dim=3, g_dim=2, z_dim=2)
    torch.nn.init.zeros_(guide.linear.weight)
    torch.nn.init.zeros_(guide.linear.bias)
    z, log_q = guide.rsample(torch.randn(1, 500, 3), torch.randn(1, 2), _coords_for(prior))
    z = z.detach()
    assert abs(float(z.mean()) - 4.0) < 0.01 and abs(float(z.std()) - 0.05) < 0.005
    assert torch.allclose(log_q, prior.log_prob(z).sum(-1), atol=1e-4)


def _coords_for(prior):
    return prior_coordinates({"z": D.Independent(prior, 1)}, [Block("z", (2,))], ("z",),
                             torch.zeros(*prior.batch_shape[:2], 2))


@pytest.mark.parametrize("family", ["gaussian", "implicit"])
def test_rescaling_the_globals_inputs_keeps_the_guide_and_adams_steps_in_the_new_units(family):
    """Restandardising β by q's draws changes no output of the guide; Adam's moments
    of the first layers' β columns follow, so the next step is the same size in the
    new units (the point of the change: a slope in β learns at the rate of the rest)."""
    from himdsl.infer.local_guide import LOCAL_FAMILIES
    torch.manual_seed(0)
    guide = LOCAL_FAMILIES[family](x_dim=3, g_dim=2, z_dim=2)
    guide.fit_scaling(torch.randn(1, 50, 3), 10 * torch.randn(400, 2))
    for layer in guide.first_layers():       # a trained guide: every column matters
        torch.nn.init.normal_(layer.weight)
    opt = torch.optim.Adam(guide.parameters(), lr=1e-2)
    x, g = torch.randn(4, 7, 3), 3.0 + 0.01 * torch.randn(4, 2)

    def output():
        torch.manual_seed(1)
        return guide.rsample(x, g)[0]
    guide.rsample(x, g)[0].square().sum().backward()
    opt.step()
    before = output()
    first = guide.first_layers()[0].weight
    m, v = (opt.state[first][k][:, 3:5].clone() for k in ("exp_avg", "exp_avg_sq"))
    old_sd = guide.scale.sd[3:5].clone()
    guide.rescale_globals(3.0 + 0.01 * torch.randn(1000, 2), opt)
    torch.testing.assert_close(output(), before, rtol=1e-4, atol=1e-4)
    assert guide.scale.sd[3:5].max() < 0.012 < 5 < old_sd.min()      # β in q's units now
    ratio = guide.scale.sd[3:5] / old_sd
    torch.testing.assert_close(opt.state[first]["exp_avg"][:, 3:5], m / ratio)
    torch.testing.assert_close(opt.state[first]["exp_avg_sq"][:, 3:5], v / ratio ** 2)


def test_in_qs_units_the_guide_answers_far_globals_as_at_four_sds():
    """The guide never trains beyond q's range: at β 50 q-sds away (a prior draw in
    the ratio's proposals) it answers as at 4 sds, not by extrapolating its slope."""
    torch.manual_seed(0)
    guide = GaussianLocalGuide(x_dim=1, g_dim=1, z_dim=1)
    guide.fit_scaling(torch.randn(1, 50, 1), 10 * torch.randn(400, 1))
    torch.nn.init.normal_(guide.net[-1].weight)
    x = torch.zeros(1, 1, 1)

    def mean_at(beta):
        return guide.moments(x, torch.tensor([[beta]]))[0].item()
    assert mean_at(50.0) != mean_at(4.0)                    # prior units: no band
    guide.rescale_globals(torch.randn(4000, 1), None)       # q: sd ~1 about 0
    sd = guide.scale.sd[1].item()
    edge = guide.scale.mean[1].item() + 4 * sd
    assert mean_at(50.0) == pytest.approx(mean_at(edge), abs=1e-6)
    assert mean_at(edge - sd) != pytest.approx(mean_at(edge), abs=1e-6)


def test_a_guide_saved_before_the_band_existed_loads_without_one():
    guide = GaussianLocalGuide(x_dim=1, g_dim=1, z_dim=1)
    guide.rescale_globals(torch.randn(100, 1), None)
    state = guide.state_dict()
    del state["g_band"]
    fresh = GaussianLocalGuide(x_dim=1, g_dim=1, z_dim=1)
    fresh.load_state_dict(state)
    assert float(fresh.g_band) == 0.0 and float(guide.g_band) == 4.0


def test_a_heavy_tail_of_q_does_not_set_the_guides_units():
    """q's units are its draws' median and interquartile spread: a log-normal q(β)
    whose far draws are 1e6 leaves the unit at the bulk's scale, so the first layers'
    weights (which absorb the change) stay the size they were."""
    torch.manual_seed(0)
    guide = GaussianLocalGuide(x_dim=1, g_dim=1, z_dim=1)
    guide.fit_scaling(torch.randn(1, 50, 1), torch.randn(400, 1))
    draws = torch.randn(1000, 1)
    draws[:10] = 1e6
    before = max(float(layer.weight.abs().max()) for layer in guide.first_layers())
    guide.rescale_globals(draws, None)
    assert guide.scale.sd[1].item() == pytest.approx(1.0, rel=0.15)
    assert guide.scale.mean[1].item() == pytest.approx(0.0, abs=0.1)
    after = max(float(layer.weight.abs().max()) for layer in guide.first_layers())
    assert after < 1.2 * before


def test_a_correlated_guides_density_is_its_samplers_and_its_moments_are_marginal():
    torch.manual_seed(0)
    guide = GaussianLocalGuide(3, 2, 3, correlated=True)
    with torch.no_grad():
        guide.net[-1].bias.normal_()          # a non-diagonal covariance
    x, g = torch.randn(4, 5, 3), torch.randn(4, 2)
    z, log_q = guide.rsample(x, g)
    mean, log_sd, mix = guide.factors(x, g)
    scale = torch.diag_embed(log_sd.exp())
    exact = D.MultivariateNormal(mean, scale @ mix @ mix.transpose(-1, -2) @ scale)
    assert torch.allclose(log_q, exact.log_prob(z), atol=1e-4)
    assert torch.allclose(guide.log_prob(z, x, g), exact.log_prob(z), atol=1e-4)
    assert torch.allclose(guide.moments(x, g)[1].exp(), exact.stddev, atol=1e-5)


def test_a_fresh_correlated_guide_is_diagonal():
    guide = GaussianLocalGuide(3, 2, 3, correlated=True)
    _, _, mix = guide.factors(torch.randn(4, 5, 3), torch.randn(4, 2))
    assert torch.equal(mix, torch.eye(3).expand(4, 5, 3, 3))


def test_an_intercept_and_slope_per_group_get_their_joint_posteriors_sds():
    """x in [2, 3] makes a group's intercept and slope nearly collinear (ρ ≈ −0.97
    a posteriori): a diagonal q would report each one's sd given the other, a
    quarter of its marginal sd. The exact posterior of (a, b) given μ is Gaussian."""
    from himdsl.infer import FitSettings, fit
    from tests.infer.models import compiled
    torch.manual_seed(0)
    groups = 200
    x = 2 + torch.rand(groups, 5)
    y = (1 + torch.randn(groups, 1)) + (-1 + torch.randn(groups, 1)) * x + 0.5 * torch.randn(groups, 5)
    result = fit(compiled("slopes.him", SLOPES), {"x": x, "y": y},
                 FitSettings(steps=300, method="vi", seed=0))
    assert result.plan.local_covariance == "full"
    design = torch.stack([torch.ones_like(x), x], -1).double()
    precision = design.transpose(1, 2) @ design / 0.25 + torch.eye(2, dtype=torch.float64)
    exact_sd = torch.linalg.inv(precision).diagonal(dim1=-2, dim2=-1).sqrt()
    moments = result.locals({"x": x, "y": y}, draws=512)
    for j, name in enumerate("ab"):
        ratio = torch.as_tensor(moments[f"{name}_sd"]).double() / exact_sd[:, j]
        assert 0.9 < float(ratio.mean()) < 1.1, name


def test_the_locals_moments_average_the_guides_exact_moments_over_beta():
    """A Gaussian guide in location-scale coordinates gives z's mean and sd given β
    exactly, so `locals` averages those over q(β) (Rao-Blackwell): two runs of 256
    draws agree to ~0.01 sd, where the draws' own means would differ by ~0.09
    (√2 / 16), and they match 8,192 draws."""
    from himdsl.infer import FitSettings, fit
    from tests.infer.models import hier_gauss, hier_gauss_data
    data, _ = hier_gauss_data(n=200)
    result = fit(hier_gauss(), data, FitSettings(steps=300, simulations=128, checks=False))
    first, second, many = (result.locals(data, draws=d) for d in (256, 256, 8192))
    spread = (first["z_mean"] - second["z_mean"]) / many["z_sd"]
    assert float((spread ** 2).mean() ** 0.5) < 0.02
    assert abs(float((first["z_mean"] - many["z_mean"]).mean())) < 0.01
    assert abs(float((first["z_sd"] / many["z_sd"]).mean()) - 1) < 0.01


def test_the_locals_means_are_drawn_to_a_fiftieth_of_their_sd(monkeypatch):
    """eight_schools' θ_j given β moves with μ and τ, so 256 draws of β leave each
    mean some hundredths of an sd of Monte Carlo error (a CI-sized fit's locals RMSE
    read 0.03, 0.08 or 0.17 by the call). `locals` adds batches of draws until the
    error is within LOCAL_MC_SDS = 0.02 sd. Measured: sixteen calls' means scatter by
    0.014 sd (4.4 batches a call), by 0.043 with one batch."""
    import himdsl.infer.result as result_module
    from himdsl.infer import FitSettings, fit
    from tests.infer.models import hier_case, hier_model
    data, _ = hier_case("eight_schools")
    result = fit(hier_model("eight_schools"), data, FitSettings(steps=300, simulations=128, checks=False))
    batches = []
    draw = result_module.FitResult._moment_draws
    monkeypatch.setattr(result_module.FitResult, "_moment_draws",
                        lambda self, view, idx, n: batches.append(n) or draw(self, view, idx, n))

    def scatter():
        batches.clear()
        runs = [result.locals(data, draws=256) for _ in range(16)]
        means = np.stack([r["theta_mean"] for r in runs])
        return float((means.std(0, ddof=1) / runs[0]["theta_sd"]).mean()), len(batches) / 16

    adaptive, batches_a_call = scatter()
    monkeypatch.setattr(result_module, "LOCAL_MC_SDS", 1.0)      # one batch of 256
    one_batch, _ = scatter()
    print(f"scatter of the locals' means: {adaptive:.3f} sd ({batches_a_call:.1f} batches a call), "
          f"one batch {one_batch:.3f}")
    assert adaptive < 0.02 and batches_a_call > 1 and one_batch > 1.2 * adaptive
