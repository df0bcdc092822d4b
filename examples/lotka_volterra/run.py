"""The paper's Lotka-Volterra experiment (Tran, Ranganath & Blei 2017, Fig. 2, after
Papamakarios & Murray 2016): the posterior of the four log rates of the stochastic
predator-prey Markov jump process, by LFVI and by two ABC baselines from the `sbi`
package, all given the same budget of simulator draws.

    python examples/lotka_volterra/run.py               # the full experiment (~30 min, 1 thread)
    python examples/lotka_volterra/run.py --quick       # a smoke run (~40 s)
    python examples/lotka_volterra/run.py --methods lfvi,rejection   # some rows only

Methods (rows of the table; --methods picks a subset, results.json keeps the rest):
  rejection   sbi MCABC: 100,000 prior draws, keep the 0.1% nearest (100 draws)
  smc         sbi SMCABC: 1,000 particles, 10,000 initial draws, epsilon = median
              distance of the last population, 100,000 draws in all
  lfvi        himdsl fit of summaries.him (contrastive ratio), 100,000 draws
  lfvi-large  the same with a larger budget (300,000 draws)
  lfvi-reuse  LFVI at 100,000 draws, each simulation reused for 4 more ratio updates
  many        himdsl fit of many_series.him to --series series (default 10,000)
              sharing the true rates: contrastive ratio (auto), the likelihood
              annealed over the first 60% of the q steps

Every method sees the observed series through the same 9 standardised summaries
(lv.py `summaries`; README.md says why). Simulations are counted inside lv.py, so the
counts include everything a method simulated (LFVI's input-scaling pilot too).

Writes to --out (default: beside this file): results.json, results.md,
marginals.png (Fig. 2 style), series.png (the observed series), many_series.png,
and the posterior draws posterior_<method>.npz.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import himdsl  # noqa: E402
import lv  # noqa: E402

LV_PATH = os.path.abspath(lv.__file__)
TRUE_LOG_THETA = np.log(np.array(lv.TRUE_THETA))
NAMES = ("log θ1 (pred. birth)", "log θ2 (pred. death)", "log θ3 (prey birth)", "log θ4 (prey death)")
LABELS = {"rejection": "rejection ABC (sbi MCABC)", "smc": "SMC-ABC (sbi SMCABC)",
          "lfvi": "LFVI", "lfvi-large": "LFVI, larger budget",
          "lfvi-reuse": "LFVI, simulations reused (reuse = 4)", "many": "LFVI, many series"}
SINGLE_LFVI = ("lfvi", "lfvi-large", "lfvi-reuse")      # LFVI on the one observed series
ALL_METHODS = ("rejection", "smc") + SINGLE_LFVI + ("many",)

# Budgets and settings. LFVI in contrastive mode simulates `simulations` series per
# ratio update plus 1,024 once (the ratio's input scaling): 1,024 + 256 * 386 = 99,840
# with one ratio update per step (`ratio_updates` = 1; the default without a plate is 2,
# which would double the draws).
FULL = {
    "budget": 100_000,
    "rejection": {"quantile": 0.001},
    "smc": {"num_particles": 1000, "num_initial_pop": 10_000, "epsilon_decay": 0.5},
    "lfvi": {"ratio_updates": 1, "simulations": 256, "steps": 386, "lr": 2e-2, "ratio_lr": 3e-3},
    "lfvi-large": {"ratio_updates": 1, "simulations": 512, "steps": 585, "lr": 2e-2, "ratio_lr": 3e-3},
    "lfvi-reuse": {"ratio_updates": 1, "simulations": 256, "steps": 386, "lr": 2e-2, "ratio_lr": 3e-3, "reuse": 4},
    # 512 simulations per ratio update, one series per draw of the rates; q's step reads
    # 1,024 of the 10,000 series (README.md, "Many series")
    "many": {"particles": 16, "batch": 1024, "steps": 800, "anneal": 0.6, "lr": 2e-2,
             "ratio_lr": 3e-3},
    "series": 10_000,
}
QUICK = {
    "budget": 600,
    "rejection": {"quantile": 0.05},
    "smc": {"num_particles": 20, "num_initial_pop": 200, "epsilon_decay": 0.7},
    "lfvi": {"ratio_updates": 1, "simulations": 256, "steps": 24, "lr": 2e-2, "ratio_lr": 1e-2},
}


class UserError(Exception):
    """A problem the user can fix (bad flag, missing package); printed without a traceback."""


# ---------------------------------------------------------------- helpers
def simulations() -> int:
    """Series simulated so far by every loaded copy of lv.py (himdsl imports the
    extern file under its own module name, run.py under `lv`)."""
    return sum(getattr(m, "draws", 0) for m in list(sys.modules.values())
               if getattr(m, "__file__", None) and os.path.abspath(m.__file__) == LV_PATH)


def gaussian_nlp(draws: np.ndarray, weights: np.ndarray | None = None) -> float:
    """−log N(true log θ; mean, cov) with the (weighted) mean and covariance of the draws."""
    w = np.full(len(draws), 1.0 / len(draws)) if weights is None else weights / weights.sum()
    mean = w @ draws
    centred = draws - mean
    cov = (centred * w[:, None]).T @ centred / (1.0 - (w ** 2).sum())
    cov += 1e-9 * np.eye(draws.shape[1])
    diff = TRUE_LOG_THETA - mean
    _, logdet = np.linalg.slogdet(cov)
    return float(0.5 * (diff @ np.linalg.solve(cov, diff) + logdet + len(diff) * math.log(2 * math.pi)))


def moments(draws: np.ndarray, weights: np.ndarray | None = None) -> tuple[list, list]:
    w = np.full(len(draws), 1.0 / len(draws)) if weights is None else weights / weights.sum()
    mean = w @ draws
    sd = np.sqrt(w @ (draws - mean) ** 2)
    return mean.tolist(), sd.tolist()


def record(method: str, draws: np.ndarray, sims: int, seconds: float, out: str,
           weights: np.ndarray | None = None, **extra) -> dict:
    mean, sd = moments(draws, weights)
    row = {"method": method, "label": LABELS[method], "simulations": int(sims),
           "seconds": round(seconds, 1), "mean": mean, "sd": sd,
           "nlp_true": gaussian_nlp(draws, weights), "draws": int(len(draws)), **extra}
    np.savez(os.path.join(out, f"posterior_{method}.npz"), log_theta=draws,
             **({"weights": weights} if weights is not None else {}))
    print(f"  {LABELS[method]}: {sims:,} simulations, {seconds:.0f} s; mean "
          f"{np.round(mean, 2).tolist()} sd {np.round(sd, 2).tolist()}; "
          f"−log p(true) {row['nlp_true']:.2f}", flush=True)
    return row


# ---------------------------------------------------------------- data
def observed_series(seed: int) -> dict:
    """One series at the true rates: `himdsl simulate model.him --given log_theta=...`."""
    model = himdsl.load(os.path.join(HERE, "model.him"))
    data, _ = model.simulate(given={"log_theta": TRUE_LOG_THETA.tolist()}, seed=seed)
    x = np.asarray(data["x"], dtype=np.float64).reshape(2, lv.N_OBS)
    return {"x": x, "s": lv.summaries(x).astype(np.float32)}


def many_series(n: int, seed: int) -> np.ndarray:
    """n series sharing the true rates, as their summaries [n, 9]:
    `himdsl simulate many_series.him --rows n --given log_theta=...`."""
    model = himdsl.load(os.path.join(HERE, "many_series.him"))
    data, _ = model.simulate(rows=n, given={"log_theta": TRUE_LOG_THETA.tolist()}, seed=seed)
    return np.asarray(data["s"], dtype=np.float32)


# ---------------------------------------------------------------- methods
def run_abc(method: str, s_obs: np.ndarray, cfg: dict, seed: int, out: str) -> dict:
    try:
        from sbi.inference import MCABC, SMCABC
        from sbi.utils import BoxUniform
    except ImportError as exc:
        raise UserError(f"the ABC baselines need the `sbi` package ({exc}); install it with "
                        "pip install torch==2.13.0 -e \".[dev]\" (or pip install sbi)") from None
    np.random.seed(seed)
    torch.manual_seed(seed)
    prior = BoxUniform(-5.0 * torch.ones(4), 2.0 * torch.ones(4))

    def simulator(log_theta):
        return lv.lv_summaries(torch.exp(log_theta))

    x_o = torch.as_tensor(s_obs)[None]
    budget = cfg["budget"]
    start, sims0 = time.perf_counter(), simulations()
    if method == "rejection":
        print(f"rejection ABC (sbi MCABC): {budget:,} prior draws, keep the nearest "
              f"{cfg['rejection']['quantile']:.1%} ...", flush=True)
        abc = MCABC(simulator, prior, simulation_batch_size=10_000, show_progress_bars=False)
        draws = abc(x_o, num_simulations=budget, quantile=cfg["rejection"]["quantile"])
        weights, extra = None, {"quantile": cfg["rejection"]["quantile"]}
    else:
        c = cfg["smc"]
        print(f"SMC-ABC (sbi SMCABC): {c['num_particles']:,} particles, {c['num_initial_pop']:,} "
              f"initial draws, {budget:,} draws in all ...", flush=True)
        abc = SMCABC(simulator, prior, simulation_batch_size=10_000, show_progress_bars=False,
                     kernel="gaussian", algorithm_variant="C")
        draws, info = abc(x_o, num_particles=c["num_particles"], num_initial_pop=c["num_initial_pop"],
                          num_simulations=budget, epsilon_decay=c["epsilon_decay"],
                          distance_based_decay=True, use_last_pop_samples=False,
                          return_summary=True)
        weights = info["weights"][-1].exp().double().numpy()
        extra = {"populations": len(info["epsilons"]), "epsilon": float(info["epsilons"][-1]),
                 "ess": float(1.0 / (weights / weights.sum()) @ (weights / weights.sum()))}
    seconds = time.perf_counter() - start
    return record(method, draws.double().numpy(), simulations() - sims0, seconds, out, weights, **extra)


def _progress(label: str, steps: int):
    def report(row):
        print(f"  {label} step {row.step}/{steps}: elbo {row.elbo:.3f}, ratio loss "
              f"{row.ratio_loss:.3f}, ratio accuracy {row.ratio_acc:.3f}, {row.seconds:.0f} s", flush=True)
    return report


def run_lfvi(method: str, data: dict, model_file: str, settings: dict, seed: int, out: str,
             log_every: int) -> dict:
    from himdsl.fitting import run_fit
    from himdsl.infer import RatioSettings

    model = himdsl.load(os.path.join(HERE, model_file))
    steps = settings["steps"]
    rows = len(data["s"]) if data["s"].ndim == 2 else 1
    print(f"{LABELS[method]}: himdsl fit {model_file} ({rows:,} series), "
          f"{', '.join(f'{k}={v}' for k, v in settings.items())} ...", flush=True)
    overrides = dict(settings, seed=seed, log_every=log_every)
    if "ratio" in overrides:     # ratio { mode = ... } of the model file
        overrides["ratio"] = RatioSettings(mode=overrides["ratio"])
    start, sims0 = time.perf_counter(), simulations()
    fit = run_fit(model, data, overrides, "cpu", None, progress=_progress(LABELS[method], steps))
    seconds = time.perf_counter() - start
    sims = simulations() - sims0
    draws = fit.posterior(4000)["log_theta"].astype(np.float64)
    return record(method, draws, sims, seconds, out, ratio_mode=fit.plan.ratio,
                  settings=settings, series=rows)


# ---------------------------------------------------------------- outputs
def load_draws(out: str, method: str):
    path = os.path.join(out, f"posterior_{method}.npz")
    if not os.path.exists(path):
        return None
    blob = np.load(path)
    draws = blob["log_theta"]
    if "weights" in blob:        # SMC-ABC: resample by the importance weights for plots
        w = blob["weights"] / blob["weights"].sum()
        draws = draws[np.random.default_rng(0).choice(len(draws), size=4000, p=w)]
    return draws


def plot_marginals(out: str, methods: list[str], filename: str, title: str) -> str | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    posts = {m: load_draws(out, m) for m in methods}
    posts = {m: d for m, d in posts.items() if d is not None}
    if not posts:
        return None
    colors = {"rejection": "tab:orange", "smc": "tab:green", "lfvi": "tab:blue",
              "lfvi-large": "tab:purple", "lfvi-reuse": "tab:cyan", "many": "tab:red"}
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.0))
    for j, ax in enumerate(axes):
        lo = min(-5.0, TRUE_LOG_THETA[j] - 0.5)
        grid = np.linspace(lo, 2.0, 400)
        for m, d in posts.items():
            col = d[:, j]
            step = grid[1] - grid[0]
            bw = max(1.06 * col.std() * len(col) ** -0.2, 1.5 * step)   # Silverman, >= the grid
            dens = np.exp(-0.5 * ((grid[:, None] - col[None, :]) / bw) ** 2).sum(1)
            dens /= max(dens.sum() * step, 1e-300)
            ax.plot(grid, dens, color=colors[m], lw=1.6, label=LABELS[m])
        ax.axvline(TRUE_LOG_THETA[j], color="k", ls="--", lw=1, label="true value")
        ax.set_xlabel(NAMES[j])
        ax.set_yticks([])
        ax.set_xlim(-5, 2)
    axes[0].legend(fontsize=7, loc="upper right", frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = os.path.join(out, filename)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_series(out: str, x: np.ndarray) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(lv.N_OBS) * lv.DT_OBS
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.plot(t, x[0], label="predators X")
    ax.plot(t, x[1], label="prey Y")
    ax.set_xlabel("time")
    ax.set_ylabel("population")
    ax.legend(frameon=False)
    fig.tight_layout()
    path = os.path.join(out, "series.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _number(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 1e4 else f"{v:.1e}"


def write_table(out: str, rows: list[dict]) -> str:
    lines = ["| method | series | simulations | wall time (s) | " +
             " | ".join(f"log θ{j + 1} mean ± sd" for j in range(4)) + " | −log p(true log θ) |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in range(4)) + " | --- |",
             "| truth | | | | " + " | ".join(f"{v:.2f}" for v in TRUE_LOG_THETA) + " | |"]
    for r in rows:
        cells = " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(r["mean"], r["sd"]))
        lines.append(f"| {r['label']} | {r.get('series', 1):,} | {r['simulations']:,} | "
                     f"{r['seconds']:.0f} | {cells} | {_number(r['nlp_true'])} |")
    path = os.path.join(out, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: tiny budgets, single-series methods only")
    p.add_argument("--seed", type=int, default=1, help="seed of the observed data (methods use it too)")
    p.add_argument("--out", default=HERE, help="output folder (default: beside this file)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated subset of {','.join(ALL_METHODS)} (default: all; "
                        "--quick: rejection,smc,lfvi)")
    p.add_argument("--series", type=int, default=None, help="series in the many-series data set")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    methods = (args.methods.split(",") if args.methods else
               ["rejection", "smc", "lfvi"] if args.quick else list(ALL_METHODS))
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise UserError(f"--methods: unknown method(s) {', '.join(bad)}; choose from {', '.join(ALL_METHODS)}")
    if args.quick and set(methods) - {"rejection", "smc", "lfvi"}:
        raise UserError("--quick runs only rejection, smc and lfvi (the many-series fit needs "
                        "10,000 series and about 400,000 simulations: see README.md)")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.json")
    previous = {}
    if os.path.exists(results_path) and not args.quick:
        with open(results_path) as f:
            previous = {r["method"]: r for r in json.load(f)["rows"]}

    print(f"observed series: himdsl simulate model.him at the true rates, seed {args.seed}", flush=True)
    obs = observed_series(args.seed)
    np.savez(os.path.join(args.out, "observed.npz"), x=obs["x"], s=obs["s"])
    plot_series(args.out, obs["x"])
    log_every = 10 if args.quick else 50
    rows = dict(previous)
    for i, method in enumerate(methods):
        seed = args.seed + 100 + i
        if method in ("rejection", "smc"):
            rows[method] = run_abc(method, obs["s"], cfg, seed, args.out)
        elif method in SINGLE_LFVI:
            rows[method] = run_lfvi(method, {"s": obs["s"]}, "summaries.him", cfg[method], seed,
                                    args.out, log_every)
        else:
            n = args.series or cfg["series"]
            print(f"many-series data: {n:,} series at the true rates "
                  f"(himdsl simulate many_series.him --rows {n})", flush=True)
            s_many = many_series(n, args.seed + 1)
            rows[method] = run_lfvi(method, {"s": s_many}, "many_series.him", cfg[method], seed,
                                    args.out, log_every)
        ordered = [rows[m] for m in ALL_METHODS if m in rows]
        with open(results_path, "w") as f:
            json.dump({"true_log_theta": TRUE_LOG_THETA.tolist(), "seed": args.seed,
                       "quick": args.quick, "rows": ordered}, f, indent=1)
    ordered = [rows[m] for m in ALL_METHODS if m in rows]
    write_table(args.out, ordered)
    single = [m for m in ("rejection", "smc") + SINGLE_LFVI if m in rows]
    plot_marginals(args.out, single, "marginals.png",
                   "Lotka-Volterra, one observed series: posterior marginals of the log rates")
    many = [m for m in ("many",) if m in rows]
    if many:
        plot_marginals(args.out, ["lfvi"] + many, "many_series.png",
                       f"LFVI: one series vs {rows[many[0]]['series']:,} series sharing the rates")
    print(f"wrote {results_path}, results.md and the plots to {args.out}", flush=True)
    return ordered


if __name__ == "__main__":
    from himdsl.fitting import FitError

    try:
        main()
    except (UserError, himdsl.HimError, himdsl.ExternError, FitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
