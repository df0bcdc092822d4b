"""Which observations have values independent given their row (himdsl/graph/elements.py),
what the plan makes of it, and how a row's features split into its values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import himdsl
from himdsl.infer import FitSettings, Trainer
from himdsl.infer.data import ModelView
from himdsl.infer.elements import ElementLayout


def _model(body: str, data: str = "data y : real[K]", head: str = ""):
    source = f"model m\nconst K = 4\nconst times = [0.0, 1.0, 2.0, 3.0]\n{data}\n{head}latent mu ~ Normal(0, 1)\nlatent s ~ HalfNormal(1)\n" \
             f"plate n over y {{\n{body}\n}}\n"
    return himdsl.load("m.him", source=source).module()


INDEPENDENT = {
    "the schools shape": "latent theta ~ Normal(mu, 1)\nnoise e ~ Normal(0, 1) [K]\nobserve y = theta + s * e",
    "a comparison (a Bernoulli draw)": "noise u ~ Uniform(0, 1) [K]\nobserve y = u < sigmoid(mu)",
    "noise with the row's scalars as arguments": "latent theta ~ Normal(mu, 1)\n"
                                                "noise e ~ Normal(theta, s) [K]\nobserve y = exp(e)",
    "element-wise lets": "let m = mu * 2\nnoise e ~ Normal(0, 1) [K]\nlet v = m + s * e\n"
                         "observe y = clamp(v, -3, 3)",
}
TIED = {
    "noise shared by the row's values": "noise r ~ Normal(0, 1)\nnoise e ~ Normal(0, 1) [K]\n"
                                        "observe y = mu + r + e",
    "a reduction": "noise e ~ Normal(0, 1) [K]\nobserve y = e - mean(e) + mu",
    "indexing": "noise e ~ Normal(0, 1) [K]\nobserve y = e * e[0] + mu",
    "a local vector": "latent z ~ Normal(mu, 1) [K]\nnoise e ~ Normal(0, 1) [K]\nobserve y = z + e",
    "a layer": "noise e ~ Normal(0, 1) [K]\nobserve y = dense(e, K) + mu",
    "an explicit density": "observe y ~ Normal(mu, s) [K]",
    "no noise at all": "observe y = mu + s * x",
    "noise whose argument varies along the values (a constant per value)":
        "noise c ~ Poisson(50 * exp(-exp(mu) * times)) [K]\nobserve y = c",
    "noise whose argument varies along the values (a let per value)":
        "let rate = exp(mu) * times\nnoise e ~ Normal(rate, 1) [K]\nobserve y = e",
    "a constant per value added to the values": "noise e ~ Normal(0, 1) [K]\nobserve y = e * s + times",
}


@pytest.mark.parametrize("body", INDEPENDENT.values(), ids=INDEPENDENT.keys())
def test_values_independent_given_the_row_are_found(body):
    assert _model(body).observed_elements == {"y": ()}


@pytest.mark.parametrize("body", TIED.values(), ids=TIED.keys())
def test_values_that_may_be_tied_keep_the_row_whole(body):
    assert _model(body, data="data x : real[K]\ndata y : real[K]").observed_elements == {}


def test_a_covariate_per_value_goes_with_its_value_and_a_row_covariate_with_the_row():
    module = _model("noise u ~ Uniform(0, 1) [K]\nobserve y = u < sigmoid(mu + s * x + w)",
                    data="data x : real[K]\ndata w : real\ndata y : real[K]")
    assert module.observed_elements == {"y": ("x",)}


def test_two_observations_keep_the_rows_whole():
    two = _model("noise e ~ Normal(0, 1) [K]\nobserve y = mu + e\nobserve y2 = mu + e",
                 data="data y : real[K]\ndata y2 : real[K]")
    assert two.observed_elements == {}


def _flat(body: str, data: str = "data y : real[4, 2]"):
    """A model without a plate: its one data row is K draws of the simulator."""
    source = f"model f\n{data}\nlatent mu ~ Normal(0, 1) [2]\nlatent s ~ HalfNormal(1)\n{body}\n"
    return himdsl.load("f.him", source=source).module()


SLICES_INDEPENDENT = {
    "a vector per value without a plate": ("noise e ~ Normal(0, 1) [3]\nobserve y = mu[0] + e", "data y : real[3]"),
    "two correlated coordinates per draw (sbibm's slcp)":
        ("let r = tanh(mu[1])\nnoise e ~ Normal(0, 1) [4, 2]\n"
         "observe y = stack(mu[0] + s * e[:, 0], r * e[:, 0] + sqrt(1 - r ^ 2) * e[:, 1])", None),
    "a row vector broadcast along each draw": ("noise e ~ Normal(0, 1) [4, 2]\nobserve y = mu + s * e", None),
}
SLICES_TIED = {
    "indexing the draws' axis": "noise e ~ Normal(0, 1) [4, 2]\nobserve y = e + e[0, 0]",
    "a latent that varies along the draws": "latent v ~ Normal(0, 1) [4, 2]\nnoise e ~ Normal(0, 1) [4, 2]\n"
                                            "observe y = v + e",
    "noise shared by the draws": "noise r ~ Normal(0, 1) [2]\nnoise e ~ Normal(0, 1) [4, 2]\nobserve y = r + e",
    "a reduction within the draws' axis": "noise e ~ Normal(0, 1) [4, 2]\nobserve y = e - mean(e[:, 0])",
}


@pytest.mark.parametrize("body, data", SLICES_INDEPENDENT.values(), ids=SLICES_INDEPENDENT.keys())
def test_slices_of_the_first_axis_independent_given_the_row_are_found(body, data):
    module = _flat(body, data or "data y : real[4, 2]")
    assert module.observed_elements == {"y": ()}


@pytest.mark.parametrize("body", SLICES_TIED.values(), ids=SLICES_TIED.keys())
def test_slices_that_may_be_tied_keep_the_row_whole(body):
    assert _flat(body).observed_elements == {}


def test_a_value_that_is_a_vector_gets_its_whole_slice():
    module = _flat(SLICES_INDEPENDENT["two correlated coordinates per draw (sbibm's slcp)"][0])
    view = ModelView(module, {"y": np.zeros((4, 2), np.float32)})
    layout = ElementLayout(view, ("y",))
    split = layout.split(torch.arange(8.0).reshape(1, 8))
    assert split.shape == (1, 4, 2) and split[0].tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_the_layout_gives_each_value_its_own_columns_and_the_row_columns():
    module = _model("noise u ~ Uniform(0, 1) [K]\nobserve y = u < sigmoid(mu + s * x + w)",
                    data="data x : real[K]\ndata w : real\ndata y : real[K]")
    view = ModelView(module, {"y": np.zeros((3, 4), np.float32), "x": np.zeros((3, 4), np.float32),
                              "w": np.zeros(3, np.float32)})
    layout = ElementLayout(view, ("y", "x"))
    # features are y (4), then the covariates in declaration order: x (4), w (1)
    features = torch.tensor([[10., 11., 12., 13., 20., 21., 22., 23., 30.]])
    split = layout.split(features)
    assert split.shape == (1, 4, 3)
    assert split[0].tolist() == [[10, 20, 30], [11, 21, 30], [12, 22, 30], [13, 23, 30]]


def test_the_plan_scores_values_unless_told_to_read_the_row():
    module = _model(INDEPENDENT["the schools shape"])
    data = {"y": np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)}
    plan = Trainer(module, data, FitSettings(steps=10)).plan
    assert plan.ratio_elements == ("y",) and "one value of y at a time" in plan.describe()
    assert Trainer(module, data, FitSettings(steps=10, elements="row")).plan.ratio_elements == ()
    with pytest.raises(ValueError, match="unknown elements"):
        FitSettings(elements="values").validate()


def test_the_plan_names_the_covariates_read_beside_each_value():
    module = _model("noise u ~ Uniform(0, 1) [K]\nobserve y = u < sigmoid(mu + s * x)",
                    data="data x : real[K]\ndata y : real[K]")
    rng = np.random.default_rng(0)
    data = {"y": (rng.uniform(size=(20, 4)) < 0.5).astype(np.float32),
            "x": rng.normal(size=(20, 4)).astype(np.float32)}
    plan = Trainer(module, data, FitSettings(steps=10)).plan
    assert plan.ratio_elements == ("y", "x")
    assert "one value of y with its x at a time" in plan.describe()


def test_the_ratio_of_a_row_is_a_sum_over_its_values():
    """Scored one value at a time, r(row) is unchanged by reordering the values, and
    the change from altering one value does not depend on the others."""
    module = _model(INDEPENDENT["the schools shape"])
    data = {"y": np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)}
    ratio = Trainer(module, data, FitSettings(steps=10)).ratio
    gen = torch.Generator().manual_seed(0)
    x, theta = torch.randn(3, 5, 4, generator=gen), torch.randn(3, 5, 2, generator=gen)
    r = lambda rows: ratio.log_lik(rows, theta, averaged=False)    # noqa: E731
    torch.testing.assert_close(r(x), r(x[..., [2, 0, 3, 1]]))
    other = torch.randn(3, 5, 4, generator=gen)
    changed, other_changed = x.clone(), other.clone()
    changed[..., 0] = other_changed[..., 0] = 1.5
    other[..., 0] = x[..., 0]
    torch.testing.assert_close(r(x) - r(changed), r(other) - r(other_changed), atol=1e-5, rtol=1e-4)
    # read whole, the same network sees the row at once: no such additivity
    whole = Trainer(module, data, FitSettings(steps=10, elements="row")).ratio
    assert whole.elements is None
