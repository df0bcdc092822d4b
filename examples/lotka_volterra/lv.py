"""Stochastic Lotka-Volterra predator-prey simulator (Papamakarios & Murray 2016).

A Markov jump process on the populations (X predators, Y prey), simulated
exactly with Gillespie's algorithm. Reactions and their rates:

    predator birth   theta1 * X * Y    X -> X + 1
    predator death   theta2 * X        X -> X - 1
    prey birth       theta3 * Y        Y -> Y + 1
    prey death       theta4 * X * Y    Y -> Y - 1

Start at (X, Y) = (50, 100); the state is recorded every 0.2 time units from
t = 0 to t = 30 (151 points). True rates: (0.01, 0.5, 1.0, 0.01).

`lotka_volterra(theta)` is the function the `.him` extern calls:
theta has shape [*batch, 4] (any number of leading batch axes, torch tensor or
numpy array); the result is a float32 torch tensor [*batch, 2, 151] whose row 0
is the predators X and row 1 the prey Y.

Vectorised: all series of the batch advance together, one Gillespie event per
loop iteration, with series that have passed t = 30 (or died out) dropped from
the working set. Randomness comes from numpy's global generator
(`numpy.random`), so seeding it (`himdsl ... --seed`) reproduces the draws.

`lv_summaries(theta)` is the extern of summaries.him and many_series.him: the
same simulation reduced to Papamakarios & Murray's 9 standardised summary
statistics, [*batch, 9] (see `raw_summaries`). The module counts every series it
simulates in `draws` (run.py's simulation budgets).

Runaway simulations (e.g. prey growing unchecked once the predators die out)
are capped at MAX_EVENTS = 10,000 events per series. When the cap is hit, the remaining observation
points are filled with the last state reached (for exploding populations that
is a large constant tail), and the series is flagged in the module attribute
`last_truncated` (a bool numpy array of shape [*batch] for the latest call).
(With at most 10,000 events a population stays below 10,100, so rates stay
finite.) A series in which both species die out (total rate 0) keeps its
final state (0, 0) for the rest of the grid and is not flagged.

Speed (measured with `python lv.py` on the 2-core development CPU, numpy):
a batch of 1,000 draws at the true rates takes about 0.62 s, i.e. about
0.6 ms per draw; about 1% of those series hit the 10,000-event cap (0.7-1.0%
over seeds). The loop runs as many iterations as the longest series in the
batch has events (at most MAX_EVENTS), each a few dozen numpy operations on the
still-running series, so larger batches are cheaper per draw. A batch of 1,000
draws from the prior takes about 0.8 s (about 13% of them are truncated).
"""
from __future__ import annotations

import numpy as np
import torch

T_END = 30.0
DT_OBS = 0.2
N_OBS = 151                  # 0, 0.2, ..., 30
X0, Y0 = 50, 100
MAX_EVENTS = 10_000
TRUE_THETA = (0.01, 0.5, 1.0, 0.01)
_DX = np.array([1.0, -1.0, 0.0, 0.0])   # per reaction
_DY = np.array([0.0, 0.0, 1.0, -1.0])

last_truncated: np.ndarray | None = None
draws = 0                    # series simulated by this module since import (all calls)


