"""The trust checks: a fit whose ratio separates p from q, whose q collapsed or
is still moving is reported as failed, with the reason."""
from types import SimpleNamespace

import torch

from himdsl.infer import FitSettings, fit
from himdsl.infer.checks import MomentTrace, q_drift, q_within_prior, ratio_separation
from himdsl.infer.result import TraceRow
from tests.infer.models import compiled, hier_gauss, hier_gauss_data


def _trace(acc, steps=3000, every=50):
    return [TraceRow(k, -1.0, 0.5, acc, float(k)) for k in range(every, steps + 1, every)]


def _stub(ratio="empirical", acc=0.6, moments=(), n_rows=100):
    trainer = SimpleNamespace(
        plan=SimpleNamespace(ratio=ratio), settings=FitSettings(),
        state=SimpleNamespace(trace=_trace(acc)), moments=SimpleNamespace(rows=list(moments), every=50),
        view=SimpleNamespace(g_shapes={}, n_rows=n_rows), proposal=None, ratio=None,
        global_guide=SimpleNamespace(names=["mu"]))
    return trainer


def test_an_empirical_ratio_that_separates_p_from_q_fails_the_fit():
    check = ratio_separation(_stub(acc=0.97))
    assert not check.ok and "accuracy 0.97" in check.message
    assert ratio_separation(_stub(acc=0.62)).ok
    assert ratio_separation(_stub(ratio="contrastive", acc=0.99)) is None     # pairs: not meaningful


def test_a_q_still_moving_at_the_end_fails_the_fit():
    sd = torch.ones(2)
    drifting = [(k, torch.tensor([0.2 * i, 0.0]), sd) for i, k in enumerate(range(2300, 3001, 50))]
    check = q_drift(_stub(moments=drifting))
    assert not check.ok and "still moving" in check.message
    noisy = [(k, torch.tensor([0.3 * (-1) ** i, 0.0]), sd) for i, k in enumerate(range(2300, 3001, 50))]
    assert q_drift(_stub(moments=noisy)).ok          # noise around a fixed mean is settled


def test_a_drift_the_averaged_q_would_lag_by_fails_the_fit():
    """A steady drift of half q's sd between the quarter's halves leaves the reported
    average that far behind q's end; a tenth of it (converged fits: 0.02–0.11) is fine."""
    sd = torch.ones(2)
    for per_point, ok in ((0.5 / 7, False), (0.1 / 7, True)):
        rows = [(k, torch.tensor([per_point * i, 0.0]) + 0.001 * (-1) ** i, sd)
                for i, k in enumerate(range(2300, 3001, 50))]
        assert q_drift(_stub(moments=rows)).ok is ok


class _Guide:
    """q(u) = N(0, diag(sd²)) over globals mu (one coordinate) and beta (two)."""
    blocks = [["mu", "beta"]]
    u_shapes = {"mu": (), "beta": (2,)}

    def __init__(self, sd):
        self.sd = torch.tensor(sd)

    def rsample(self, num):
        u = self.sd * torch.randn(num, 3, generator=torch.Generator().manual_seed(0))
        return {}, None, u


def _wide_stub(sd):
    guide = _Guide(sd)
    return SimpleNamespace(view=SimpleNamespace(g_shapes={"mu": (), "beta": (2,)}, device=torch.device("cpu")),
                           proposal=SimpleNamespace(u_prior_spread=torch.ones(3)),
                           global_guide=guide, result=lambda: SimpleNamespace(global_guide=guide))


def test_a_q_far_wider_than_the_prior_fails_the_fit():
    """A posterior is no wider than its prior on average; one coordinate of q 8x the
    prior's spread is named, and q within 3x of it (a prior-data conflict under a heavy
    tailed prior can widen a posterior so) passes."""
    check = q_within_prior(_wide_stub([0.1, 0.2, 8.0]))
    assert not check.ok and "`beta[1]`" in check.message and 7.0 < check.value < 9.0
    assert q_within_prior(_wide_stub([0.1, 3.0, 0.2])).ok


def test_a_fit_too_short_to_reach_a_global_in_the_priors_tail_is_flagged():
    """hier_gauss with beta[1] = -2.93, 2.9 prior sds out, 100 rows: q starts at the
    prior's median, 26 posterior sds away; 400 steps do not bring it there."""
    gen = torch.Generator().manual_seed(502)
    x = torch.tensor([-0.11, -2.93]) + torch.randn(100, 2, generator=gen) + 0.5 * torch.randn(100, 2, generator=gen)
    result = fit(hier_gauss(), {"x": x}, FitSettings(steps=400, seed=2))
    check = next(c for c in result.verdict.checks if c.name == "q settled")
    assert not check.ok and "still moving" in check.message


