"""The sbibm benchmark tasks, fitted by himdsl (LFVI) and by sbi's NPE side by side.

    python benchmarks/sbibm_suite.py [--tasks two_moons,slcp] [--observations 1,2,3]
        [--seeds 0,1] [--methods himdsl,npe] [--budget N] [--steps N] [--json out.json]

Each task lives in benchmarks/sbibm/<task>/: model.him, sbibm's prior and simulator
in the .him language (with an extern where the language cannot say it), and
obs<k>.npz, the observation, 10,000 reference posterior draws and the true
parameters (benchmarks/sbibm/README.md). Both methods use the compiled model:
himdsl fits it with default settings; NPE (sbi's NPE_C, default settings) trains
on draws from the model's prior pushed through the model's own `simulate`, so the
two see identical simulators. Each run draws 10,000 posterior samples of the
task's parameters `theta` (sbibm's parameterisation) and scores them by C2ST
against the reference (benchmarks/metrics.py, computed as sbibm does; 0.5 is
perfect). Simulations are counted by wrapping the module's `simulate` methods,
so everything a method simulates is counted (himdsl's pilot runs too).

--budget: NPE's number of simulations (default 10,000), and himdsl's cap
(FitSettings.budget; by default himdsl simulates as its plan says). Each himdsl
row records whether the fit passed its trust checks (`checks_ok`); every row, each
parameter's mean error in reference sds and sd ratio (`mean_error_in_sd`,
`sd_ratio`, and the worst of each), which say by how much a C2ST near 1.0 misses.
Where its draws were importance-resampled to the ratio's posterior (importance.py),
the same fit's q draws' C2ST (`c2st_q`, printed beside) and the weights' k̂
(`resampling`). --steps: himdsl's optimisation steps, for smoke runs only (the
table is then not a benchmark of the defaults).

Prints a markdown table (one row per task, observation, seed and method, then
per-task means) with the sbibm paper's C2ST at 10,000 simulations for
comparison, and writes every row to --json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import himdsl  # noqa: E402
from benchmarks.metrics import c2st, marginal_scores, worst_marginals  # noqa: E402

TASK_DIR = ROOT / "benchmarks" / "sbibm"
TASKS = ("two_moons", "gaussian_linear", "gaussian_linear_uniform", "slcp", "slcp_distractors",
         "bernoulli_glm", "bernoulli_glm_raw", "gaussian_mixture", "sir", "lotka_volterra")
METHODS = ("himdsl", "npe")
PARAMETER = "theta"          # every model names sbibm's parameters `theta`
POSTERIOR_DRAWS = 10_000
NPE_BUDGET = 10_000
SIMULATION_CHUNK = 1_000     # NPE simulates in chunks (sir draws 10,000 uniforms per simulation)

# The sbibm paper's C2ST at 10^4 simulations, mean over its 10 observations
# (Lueckmann et al. 2021; per-run numbers in github.com/sbi-benchmark/results,
# benchmarking_sbi/results/main_paper.csv): (best, its algorithm, NPE).
# gaussian_mixture: the rerun after sbibm 1.1.0 fixed that task
# (gaussian_mixture_rerun/results/gaussian_mixture_rerun.csv).
PAPER = {
    "two_moons": (0.55, "SNPE", 0.61),
    "gaussian_linear": (0.54, "SNRE", 0.55),
    "gaussian_linear_uniform": (0.53, "SNPE", 0.55),
    "slcp": (0.71, "SNLE", 0.90),
    "slcp_distractors": (0.93, "SNPE", 0.97),
    "bernoulli_glm": (0.55, "SNLE", 0.68),
    "bernoulli_glm_raw": (0.66, "SNPE", 0.77),
    "gaussian_mixture": (0.55, "SNPE", 0.62),
    "sir": (0.56, "SNPE", 0.68),
    "lotka_volterra": (0.74, "SNLE", 1.00),
}


# ---------------------------------------------------------------- tasks
def load_module(task: str):
    """The task's compiled model (a fresh module: counters wrap its methods)."""
    return himdsl.load(str(TASK_DIR / task / "model.him")).module()


def load_observation(task: str, k: int) -> dict[str, np.ndarray]:
    """x, reference and true_theta of observation k (make_files.py)."""
    with np.load(TASK_DIR / task / f"obs{k}.npz") as f:
        return {name: f[name] for name in f.files}


def single_global(module) -> str:
    """The model's one global latent: what both methods infer."""
    if len(module.global_names) != 1:
        raise ValueError(f"model `{module.model_name}` has globals {module.global_names}; "
                         "the suite expects exactly one")
    return module.global_names[0]