def lotka_volterra(theta):
    """Simulate one LV series per row of theta ([*batch, 4]); return [*batch, 2, 151]."""
    global last_truncated, draws
    if isinstance(theta, torch.Tensor):
        theta_np = theta.detach().to("cpu", torch.float64).numpy()
    else:
        theta_np = np.asarray(theta, dtype=np.float64)
    if theta_np.shape[-1] != 4:
        raise ValueError(f"theta must have shape [*batch, 4], got {tuple(theta_np.shape)}")
    batch_shape = theta_np.shape[:-1]
    th = theta_np.reshape(-1, 4)
    n = th.shape[0]

    out = np.empty((n, N_OBS, 2), dtype=np.float64)
    truncated = np.zeros(n, dtype=bool)

    # working set, compacted as series finish; every running series has had
    # exactly `step` events, since all advance together
    idx = np.arange(n)
    t1, t2, t3, t4 = (th[:, j].copy() for j in range(4))
    x = np.full(n, float(X0))
    y = np.full(n, float(Y0))
    t = np.zeros(n)
    k = np.zeros(n, dtype=np.int64)        # next observation index to fill
    t_k = np.zeros(n)                      # its time, k * DT_OBS
    step = 0

    with np.errstate(divide="ignore", invalid="ignore"):
        while idx.size:
            if step >= MAX_EVENTS:
                # runaway: fill the rest with the last state reached, flag it
                for j in range(idx.size):
                    out[idx[j], k[j]:, 0] = x[j]
                    out[idx[j], k[j]:, 1] = y[j]
                truncated[idx] = True
                break
            xy = x * y
            c1 = t1 * xy
            c2 = c1 + t2 * x
            c3 = c2 + t3 * y
            total = c3 + t4 * xy                  # 0 when both species died out
            t_next = t + np.random.standard_exponential(idx.size) / total   # inf if dead
            # observation points in [t, t_next) see the current state
            fill = t_next > t_k
            if fill.any():
                fi = np.nonzero(fill)[0]
                kk = k[fi]
                kn = np.minimum(np.floor(np.minimum(t_next[fi], 2 * T_END) / DT_OBS)
                                .astype(np.int64) + 1, N_OBS)
                k[fi] = kn
                t_k[fi] = kn * DT_OBS
                while fi.size:
                    out[idx[fi], kk, 0] = x[fi]
                    out[idx[fi], kk, 1] = y[fi]
                    kk = kk + 1
                    more = kk < kn
                    fi, kk, kn = fi[more], kk[more], kn[more]
                done = k >= N_OBS
                if done.any():
                    keep = ~done
                    idx, t1, t2, t3, t4 = idx[keep], t1[keep], t2[keep], t3[keep], t4[keep]
                    x, y, k, t_k = x[keep], y[keep], k[keep], t_k[keep]
                    t_next, total, c1, c2, c3 = (t_next[keep], total[keep], c1[keep],
                                                 c2[keep], c3[keep])
            # one event for every running series: pick the reaction
            u = np.random.random(idx.size) * total
            reaction = (u >= c1).astype(np.int64) + (u >= c2) + (u >= c3)
            x = x + _DX[reaction]
            y = y + _DY[reaction]
            t = t_next
            step += 1

    draws += n
    last_truncated = truncated.reshape(batch_shape)
    result = torch.from_numpy(out.transpose(0, 2, 1).astype(np.float32))
    return result.reshape(*batch_shape, 2, N_OBS)


# ---------------------------------------------------------------- summary statistics
# Papamakarios & Murray's 9 summaries of one (X, Y) pair of series:
#   0, 1  mean of X, of Y
#   2, 3  log variance of X, of Y (log(var + 1), so a constant series is finite)
#   4, 5  autocorrelation of X at lags 1 and 2
#   6, 7  autocorrelation of Y at lags 1 and 2
#   8     cross-correlation of X and Y (lag 0)
# Correlations are of the standardised series, sum(z_t z_{t+k}) / (T - 1); a
# constant series (one that died out at once) has correlation 0.
SUMMARY_NAMES = ("mean X", "mean Y", "log var X", "log var Y", "acf1 X", "acf2 X",
                 "acf1 Y", "acf2 Y", "xcorr")
# Standardisation: (s - center) / scale, the mean and sd of the 9 summaries over a
# pilot run of 10,000 prior draws (log rates uniform on [-5, 2]), as Papamakarios &
# Murray did; `python lv.py --pilot` recomputes them (numpy seed 0). Fixed here so
# that every method (LFVI and the ABC baselines) sees exactly the same numbers and
# no method pays for the pilot in its simulation budget.
SUMMARY_CENTER = np.array([9.414153e+02, 1.323027e+02, 7.177762e+00, 4.620479e+00, 7.670837e-01,
                           6.715935e-01, 1.488151e-01, 9.109366e-02, 6.687519e-03])
