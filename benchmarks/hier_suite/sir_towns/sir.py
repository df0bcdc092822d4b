"""Chain-binomial SIR in a town of POP people, I0 of them infected on day 0: each
day every susceptible is infected with probability 1 - exp(-beta I / POP) (beta =
R0 gamma) and every infected person recovers with probability 1 - exp(-gamma)."""
import numpy as np
import torch

POP = 1000
I0 = 5


def sir(theta, T=30):
    """theta [..., 2] = (R0, gamma) -> daily new infections [..., T] (int)."""
    th = theta.detach().cpu().numpy() if torch.is_tensor(theta) else np.asarray(theta)
    batch = th.shape[:-1]
    th = np.clip(th, 0.0, 50.0)
    R0 = th[..., 0].reshape(-1).astype(np.float64)
    gam = th[..., 1].reshape(-1).astype(np.float64)
    beta = R0 * gam
    n = R0.shape[0]
    S = np.full(n, POP - I0, dtype=np.int64)
    I = np.full(n, I0, dtype=np.int64)
    out = np.zeros((n, T), dtype=np.int64)
    p_rec = np.clip(1.0 - np.exp(-gam), 0.0, 1.0)
    for t in range(T):
        p_inf = 1.0 - np.exp(-beta * I / POP)
        new_i = np.random.binomial(S, np.clip(p_inf, 0.0, 1.0))
        new_r = np.random.binomial(I, np.clip(p_rec, 0.0, 1.0))
        S = S - new_i
        I = I + new_i - new_r
        out[:, t] = new_i
    return out.reshape(*batch, T)