def parameter_draws(module, globals: dict[str, np.ndarray]) -> np.ndarray:
    """sbibm's parameters for draws of the globals: the global `theta` itself, or the
    `let theta` recomputed from the globals where sbibm's prior is not expressible
    directly (bernoulli_glm's correlated Gaussian, whitened). Calls the class's
    `simulate`, so these runs are not counted as simulations."""
    if PARAMETER in globals:
        return np.asarray(globals[PARAMETER])
    tensors = {name: torch.as_tensor(value, dtype=torch.float32) for name, value in globals.items()}
    with torch.no_grad():
        return type(module).simulate(module, tensors)[PARAMETER].numpy()


class SimulationCounter:
    """Counts the simulated rows of a module: wraps `simulate` and `simulate_given`
    on the instance, so every caller (the trainer, its pilot runs, NPE) goes
    through it. A call adds the number of draws of its observation."""

    def __init__(self, module):
        self.count = 0
        self._observed = module.observed_names[0]
        self._size = max(math.prod(module.nodes[self._observed].shape), 1)
        for name in ("simulate", "simulate_given"):
            method = getattr(module, name, None)
            if method is not None:
                setattr(module, name, self._counting(method))

    def _counting(self, method):
        def counted(*args, **kwargs):
            out = method(*args, **kwargs)
            self.count += out[self._observed].numel() // self._size
            return out
        return counted


# ---------------------------------------------------------------- methods
def fit_himdsl(module, x: np.ndarray, seed: int, budget: int | None, steps: int | None) -> tuple[dict, dict]:
    """Posterior draws of the globals from himdsl's default fit, and the verdict of
    its trust checks (a failed fit is scored all the same, and marked)."""
    from himdsl.infer import FitSettings, fit

    options = {"seed": seed}
    if budget is not None:
        options["budget"] = budget
    if steps is not None:
        options["steps"] = steps
    result = fit(module, {module.observed_names[0]: x}, FitSettings(**options))
    verdict = result.verdict
    extra = {"checks_ok": verdict.ok, "failed_checks": verdict.failures(),
             "checks": {c.name: {"value": c.value, "detail": c.detail} for c in verdict.checks}}
    draws = result.posterior(POSTERIOR_DRAWS)
    if result.resampling is not None:        # the same fit's q, before importance resampling
        with torch.no_grad():
            extra["q_draws"] = {n: v.numpy() for n, v in result.global_guide.rsample(POSTERIOR_DRAWS)[0].items()}
        extra["resampling"] = {"used": result.resampling.used, "khat": result.resampling.khat,
                               "ess": result.resampling.ess, "pool": result.resampling.pool}
    return draws, extra


class _NoLogs:
    """sbi's Tracker, discarding everything: NPE would otherwise write TensorBoard
    files into ./sbi-logs on every run."""

    log_dir = None

    def log_metric(self, *args, **kwargs) -> None:
        pass

    log_metrics = log_params = add_figure = flush = log_metric


def fit_npe(module, x: np.ndarray, budget: int | None) -> tuple[dict, dict]:
    """Posterior draws of the global from sbi's NPE trained on the model's own
    prior and simulator (default density estimator and training)."""
    from sbi.inference import NPE

    name = single_global(module)
    observed = module.observed_names[0]
    prior = module.prior(name)
    theta = prior.sample((budget or NPE_BUDGET,))
    with torch.no_grad():
        xs = torch.cat([module.simulate({name: chunk})[observed].reshape(len(chunk), -1)
                        for chunk in theta.split(SIMULATION_CHUNK)])
    inference = NPE(prior=prior, show_progress_bars=False, tracker=_NoLogs())
    estimator = inference.append_simulations(theta, xs.float()).train()
    posterior = inference.build_posterior(estimator)
    x_o = torch.as_tensor(x, dtype=torch.float32).reshape(1, -1)
    draws = posterior.sample((POSTERIOR_DRAWS,), x=x_o, show_progress_bars=False)
    return {name: draws.reshape(POSTERIOR_DRAWS, *module.nodes[name].shape).numpy()}, {}


