"""Checks that each model.him reproduces sbibm's prior and simulator.

    python benchmarks/sbibm/validate.py [--tasks a,b] [--draws 2000]
    python benchmarks/sbibm/validate.py --wheel DIR/sbibm-1.1.0-py2.py3-none-any.whl [--c2st]

Always:
  typical  the model simulated `--draws` times at each observation's true
           parameters; for every data dimension the two-sided rank p-value of the
           observation among the simulations. A faithful simulator makes the
           observations typical draws: p-values spread over (0, 1), few below 0.01.
  ode      sir and lotka_volterra: the externs' fixed-step RK4 against scipy's
           LSODA at tight tolerances, over prior draws and the true parameters; the
           worst error in units of the observation noise. Then the same in the
           prior's tails (each draw's log-distance from the prior's median tripled,
           where a fit's q or covering population may go), with the number of rows
           the first fixed step could not finish.
With --wheel (the sbibm wheel; make_files.py's input):
  constants  the values written into the models equal sbibm's files: the
           stimulus of bernoulli_glm (design_matrix.pt) and the distractor mixture
           and permutation of slcp_distractors (gmm.torch, permutation_idx.torch).
  sbibm    where pyro-ppl is importable, sbibm's own prior and simulator code (the
           eight tasks that need no Julia) against the model's: two-sample
           Kolmogorov-Smirnov per dimension, Bonferroni-corrected minimum p-value
           (with --c2st also a C2ST of the joint, for up to 10 dimensions).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.metrics import c2st  # noqa: E402
from benchmarks.sbibm_suite import (PARAMETER, TASK_DIR, TASKS, load_module, load_observation,  # noqa: E402
                                    parameter_draws, single_global)

OBSERVATIONS = (1, 2, 3)
NO_JULIA = ("two_moons", "gaussian_linear", "gaussian_linear_uniform", "slcp", "slcp_distractors",
            "bernoulli_glm", "bernoulli_glm_raw", "gaussian_mixture")


# ---------------------------------------------------------------- model side
def globals_at(module, theta: np.ndarray) -> dict[str, torch.Tensor]:
    """The globals that give sbibm's parameters theta: theta itself, or, where
    theta is a linear `let` of the one global (bernoulli_glm), its preimage."""
    theta = torch.as_tensor(theta, dtype=torch.float32)
    if PARAMETER in module.global_names:
        return {PARAMETER: theta}
    name = single_global(module)
    size = module.nodes[name].shape[0]
    basis = parameter_draws(module, {name: np.eye(size, dtype=np.float32)})   # row i: theta(e_i)
    offset = parameter_draws(module, {name: np.zeros((1, size), np.float32)})
    if np.abs(offset).max() > 1e-6:
        raise ValueError(f"{module.model_name}: theta is not linear in `{name}`")
    return {name: torch.as_tensor(np.linalg.solve(basis.T, theta.numpy()), dtype=torch.float32)}


def simulate_at(module, theta: np.ndarray, n: int) -> np.ndarray:
    """n simulations at theta, flattened: [n, dim_x]."""
    given = {k: v.expand(n, *v.shape) for k, v in globals_at(module, theta).items()}
    with torch.no_grad():
        x = module.simulate(given)[module.observed_names[0]]
    return x.reshape(n, -1).double().numpy()


def rank_pvalues(sims: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Two-sided p-value of each coordinate of x among the simulations (mid-ranks for ties)."""
    q = ((sims < x).sum(0) + 0.5 * (sims == x).sum(0)) / len(sims)
    return np.minimum(1.0, 2 * np.minimum(q, 1 - q))


def check_typical(task: str, n: int) -> str:
    """A wrong simulator shows as observations far in the tails of its simulations."""
    module = load_module(task)
    parts = []
    for k in OBSERVATIONS:
        obs = load_observation(task, k)
        p = rank_pvalues(simulate_at(module, obs["true_theta"], n), obs["x"].reshape(-1))
        parts.append(f"obs {k}: min p {p.min():.3f}, {(p < 0.01).sum()}/{p.size} below 0.01")
    return "; ".join(parts)