def test_a_q_whose_mean_jumps_by_more_than_its_width_fails_the_fit():
    """A collapsed q jittering around the right place (the mean of the jumps is
    settled) reports an sd far below the optimisation's own noise."""
    sd = torch.tensor([0.01, 1.0])
    jumping = [(k, torch.tensor([0.05 * (-1) ** i, 0.0]), sd) for i, k in enumerate(range(2300, 3001, 50))]
    check = q_drift(_stub(moments=jumping))
    assert not check.ok and "jumped by 5.2 of its own sd" in check.message
    steady = [(k, torch.tensor([0.015 * (-1) ** i, 0.0]), sd) for i, k in enumerate(range(2300, 3001, 50))]
    assert q_drift(_stub(moments=steady)).ok         # 1.5 sds of jitter: within JITTER_SDS


def test_moments_are_recorded_at_sixteen_points_of_the_final_quarter():
    trace = MomentTrace(start=300, steps=400)
    model, data = hier_gauss(), hier_gauss_data(n=20)[0]
    result = fit(model, data, FitSettings(steps=40, batch=8, particles=4, simulations=32, log_every=10))
    state = torch.random.get_rng_state()
    for step in range(1, 401):
        trace.record(step, result.global_guide)
    assert [row[0] for row in trace.rows] == list(range(300, 400, 6))
    assert torch.equal(torch.random.get_rng_state(), state)      # the fit's stream is untouched


def test_the_fit_does_not_depend_on_its_log_interval():
    model, data = hier_gauss(), hier_gauss_data(n=20)[0]
    draws = [fit(model, data, FitSettings(steps=60, batch=8, particles=4, simulations=32,
                                          log_every=every)).posterior(50)["beta"]
             for every in (10, 30)]
    assert (draws[0] == draws[1]).all()


PINNED = """
model pinned
data x : real
latent p ~ Uniform(0, 1)
plate n over x {
    noise e ~ Normal(0, 1)
    observe x = 1000 * p + e
}
"""


def test_data_the_model_cannot_produce_fail_the_fit():
    """Data far beyond what the prior allows: the ratio never saw such data and q
    stays near the prior, which must not pass for a posterior."""
    result = fit(compiled("pinned.him", PINNED), {"x": torch.full((50,), 5000.0)},
                 FitSettings(steps=100, batch=16, particles=8, simulations=64))
    failed = [c for c in result.verdict.checks if not c.ok and not c.advisory]
    assert failed[0].name == "data in range" and "cannot produce" in failed[0].message
    # beyond every simulation the ratio extrapolates, and its posterior is not q's either
    assert {c.name for c in failed} <= {"data in range", "q matches the ratio", "ratio is a likelihood",
                                        "ratio's score unbiased"}
    fine = fit(compiled("pinned.him", PINNED), {"x": 300 + torch.randn(50)},
               FitSettings(steps=100, batch=16, particles=8, simulations=64))
    assert next(c for c in fine.verdict.checks if c.name == "data in range").ok


HEAVY = """
model heavy
data x : real[20]
latent mu ~ Normal(0, 1)
plate n over x {
    noise e ~ StudentT(1, 0, 1) [20]
    observe x = mu + e
}
"""


def test_rows_as_far_out_as_the_models_own_pass_and_data_beyond_them_fail():
    """Cauchy noise in 20 features puts many of the model's own rows past the
    fixed distances in some feature; data drawn from the model must pass (the
    fixed distances alone flagged more than a tenth of its rows), data 10,000
    away must not."""
    def data_in_range(shift):
        torch.manual_seed(0)
        data = {"x": shift + torch.distributions.StudentT(1.0).sample((50, 20))}
        result = fit(compiled("heavy.him", HEAVY), data,
                     FitSettings(steps=40, batch=16, particles=8, simulations=64))
        return next(c for c in result.verdict.checks if c.name == "data in range")
    drawn, shifted = data_in_range(0.5), data_in_range(10_000.0)
    assert drawn.ok and drawn.value <= 0.04
    assert not shifted.ok and shifted.value == 1.0


def test_a_value_beyond_every_simulation_is_measured_from_their_range():
    from himdsl.infer.checks import _beyond_range
    values = torch.tensor([[[0.0, float("nan")], [1.0, 2.0]], [[2.0, float("nan")], [3.0, float("nan")]]])
    data = torch.tensor([[5.0, 9.0], [0.5, 2.0]])
    # row 0: 3 past the largest; no finite simulation of the second feature: 0
    assert _beyond_range(values, data).tolist() == [[3.0, 0.0], [0.5, 0.0]]
