"""The plan: every automatic choice follows from the model's structure and the
data's size (himdsl/infer/plan.py), and is visible."""
import json

import numpy as np
import pytest
import torch

from himdsl.infer import FitSettings, RatioSettings, Trainer
from himdsl.infer.data import ModelView
from himdsl.infer.plan import make_plan
from tests.infer.models import (NARROW, compiled, gaussian_linear, hier_gauss, hier_gauss_data,
                                linear_regression, linreg_data, point_regression,
                                point_regression_data, sbibm_task)

POISSON = """
model poisson_re
data exposure : real
data y : int
latent mu ~ Normal(0, 2)
latent sigma ~ HalfNormal(1)
plate g over y {
    latent v ~ Normal(0, 1)
    let logr = mu + sigma * v
    noise k ~ Poisson(exposure * exp(logr))
    observe y = k
}
"""

EXPLICIT = """
model explicit
data y : real
latent mu ~ Normal(0, 1)
latent tau ~ HalfNormal(1)
plate g over y {
    latent theta ~ Normal(mu, tau)
    observe y ~ Normal(theta, 1)
}
"""


def _plan(module, data, **settings):
    params = any(p.requires_grad for p in module.parameters())
    return make_plan(ModelView(module, data), FitSettings(**settings), params)


def _poisson_data(n=30):
    rng = np.random.default_rng(0)
    return {"exposure": rng.uniform(1, 2, n), "y": rng.poisson(3, n)}


def test_a_fully_explicit_model_needs_no_ratio():
    plan = _plan(compiled("explicit.him", EXPLICIT), {"y": np.zeros(10)})
    assert plan.method == "vi" and plan.ratio is None and plan.exact_local_prior
    assert "known density" in plan.reasons["method"]


def test_locals_with_a_density_get_the_contrastive_ratio_over_the_likelihoods_parents():
    plan = _plan(hier_gauss(), hier_gauss_data(n=20)[0])
    assert (plan.method, plan.ratio) == ("lfvi", "contrastive")
    assert plan.ratio_locals == ("z",) and plan.ratio_globals == ()       # beta only reaches x via z
    assert plan.exact_local_prior and plan.local_guide == "gaussian" and plan.local_coordinates == ("z",)


def test_the_ratio_reads_the_likelihoods_noise_free_inputs_when_narrower():
    plan = _plan(compiled("poisson.him", POISSON), _poisson_data())
    assert plan.ratio_inputs == "inputs" and plan.ratio_reads == ("logr",)   # 1 value, not 3
    assert plan.ratio_globals == ("mu", "sigma") and plan.ratio_locals == ("v",)


def test_implicit_locals_and_point_parameters_need_the_empirical_ratio():
    plan = _plan(compiled("deep_implicit"), {"x": torch.randn(20, 10)})
    assert plan.ratio == "empirical" and plan.local_guide == "implicit"
    assert "no density" in plan.reasons["ratio"]
    plan = _plan(point_regression(), point_regression_data(n=20))
    assert plan.ratio == "empirical" and "point parameters" in plan.reasons["ratio"]
    with pytest.raises(ValueError, match="point-estimated parameters"):
        _plan(point_regression(), point_regression_data(n=20), ratio=RatioSettings(mode="contrastive"))


def test_network_weights_are_read_through_the_prediction():
    gan = compiled("bayes_gan")
    rows = {"x": torch.randn(20, 5), "y": torch.randint(2, (20,))}
    assert _plan(gan, rows).ratio_inputs == "prediction"
    assert _plan(gan, rows, ratio_inputs="parents").ratio_inputs == "parents"
    with pytest.raises(ValueError, match="prediction needs a plate"):
        _plan(hier_gauss(), hier_gauss_data(n=20)[0], ratio_inputs="prediction")


def test_the_covering_population_is_for_data_of_one_row():
    """One observation gets `simulations` particles. On a plate the ratio's
    posterior sums N rows' errors, so q keeps the ELBO and the plan says why;
    `covering = "on"` forces a population there, sized by its cost (N × K ratio
    evaluations a move, at least 64 particles)."""
    obs, _ = sbibm_task("gaussian_linear")
    assert _plan(gaussian_linear(), obs).population == 512
    data, _ = linreg_data(n=200)
    plan = _plan(linear_regression(), data)
    assert plan.population == 0 and plan.q_objective == "elbo"
    assert "200 rows' errors" in plan.reasons["q objective"]
    assert "q objective      elbo  (no covering population" in plan.describe()
    assert "\n  posterior draws  q's\n" in plan.describe()      # whether resampled or not, said
    assert _plan(linear_regression(), data, covering="on").population == 2 ** 15 // 200
    data, _ = linreg_data(n=5000)
    assert _plan(linear_regression(), data, covering="on").population == 64
    assert _plan(gaussian_linear(), obs, covering="off").population == 0
    assert _plan(hier_gauss(), hier_gauss_data(n=20)[0]).population == 0     # locals: no π(β)