# ---------------------------------------------------------------- ODE accuracy
def load_extern(task: str, file: str):
    """An extern's Python file as a module (externs are files, not packages)."""
    spec = importlib.util.spec_from_file_location(f"validate_{task}", TASK_DIR / task / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ode_errors(ext, thetas: np.ndarray, seen=lambda states: states) -> tuple[np.ndarray, int]:
    """|RK4 - LSODA| of an extern's ODE, every saved state: [n, saves, d], and the
    number of rows the first fixed-step pass left non-finite (solved again finer).
    `seen` maps the states to what the model observes before its noise."""
    from sbibm_ode import solve, solve_reference, solve_rk4

    grid = (ext.SAVE_EVERY, ext.SAVES)
    first = solve_rk4(ext.rhs, ext.START, thetas, *grid, ext.SUBSTEPS)
    refined = int((~np.isfinite(first).all(axis=(1, 2))).sum())
    fast = solve(ext.rhs, ext.START, thetas, *grid, ext.SUBSTEPS)
    exact = np.stack([solve_reference(ext.rhs, np.asarray(ext.START, float), t, *grid) for t in thetas])
    return np.abs(seen(fast) - seen(exact)), refined


def check_ode(task: str, n: int) -> list[str]:
    """RK4 error measured where it matters, in units of the observation noise: at
    prior draws and the true parameters, and in the prior's tails."""
    module = load_module(task)
    draws = parameter_draws(module, module.sample_globals(n))
    thetas = np.concatenate([draws, [load_observation(task, k)["true_theta"] for k in OBSERVATIONS]])
    centre = np.median(np.log(draws), axis=0)
    tails = np.exp(centre + 3 * (np.log(draws) - centre))
    return [f"{where}: {_ode_line(task, points)}" for where, points in (("prior", thetas), ("tails", tails))]


def _ode_line(task: str, thetas: np.ndarray) -> str:
    if task == "sir":
        ext = load_extern(task, "sir_ode.py")
        err, refined = ode_errors(ext, thetas)
        err = err[:, :, 1] / ext.N * 1000
        unit, sd = "binomial counts out of 1000 (sd up to 15.8)", 1.0
    else:
        ext = load_extern(task, "lv_ode.py")
        # the model clamps the populations (log states here) to [1e-10, 1e4] first
        err, refined = ode_errors(ext, thetas, lambda logs: np.clip(logs, np.log(1e-10), np.log(1e4)))
        err = err / 0.1
        unit, sd = "sds of the log-normal noise (0.1)", 1.0
    worst = err.reshape(len(err), -1).max(1)
    return (f"{len(thetas)} parameter sets: worst error {worst.max():.1e}, median {np.median(worst):.1e} "
            f"{unit}; {int((err.reshape(len(err), -1).max(1) > sd).sum())} off by more than {sd:g}; "
            f"{refined} solved with finer steps")


# ---------------------------------------------------------------- against the wheel
class _StubUnpickler(pickle.Unpickler):
    """Reads a pickled pyro object without pyro: its classes become plain holders."""

    def find_class(self, module, name):
        if module.startswith("pyro"):
            return type(name, (), {"__setstate__": lambda self, state: self.__dict__.update(state)})
        return super().find_class(module, name)


def _stub_pickle():
    return types.SimpleNamespace(Unpickler=_StubUnpickler, __name__="stub_pickle",
                                 load=lambda f, **kw: _StubUnpickler(f, **kw).load())


def check_constants(root: Path) -> list[str]:
    """Constants copied or regenerated from sbibm equal its files."""
    files = root / "sbibm" / "tasks"
    design = torch.load(files / "bernoulli_glm" / "files" / "design_matrix.pt", weights_only=True)
    with torch.no_grad():
        module = load_module("bernoulli_glm")
        ours = module.simulate(module.sample_globals(1))["X"]
    lines = [f"bernoulli_glm design matrix: max |difference| {(ours - design).abs().max():.1e}"]
    gmm = torch.load(files / "slcp" / "files" / "gmm.torch", pickle_module=_stub_pickle(), weights_only=False)
    student = gmm._component_distribution.base_dist
    perm = torch.load(files / "slcp" / "files" / "permutation_idx.torch", weights_only=True)
    dis = load_extern("slcp_distractors", "distractors.py")
    lines.append("slcp_distractors mixture: max |difference| loc "
                 f"{np.abs(student.loc.numpy() - dis.LOC).max():.1e}, scale_tril "
                 f"{np.abs(student._unbroadcasted_scale_tril.numpy() - dis.SCALE_TRIL).max():.1e}, "
                 f"df {set(student.df.tolist())}, weights {set(gmm._mixture_distribution.probs.tolist())}, "
                 f"permutation equal: {bool((perm.numpy() == dis.PERMUTATION).all())}")
    return lines


def import_sbibm(root: Path):
    """sbibm from the unpacked wheel, without its heavy dependencies: pandas (csv
    I/O only) is stubbed; pyro must be importable. sbibm's own files need
    torch.load without weights_only (gmm.torch is a pickled pyro object)."""
    import pyro  # noqa: F401  (fails early with a clear message)

    stub = importlib.util.find_spec("pandas") is None
    if stub:   # only while sbibm imports: other libraries (sklearn) look for pandas too
        sys.modules["pandas"] = types.SimpleNamespace(DataFrame=object)
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    sys.path.insert(0, str(root))
    try:
        import sbibm
    finally:
        if stub:
            del sys.modules["pandas"]
    return sbibm


def ks_min_p(a: np.ndarray, b: np.ndarray) -> float:
    """Bonferroni-corrected smallest per-dimension two-sample KS p-value."""
    from scipy.stats import ks_2samp

    p = [ks_2samp(a[:, j], b[:, j]).pvalue for j in range(a.shape[1])]
    return min(1.0, min(p) * len(p))


def check_against_sbibm(sbibm, task: str, n: int, joint: bool) -> str:
    """sbibm's own prior and simulator against the model's, draw for draw in distribution."""
    module = load_module(task)
    reference = sbibm.get_task(task)
    prior_ref = reference.get_prior()(num_samples=n).numpy()
    prior_ours = parameter_draws(module, {k: v.numpy() for k, v in module.sample_globals(n).items()})
    parts = [f"prior KS p {ks_min_p(prior_ref, prior_ours):.2f}"]
    for k in OBSERVATIONS:
        theta = load_observation(task, k)["true_theta"]
        batch = torch.as_tensor(theta, dtype=torch.float32).expand(n, -1)
        ref = reference.get_simulator()(batch).double().numpy()
        ours = simulate_at(module, theta, n)
        text = f"obs {k} KS p {ks_min_p(ref, ours):.2f}"
        if joint and ref.shape[1] <= 10:
            text += f", C2ST {c2st(ours, ref):.3f}"
        parts.append(text)
    return "; ".join(parts)


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--draws", type=int, default=2000, help="simulations per check")
    p.add_argument("--ode-draws", type=int, default=200, help="prior draws for the ODE check")
    p.add_argument("--wheel", default=None, help="the sbibm 1.1.0 wheel, for the checks against sbibm")
    p.add_argument("--c2st", action="store_true", help="also a C2ST against sbibm's simulator (slow)")
    args = p.parse_args(argv)
    tasks = args.tasks.split(",")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    sys.path.insert(0, str(TASK_DIR))
    for task in tasks:
        print(f"{task} typical: {check_typical(task, args.draws)}", flush=True)
    for task in (t for t in tasks if t in ("sir", "lotka_volterra")):
        for line in check_ode(task, args.ode_draws):
            print(f"{task} ode {line}", flush=True)
    if args.wheel:
        with tempfile.TemporaryDirectory() as tmp:
            zipfile.ZipFile(args.wheel).extractall(tmp)
            for line in check_constants(Path(tmp)):
                print(f"constants: {line}", flush=True)
            try:
                sbibm = import_sbibm(Path(tmp))
            except ImportError as exc:
                print(f"sbibm's simulators not run ({exc}; pip install pyro-ppl)")
                return
            for task in (t for t in tasks if t in NO_JULIA):
                result = check_against_sbibm(sbibm, task, args.draws, args.c2st)
                print(f"{task} vs sbibm: {result}", flush=True)


if __name__ == "__main__":
    main()
