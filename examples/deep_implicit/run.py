"""Fit the two-layer deep implicit model (examples/deep_implicit/model.him) to data
simulated from it with known weights, and check that the fitted model reproduces
held-out data.

    python examples/deep_implicit/run.py            # the full experiment
    python examples/deep_implicit/run.py --quick    # a smoke run (well under a minute)

Steps (the same as the command line):
  1. simulate N_train + N_test rows:  himdsl simulate examples/deep_implicit/model.him
     -o data.npz --rows N --seed S   (data.truth.npz records every weight and hidden unit)
  2. fit the first N_train rows by LFVI: the layer weights are point-estimated, the
     hidden units z2, z1 (local latents) get an amortised q(z | x)
  3. simulate N_test rows from the fitted model; a classifier two-sample test
     (C2ST: sklearn MLPClassifier, 5-fold CV accuracy, 0.5 = indistinguishable)
     against the held-out rows; the same test for the true model (the floor) and the
     untrained model (the ceiling)
  4. inferred hidden units (locals() z_mean) against the true ones: per-unit
     correlations after the best one-to-one matching (Hungarian, on |corr|)

Writes results.json, results.md and the PNGs to --out (default: beside this file).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

import himdsl

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "model.him")


def c2st(a: np.ndarray, b: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """Mean 5-fold CV accuracy of an MLP telling rows of `a` from rows of `b`."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(a), len(b))
    X = np.concatenate([a[:n], b[:n]]).astype(np.float64)
    y = np.r_[np.zeros(n), np.ones(n)]
    clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(100, 100), max_iter=1000,
                                                        early_stopping=True, random_state=seed))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(clf, X, y, cv=cv)))


