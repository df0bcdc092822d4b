"""Where the ratio is trained over the globals: q's draws, widened.

    proposal = GlobalProposal(view, guide, spread=1.0)
    u, sd = proposal.broad(512, prior_mix=0.25)    # [512, Du] unconstrained, [Du]

The ratio's target does not depend on where it is trained, but what it learns of
the dependence on β grows with how much β varies in its training data. So it is
trained at u + s ε, u ~ q(u), with per-coordinate width s = spread · sd_q(u) · √N
(the scale on which one row's likelihood changes by O(1)), capped at the prior's
spread; a point mass has no spread of its own and gets a band of `POINT_BAND`
prior sds (docs/lfvi.md, "The contrastive ratio": where the ratio is trained).
"""
from __future__ import annotations

import math

import torch

Tensor = torch.Tensor
# Width (in prior sds, unconstrained) of the band of globals the ratio is trained on
# around a point-mass q (MAP): measured on examples/bayes_gan (crabs test error
# 0.46 with no band, 0.04 with 0.3).
POINT_BAND = 0.3
# Prior draws that set the prior's spread.
PRIOR_DRAWS = 1024


class GlobalProposal:
    """Widened draws of q(β) in unconstrained space, and the prior's spread there."""

    def __init__(self, view, guide, spread: float):
        self.view, self.guide, self.spread = view, guide, spread
        u_prior = guide.flat_u(view.prior_globals(PRIOR_DRAWS))
        # the prior's spread as it is (the checks compare q with it), and bounded (the
        # widening's cap and band)
        self.u_prior_spread = iqr_sd(u_prior)
        self.u_prior_sd = self.u_prior_spread.clamp(1e-3, 10.0)

    @torch.no_grad()
    def width(self, u: Tensor) -> Tensor:
        """The widening sd per coordinate [Du] for q's draws u [S, Du]."""
        q_sd = self.guide.u_sd(u)
        sd = self.spread * q_sd * math.sqrt(self.view.n_rows)
        sd = torch.where(q_sd > 0, sd, POINT_BAND * self.u_prior_sd)
        return torch.minimum(sd, self.u_prior_sd)

    @torch.no_grad()
    def broad(self, num: int, u: Tensor | None = None, prior_mix: float = 0.0) -> tuple[Tensor, Tensor]:
        """[num, Du] widened draws and their widening sd; the last `prior_mix` fraction
        are prior draws, so the ratio keeps learning where q has no mass. `u`: q's
        draws of this step when already made (saves a pass of the flow; the first
        `num` are used)."""
        if u is None or u.shape[0] < num:
            _, _, u = self.guide.rsample(num)
        u = u[:num].detach()
        sd = self.width(u)
        u = u + sd * torch.randn_like(u)
        k = int(prior_mix * num)
        if k:
            u[num - k:] = self.guide.flat_u(self.view.prior_globals(k))
        return u, sd


def iqr_sd(u: Tensor) -> Tensor:
    """Interquartile spread of draws [S, D] per coordinate, as a normal sd."""
    q25, q75 = torch.quantile(u, 0.25, 0), torch.quantile(u, 0.75, 0)
    return (q75 - q25) / 1.349