def test_q_starts_where_its_objectives_target_starts():
    """Fitted to the covering population (prior draws at first): as wide as the
    prior; maximising the ELBO: a tenth of the prior's spread."""
    obs, _ = sbibm_task("gaussian_linear")
    assert _plan(gaussian_linear(), obs).init_scale == 1.0
    assert _plan(gaussian_linear(), obs, covering="off").init_scale == 0.1
    assert _plan(hier_gauss(), hier_gauss_data(n=20)[0]).init_scale == 0.1


def test_the_plan_is_printed_and_recorded():
    trainer = Trainer(compiled("poisson.him", POISSON), _poisson_data(), FitSettings(steps=100))
    text = trainer.plan.describe()
    for line in ("method", "q(globals)", "q(locals)", "ratio", "ratio updates", "start", "schedule"):
        assert f"  {line} " in text
    # the ratio reads the row's covariate beside the likelihood's inputs, and says so
    assert "reads logr with the row's exposure" in text and "warm-up 10 steps" in text
    record = json.loads(json.dumps(trainer.plan.to_dict()))
    assert record["ratio_covariates"] == ["exposure"]
    assert record["ratio"] == "contrastive" and record["encodings"]["y"] == "signed_log1p"
    assert record["global_families"] == [{"globals": ["mu", "sigma"], "family": "flow"}]


def test_the_contrastive_ratios_inputs_follow_its_pairs_in_the_first_half_with_new_stages():
    """Every `ratio_rescale_every` steps the contrastive ratio's inputs follow its
    pairs, with new stages of the network until `ratio_stages_until`
    (tests/infer/test_trainer.py runs it); the empirical ratio keeps its units."""
    plan = _plan(compiled("narrow.him", NARROW), {"x": np.array([3.0, -2.0])}, steps=501)
    assert (plan.ratio_rescale_every, plan.ratio_stages_until) == (100, 250)
    assert "pairs' units" in plan.describe()
    plan = _plan(point_regression(), point_regression_data(n=20))
    assert (plan.ratio_rescale_every, plan.ratio_stages_until) == (0, 0)


def _counting_simulations(module, observed: str, width: int) -> list[int]:
    """Rows the module simulates, counted through its two simulators."""
    counts = []
    for name in ("simulate", "simulate_given"):
        method = getattr(module, name, None)
        if method is not None:
            def counted(*args, _method=method, **kwargs):
                out = _method(*args, **kwargs)
                counts.append(out[observed].numel() // width)
                return out
            setattr(module, name, counted)
    return counts


@pytest.mark.parametrize("ratio", ["contrastive", "empirical"])
def test_the_plan_counts_the_simulations_the_fit_makes(ratio):
    """The simulations' line forecasts a costly simulator's wait: its count is the
    rows the scaling pilot and every ratio update simulate (the checks' rows aside)."""
    module = compiled("narrow.him", NARROW)
    counts = _counting_simulations(module, "x", 2)
    trainer = Trainer(module, {"x": np.array([3.0, -2.0])},
                      FitSettings(steps=12, simulations=64, checks=False, ratio=RatioSettings(mode=ratio)))
    trainer.run()
    assert sum(counts) == trainer.plan.simulations


def test_the_plan_counts_the_generator_gradients_simulations_too():
    """Point-estimated weights learn from simulations at every q step as well."""
    module = point_regression()
    counts = _counting_simulations(module, "y", 1)
    trainer = Trainer(module, point_regression_data(n=40), FitSettings(steps=12, batch=8, checks=False))
    trainer.run()
    assert sum(counts) == trainer.plan.simulations


def test_a_budget_caps_the_planned_simulations_and_the_line_says_how_long():
    module = compiled("narrow.him", NARROW)
    counts = _counting_simulations(module, "x", 2)
    trainer = Trainer(module, {"x": np.array([3.0, -2.0])},
                      FitSettings(steps=40, simulations=64, budget=1024 + 640, checks=False))
    assert trainer.plan.simulations == 1024 + 640
    trainer.run()
    assert 1024 + 576 < sum(counts) <= 1024 + 640
    text = trainer.plan.describe(seconds_per_simulation=4.0)
    assert "1,664 rows in all (the budget), stored and reused, about 1.8 h of simulating" in text
    unbudgeted = _plan(compiled("narrow.him", NARROW), {"x": np.array([3.0, -2.0])}, steps=40)
    assert "; `budget` caps them" in unbudgeted.describe(0.001)
    assert ", under a second of simulating" in unbudgeted.describe(1e-9)



def test_a_flow_fitted_by_the_elbo_shapes_q_after_its_moments():
    """Moments first where the ELBO fits a flow (a third of q's steps in); a flow
    fitted to the covering population, and any other family, from the start."""
    data, _ = linreg_data(n=500)
    whole = _plan(linear_regression(), data, batch=500)
    assert whole.global_families == ((("w",), "flow"),) and whole.q_objective == "elbo"
    assert whole.flow_shape_from == 300 + 2700 // 3 and "the flow's shape from step 1200" in whole.describe()
    assert _plan(linear_regression(), data).flow_shape_from == 0            # minibatches: mvnormal
    obs, _ = sbibm_task("gaussian_linear")
    covering = _plan(gaussian_linear(), obs)
    assert covering.q_objective == "covering" and covering.flow_shape_from == 0