SUMMARY_SCALE = np.array([2.525960e+03, 8.722397e+02, 3.302386e+00, 2.056148e+00, 2.932696e-01,
                          3.187744e-01, 2.878397e-01, 2.340052e-01, 4.585852e-01])
SUMMARY_CHUNK = 8192         # series simulated per inner call of lv_summaries (memory)


def raw_summaries(x) -> np.ndarray:
    """The 9 unstandardised summaries of series x [..., 2, T] -> [..., 9] (float64)."""
    x = np.asarray(x, dtype=np.float64)
    t = x.shape[-1]
    mean = x.mean(-1)
    var = x.var(-1, ddof=1)
    sd = np.sqrt(var)
    safe = np.where(sd > 0, sd, 1.0)
    z = np.where(sd[..., None] > 0, (x - mean[..., None]) / safe[..., None], 0.0)
    acf1 = (z[..., :-1] * z[..., 1:]).sum(-1) / (t - 1)
    acf2 = (z[..., :-2] * z[..., 2:]).sum(-1) / (t - 1)
    xcorr = (z[..., 0, :] * z[..., 1, :]).sum(-1) / (t - 1)
    return np.stack([mean[..., 0], mean[..., 1], np.log(var[..., 0] + 1), np.log(var[..., 1] + 1),
                     acf1[..., 0], acf2[..., 0], acf1[..., 1], acf2[..., 1], xcorr], -1)


def summaries(x) -> np.ndarray:
    """Standardised summaries of series x [..., 2, T] -> [..., 9] (float64)."""
    return (raw_summaries(x) - SUMMARY_CENTER) / SUMMARY_SCALE


def lv_summaries(theta):
    """Simulate one series per row of theta ([*batch, 4]) and return its 9
    standardised summaries: a float32 torch tensor [*batch, 9]. Large batches are
    simulated in chunks of SUMMARY_CHUNK series (the series themselves are dropped)."""
    if isinstance(theta, torch.Tensor):
        theta = theta.detach().to("cpu", torch.float64).numpy()
    theta = np.asarray(theta, dtype=np.float64)
    batch_shape = theta.shape[:-1]
    flat = theta.reshape(-1, theta.shape[-1])
    parts = [summaries(lotka_volterra(flat[i:i + SUMMARY_CHUNK]).numpy())
             for i in range(0, len(flat), SUMMARY_CHUNK)]
    out = np.concatenate(parts) if parts else np.empty((0, 9))
    return torch.from_numpy(out.astype(np.float32)).reshape(*batch_shape, 9)


def pilot(n: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd of the raw summaries over n prior draws (log rates U(-5, 2))."""
    rng = np.random.RandomState(seed)
    np.random.seed(seed)
    theta = np.exp(rng.uniform(-5.0, 2.0, size=(n, 4)))
    s = np.concatenate([raw_summaries(lotka_volterra(theta[i:i + SUMMARY_CHUNK]).numpy())
                        for i in range(0, n, SUMMARY_CHUNK)])
    return s.mean(0), s.std(0)


if __name__ == "__main__":
    import sys
    import time

    if "--pilot" in sys.argv:
        center, scale = pilot()
        print("SUMMARY_CENTER =", np.array2string(center, precision=6, separator=", "))
        print("SUMMARY_SCALE =", np.array2string(scale, precision=6, separator=", "))
        sys.exit(0)

    np.random.seed(0)
    theta = torch.tensor(TRUE_THETA).expand(1000, 4)
    lotka_volterra(theta[:10])                       # warm up
    start = time.perf_counter()
    xs = lotka_volterra(theta)
    elapsed = time.perf_counter() - start
    print(f"batch 1000 at the true rates: {elapsed:.3f} s ({1e3 * elapsed / 1000:.3f} ms per draw), "
          f"truncated {last_truncated.mean():.1%}, shape {tuple(xs.shape)}")
