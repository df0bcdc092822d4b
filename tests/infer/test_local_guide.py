"""Local guides in the prior's coordinates: z = T(loc + scale · v) stays in the
prior's support, its log density is exact, and at v ~ N(0, 1) q is the prior."""
import pytest
import torch
from torch import distributions as D

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