def run(task: str, k: int, seed: int, method: str, budget: int | None, steps: int | None) -> dict:
    """One fit and its score: a row of the table."""
    row = {"task": task, "observation": k, "seed": seed, "method": method}
    obs = load_observation(task, k)
    module = load_module(task)
    counter = SimulationCounter(module)
    torch.manual_seed(seed)
    np.random.seed(seed)
    start = time.perf_counter()
    try:
        if method == "himdsl":
            globals, extra = fit_himdsl(module, obs["x"], seed, budget, steps)
        else:
            globals, extra = fit_npe(module, obs["x"], budget)
    except Exception as exc:  # a failed run is reported, the suite goes on
        traceback.print_exc()
        return {**row, "error": f"{type(exc).__name__}: {exc}", "simulations": counter.count,
                "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    draws = parameter_draws(module, globals).reshape(POSTERIOR_DRAWS, -1)
    if "q_draws" in extra:
        q_draws = parameter_draws(module, extra.pop("q_draws")).reshape(POSTERIOR_DRAWS, -1)
        extra["c2st_q"] = c2st(q_draws, obs["reference"])
    return {**row, "c2st": c2st(draws, obs["reference"]), **marginals(draws, obs["reference"]),
            "simulations": counter.count, "seconds": seconds, **extra}


def marginals(draws: np.ndarray, reference: np.ndarray) -> dict:
    """Each parameter's mean error in reference sds and sd ratio, and the worst of
    each: what a C2ST near 1.0 cannot say."""
    error, ratio = marginal_scores(draws, reference)
    worst_error, worst_ratio = worst_marginals(error, ratio)
    return {"mean_error_in_sd": np.round(error, 3).tolist(), "sd_ratio": np.round(ratio, 3).tolist(),
            "worst_mean_error_in_sd": round(worst_error, 3), "worst_sd_ratio": round(worst_ratio, 3)}


# ---------------------------------------------------------------- output
def means(rows: list[dict]) -> list[dict]:
    """Per task and method: mean C2ST, simulations and seconds over observations and seeds."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["task"] == task):
            done = [r for r in rows if r["task"] == task and r["method"] == method and "c2st" in r]
            if done:
                out.append({"task": task, "method": method, "runs": len(done),
                            **{key: float(np.mean([r[key] for r in done]))
                               for key in ("c2st", "simulations", "seconds")}})
    return out


def table(rows: list[dict], summary: list[dict]) -> str:
    """The markdown table: every run, then the per-task means."""
    head = ("| task | obs | seed | method | C2ST | paper best @10k | paper NPE @10k | "
            "simulations | seconds |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows + [dict(s, observation="mean", seed="") for s in summary]:
        best, algorithm, npe = PAPER[r["task"]]
        score = f"{r['c2st']:.3f}" if "c2st" in r else f"error: {r['error']}"
        if "c2st_q" in r:
            score += f" (q's own {r['c2st_q']:.3f}, k̂ {r['resampling']['khat']:.2f})"
        lines.append(f"| {r['task']} | {r['observation']} | {r['seed']} | {r['method']} | {score} | "
                     f"{best:.2f} ({algorithm}) | {npe:.2f} | {r['simulations']:,.0f} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def integers(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    picked = text.split(",")
    unknown = [v for v in picked if v not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return picked


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--observations", default="1,2,3")
    p.add_argument("--seeds", default="0")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--budget", type=int, default=None,
                   help=f"simulations for NPE (default {NPE_BUDGET:,}) and for himdsl if it takes a budget")
    p.add_argument("--steps", type=int, default=None, help="himdsl optimisation steps (smoke runs only)")
    p.add_argument("--json", default=None, help="write the rows and means here")
    args = p.parse_args(argv)
    tasks = choices(args.tasks, TASKS, "tasks")
    methods = choices(args.methods, METHODS, "methods")
    torch.set_num_threads(1)
    if "himdsl" in methods:
        if args.steps is not None:
            print(f"smoke run: himdsl steps = {args.steps} (not the default settings)", flush=True)

    rows = []
    for task in tasks:
        for k in integers(args.observations):
            for seed in integers(args.seeds):
                for method in methods:
                    print(f"{task} obs {k} seed {seed}: {method} ...", flush=True)
                    rows.append(run(task, k, seed, method, args.budget, args.steps))
                    if "c2st" in rows[-1]:
                        r = rows[-1]
                        print(f"  C2ST {r['c2st']:.3f}, worst mean error {r['worst_mean_error_in_sd']:+.2f} sd, "
                              f"worst sd ratio {r['worst_sd_ratio']:.2f}, {r['simulations']:,} simulations, "
                              f"{r['seconds']:.0f} s", flush=True)
    summary = means(rows)
    print(table(rows, summary))
    result = {"settings": {"budget": args.budget, "steps": args.steps, "posterior_draws": POSTERIOR_DRAWS,
                           "npe_budget": args.budget or NPE_BUDGET},
              "paper": {t: dict(zip(("best", "best_algorithm", "npe"), v)) for t, v in PAPER.items()},
              "rows": rows, "means": summary}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
