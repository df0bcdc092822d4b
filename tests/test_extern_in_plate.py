"""An extern called inside a plate: the generated module calls it once for the whole
batch of rows (it used to emit `H.lift(<extern name>)` as if the function were a
top-level value, a NameError at simulation time)."""
from __future__ import annotations

import numpy as np

import himdsl

MODEL = """
model plate_extern
extern noisy(mu : real[2]) -> real[3] from "sim.py"
data y : real[3]
latent mu ~ Normal(0, 1) [2]
plate n over y {
    observe y = noisy(mu)
}
"""

EXTERN = """
import torch

def noisy(mu):
    return torch.cat([mu, mu.sum(-1, keepdim=True)], -1) + torch.randn(*mu.shape[:-1], 3)
"""


def test_extern_inside_a_plate_simulates_one_draw_per_row(tmp_path):
    (tmp_path / "sim.py").write_text(EXTERN)
    (tmp_path / "model.him").write_text(MODEL)
    model = himdsl.load(str(tmp_path / "model.him"))
    data, truth = model.simulate(rows=50, given={"mu": [3.0, -3.0]}, seed=0)
    y = np.asarray(data["y"])
    assert y.shape == (50, 3)
    assert np.all(np.abs(y.mean(0) - [3.0, -3.0, 0.0]) < 0.6)
    assert y[:, 0].std() > 0.5                       # every row its own draw
    draw = model.module().simulate(model.module().sample_globals(4), rows=7)
    assert tuple(draw["y"].shape) == (4, 7, 3)