def matched_correlations(true: np.ndarray, inferred: np.ndarray) -> np.ndarray:
    """|corr| of each true unit with its best one-to-one match among the inferred units
    (units that never vary get 0)."""
    from scipy.optimize import linear_sum_assignment

    def standardise(a):
        sd = a.std(0)
        return (a - a.mean(0)) / np.where(sd > 1e-8, sd, np.inf)

    c = np.abs(standardise(true).T @ standardise(inferred) / len(true))
    rows, cols = linear_sum_assignment(-c)
    out = np.zeros(true.shape[1])
    out[rows] = c[rows, cols]
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: few rows and steps")
    p.add_argument("--train", type=int, default=2000, help="training rows")
    p.add_argument("--test", type=int, default=1000, help="held-out rows")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated truth")
    p.add_argument("--fit-seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=6 ** 0.5,
                   help="true weights = the model's default initialisation (uniform, bound "
                        "1/sqrt(fan_in)) times this; sqrt(6) is He-uniform, which keeps the "
                        "hidden units' scale through the ReLU layers")
    p.add_argument("--out", default=HERE)
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.test, args.steps = 300, 200, 40
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)

    model = himdsl.load(MODEL)
    rows = args.train + args.test
    # 1. the truth. True weights: the default initialisation drawn with --seed, times
    # --scale, written to true_weights.npz; the data is then exactly
    # `himdsl simulate MODEL -o data.npz --rows ROWS --seed SEED --params true_weights.npz`
    torch.manual_seed(args.seed)
    weights_true = {k: v.detach().numpy() * args.scale for k, v in model.module().named_parameters()}
    np.savez(os.path.join(args.out, "true_weights.npz"), **weights_true)
    from himdsl.simulation import simulate_dataset
    data, truth = simulate_dataset(model, rows=rows, params=weights_true, seed=args.seed)
    x_train, x_test = data["x"][: args.train], data["x"][args.train:]

    # 2. fit the training rows (weights: point estimates; z2, z1: amortised q)
    # a --quick run (40 steps) is a smoke test, not a posterior: the trust checks
    # would rightly reject it
    fit = model.fit({"x": x_train}, device="cpu", steps=args.steps, particles=args.particles,
                    batch=args.batch, lr=args.lr, seed=args.fit_seed, checks=not args.quick)
    trace = fit.result.trace
    print(f"fit: {args.steps} steps in {fit.seconds:.1f} s; last ratio accuracy "
          f"{trace[-1].ratio_acc:.3f}", flush=True)

    # 3. posterior predictive vs held-out: C2ST
    with torch.no_grad():
        torch.manual_seed(args.seed + 100)
        x_fit = fit.module.simulate(None, None, args.test)["x"].numpy()
        x_true = model.module()  # same architecture, true weights
        from himdsl.simulation import load_point_estimates
        load_point_estimates(x_true, weights_true)
        x_true = x_true.simulate(None, None, args.test)["x"].numpy()
        torch.manual_seed(args.fit_seed)
        x_init = model.module().simulate(None, None, args.test)["x"].numpy()
    scores = {"fitted": c2st(x_fit, x_test), "true model": c2st(x_true, x_test),
              "untrained model": c2st(x_init, x_test)}
    print("C2ST accuracy vs held-out:", {k: round(v, 3) for k, v in scores.items()}, flush=True)

    # 4. inferred hidden units vs the true ones
    loc = fit.locals()
    corr = {name: matched_correlations(truth[name][: args.train], loc[f"{name}_mean"])
            for name in ("z2", "z1")}
    live = {name: int((truth[name][: args.train].std(0) > 1e-8).sum()) for name in corr}
    corr_stats = {name: {"mean": float(c.mean()), "median": float(np.median(c)),
                         "live_true_units": live[name], "units": int(c.size),
                         "mean_over_live": float(c[truth[name][: args.train].std(0) > 1e-8].mean())}
                  for name, c in corr.items()}
    print("matched |corr| per unit:", json.dumps(corr_stats), flush=True)

    # moments
    moments = {"held-out mean": x_test.mean(0).round(3).tolist(), "fitted mean": x_fit.mean(0).round(3).tolist(),
               "held-out sd": x_test.std(0).round(3).tolist(), "fitted sd": x_fit.std(0).round(3).tolist()}

    results = {"settings": {k: v for k, v in vars(args).items() if k != "out"},
               "fit_seconds": round(fit.seconds, 1), "final_ratio_accuracy": trace[-1].ratio_acc,
               "c2st": scores, "hidden_units": corr_stats, "moments": moments,
               "command": "python examples/deep_implicit/run.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("| data simulated from | C2ST accuracy vs held-out (0.5 = indistinguishable) |\n| --- | --- |\n")
        for k, v in scores.items():
            f.write(f"| {k} | {v:.3f} |\n")
        f.write("\n| hidden layer | units | live true units | mean matched abs corr | over live units | median |\n"
                "| --- | --- | --- | --- | --- | --- |\n")
        for k, s in corr_stats.items():
            f.write(f"| {k} | {s['units']} | {s['live_true_units']} | {s['mean']:.3f} | {s['mean_over_live']:.3f} | {s['median']:.3f} |\n")
    plot(args.out, x_test, x_fit, x_init, corr, trace)
    return results


def plot(out, x_test, x_fit, x_init, corr, trace):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(12, 2.8))
    for j, ax in enumerate(axes):
        lo, hi = np.percentile(np.r_[x_test[:, j], x_fit[:, j]], [0.5, 99.5])
        bins = np.linspace(lo, hi, 40)
        ax.hist(x_test[:, j], bins, density=True, alpha=0.5, label="held-out")
        ax.hist(x_fit[:, j], bins, density=True, histtype="step", lw=1.5, label="fitted model")
        ax.hist(x_init[:, j], bins, density=True, histtype="step", lw=1, ls="--", label="untrained")
        ax.set_title(f"x[{j}]")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "marginals.png"), dpi=70)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    for ax, (name, c) in zip(axes, corr.items()):
        ax.hist(c, np.linspace(0, 1, 21))
        ax.set_title(f"{name}: matched |corr| per true unit")
        ax.set_xlabel("|corr(true, inferred)|")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "hidden_units.png"), dpi=70)
    plt.close(fig)


if __name__ == "__main__":
    main()
