"""Observed values that their distribution cannot take (a negative count, more
successes than trials, a negative waiting time) are reported before training,
naming the array, the index and the support (himdsl/runtime/support.py); values
that are only unlikely under the prior are left to the fit."""
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import himdsl
from himdsl.cli import app
from himdsl.fitting import prepare_data
from himdsl.runtime.data import DataError

BINOMIAL = """
model rats
data n : int
data y : int
latent m ~ Beta(1, 1)
latent kappa ~ LogNormal(2, 1)
plate j over y {
    latent theta ~ Beta(m * kappa, (1 - m) * kappa)
    observe y ~ Binomial(n, theta)
}
"""
# the same likelihood as a simulator: the observation equals a noise
BINOMIAL_NOISE = BINOMIAL.replace("observe y ~ Binomial(n, theta)",
                                  "noise k ~ Binomial(n, theta)\n    observe y = k")
WAITING = """
model waits
data t : real
latent rate ~ Gamma(2, 1)
plate i over t {
    observe t ~ Exponential(rate)
}
"""
# the support's upper end is a latent: a value beyond the prior's draws is unlikely, not impossible
UNIFORM = """
model widths
data w : real
latent top ~ Exponential(1)
plate i over w {
    observe w ~ Uniform(0, top)
}
"""
N = np.array([29, 12, 40, 20])


def _module(tmp_path, text):
    path = tmp_path / "model.him"
    path.write_text(text)
    return himdsl.load(str(path)).module()


@pytest.mark.parametrize("text", [BINOMIAL, BINOMIAL_NOISE], ids=["explicit", "noise"])
@pytest.mark.parametrize("y, index, value", [([3, -1, 5, 2], 1, -1), ([3, 1, 5, 21], 3, 21)],
                         ids=["negative", "above-trials"])
def test_a_count_outside_its_binomial_is_named_with_its_trials(tmp_path, text, y, index, value):
    with pytest.raises(DataError) as info:
        prepare_data(_module(tmp_path, text), {"n": N, "y": np.array(y)})
    message = str(info.value)
    assert f"array `y` holds {value} at index [{index}]" in message
    assert f"Binomial gives whole numbers from 0 to {N[index]}" in message and "model.him, line" in message


def test_a_negative_waiting_time_is_named(tmp_path):
    with pytest.raises(DataError, match=r"array `t` holds -0.5 at index \[2\].*Exponential gives values from 0 up"):
        prepare_data(_module(tmp_path, WAITING), {"t": np.array([1.0, 2.0, -0.5])})


def test_data_the_distribution_can_take_pass_and_the_check_draws_from_a_forked_stream(tmp_path):
    module = _module(tmp_path, BINOMIAL)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    checked = prepare_data(module, {"n": N, "y": np.array([0, 12, 40, 7])})
    assert torch.equal(torch.rand(3), expected)
    assert set(checked) == {"n", "y"}


def test_a_value_beyond_a_support_that_moves_with_the_latents_is_left_to_the_fit(tmp_path):
    """w = 30 lies beyond Uniform(0, top) for every plausible prior draw of top, yet a
    large top explains it: the support moves with the latents, so nothing is raised."""
    prepare_data(_module(tmp_path, UNIFORM), {"w": np.array([0.2, 30.0])})


def test_fit_refuses_the_count_before_training(tmp_path):
    model = tmp_path / "model.him"
    model.write_text(BINOMIAL)
    np.savez(tmp_path / "data.npz", n=N, y=np.array([3, 1, 50, 2]))
    result = CliRunner().invoke(app, ["fit", str(model), str(tmp_path / "data.npz"), "--out",
                                      str(tmp_path / "out"), "--steps", "20"])
    assert result.exit_code == 2, result.output
    assert "array `y` holds 50 at index [2]" in result.output and "from 0 to 40" in result.output
    assert "plan:" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("seed", range(5))
def test_a_support_that_moves_is_left_alone_whatever_the_draws(tmp_path, seed):
    """Every value inside the support at every draw tells nothing about whether the
    support moves; the bounds themselves do (w = 0.01 lies inside for any top)."""
    torch.manual_seed(seed)
    prepare_data(_module(tmp_path, UNIFORM), {"w": np.array([0.01, 30.0])})
