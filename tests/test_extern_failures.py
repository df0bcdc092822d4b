"""An extern given a non-finite argument, or raising on some rows while a fit trains:
those rows are failed simulations (NaN, dropped and counted), not the end of the fit.
A simulator that raises on every row is a bug and still stops with its message."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import himdsl
from himdsl.infer import FitSettings, Trainer
from himdsl.runtime.externs import ExternError, ExternFailures, ExternSpec, call_extern

SPEC = ExternSpec("tail", "tail.py", params=(("theta", (2,)),), shape=(3,), dtype="int", line=4)
LIKE = torch.zeros(())


class Recorder:
    """theta [*, 2] -> [*, 3] whole numbers; raises where theta[..., 0] > 2."""

    def __init__(self):
        self.rows_seen = 0

    def __call__(self, theta):
        self.rows_seen += int(np.prod(theta.shape[:-1]))
        if bool((theta[..., 0] > 2).any()):
            raise ValueError("p > 1")
        return (10 * theta[..., :1]).round().long().expand(*theta.shape[:-1], 3)


def test_a_row_with_a_non_finite_argument_is_not_simulated_and_comes_back_nan():
    f = Recorder()
    theta = torch.tensor([[[0.1, 0.0], [float("nan"), 0.0]], [[0.2, float("inf")], [0.3, 1.0]]])
    out = call_extern(f, SPEC, [theta], (2, 2), LIKE)
    assert f.rows_seen == 2
    assert out.shape == (2, 2, 3) and out.dtype == LIKE.dtype
    assert torch.isnan(out[0, 1]).all() and torch.isnan(out[1, 0]).all()
    assert out[0, 0].tolist() == [1.0, 1.0, 1.0] and out[1, 1].tolist() == [3.0, 3.0, 3.0]


def test_finite_arguments_are_passed_whole_and_an_int_result_stays_int():
    f = Recorder()
    out = call_extern(f, SPEC, [torch.full((4, 5, 2), 0.1)], (4, 5), LIKE)
    assert out.dtype == torch.long and out.shape == (4, 5, 3) and f.rows_seen == 20


def test_outside_a_fit_an_exception_stops_with_the_externs_name():
    with pytest.raises(ExternError, match=r"extern `tail` \(line 4\) raised ValueError: p > 1"):
        call_extern(Recorder(), SPEC, [torch.tensor([[0.1, 0.0], [2.5, 0.0]])], (2,), LIKE)


def test_while_a_fit_trains_only_the_rows_that_raise_fail():
    theta = torch.zeros(64, 2)
    theta[[5, 40, 41], 0] = 3.0
    failures = ExternFailures()
    out = call_extern(Recorder(), SPEC, [theta], (64,), LIKE, failures)
    bad = torch.isnan(out).all(-1)
    assert bad.nonzero().reshape(-1).tolist() == [5, 40, 41]
    assert (out[~bad] == 0).all()
    assert failures.count == 3 and "extern `tail` (line 4) raised ValueError: p > 1" in failures.first


def test_a_simulator_that_raises_on_every_row_still_stops_the_fit():
    with pytest.raises(ExternError, match="raised ValueError: p > 1"):
        call_extern(Recorder(), SPEC, [torch.full((8, 2), 3.0)], (8,), LIKE, ExternFailures())


MODEL = """
model tail_counts
extern counts(rate : real) -> int[3] from "counts.py"
data k : int[3]
latent r ~ LogNormal(0, 1)
plate n over k {
    observe k = counts(r)
}
"""

# numpy's Poisson sampler raises on a rate above ~1e19; here on r > 8, the prior's
# upper 2 %, so that the ratio's prior draws meet it every step
EXTERN = """
import numpy as np
import torch

def counts(rate):
    r = rate.numpy().astype(np.float64)
    if (r > 8).any():
        raise ValueError("lam value too large")
    return torch.as_tensor(np.random.poisson(np.broadcast_to(r[..., None], r.shape + (3,))))
"""


def test_a_fit_goes_on_when_the_extern_raises_in_the_priors_tail(tmp_path):
    (tmp_path / "counts.py").write_text(EXTERN)
    (tmp_path / "model.him").write_text(MODEL)
    model = himdsl.load(str(tmp_path / "model.him"))
    data = {"k": np.random.default_rng(0).poisson(2.0, (30, 3))}
    trainer = Trainer(model.module(), data, FitSettings(steps=30, batch=16, particles=4,
                                                        simulations=256, log_every=10))
    result = trainer.run()
    failures = trainer.model.extern_failures
    assert failures.count > 0 and "lam value too large" in failures.first
    assert float(trainer.ratio.dropped) > 0           # the ratio's share of them, skipped
    check = next(c for c in result.verdict.checks if c.name == "simulations finite")
    assert check.ok and "rows an extern raised on: " in check.message
    assert "the first: extern `counts` (line 3) raised ValueError: lam value too large" in check.message
