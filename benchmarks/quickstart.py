"""The README's quickstart fit (examples/hier_gauss, N = 1,000) against the model's
exact posterior, with its wall time and peak memory (docs/accuracy.md).

    python benchmarks/quickstart.py [--out DIR] [--steps N]     # simulate, fit, score
    python benchmarks/quickstart.py --score DIR --data data.npz  # score an existing fit

Runs exactly the README's two commands,

    himdsl simulate examples/hier_gauss/model.him -o DIR/data.npz --rows 1000 --seed 1
    himdsl fit examples/hier_gauss/model.him DIR/data.npz --out DIR/fit

timing the fit (wall seconds) and reading its peak resident memory from the
kernel's accounting of that process (what `/usr/bin/time -v` reports as "Maximum
resident set size"), then scores the fit folder against the conjugate posterior:
β ~ N(Σx / (1.25 + N), 1.25 / (1.25 + N)) per coordinate; z_n's mean
(β̂ + 4 x_n) / 5 and sd √(0.2 + Var β / 25). Prints one JSON line: β's mean errors
in posterior sds and sd ratios (posterior.npz), z's posterior-mean RMSE in sds and
sd ratio (locals.npz, benchmarks/metrics.local_scores), the fit's exit status (0:
every check passed), seconds and peak MiB. `--steps` is for smoke runs only.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.metrics import local_scores  # noqa: E402

MODEL = "examples/hier_gauss/model.him"


def exact_posterior(x: np.ndarray) -> dict:
    """The conjugate model's posterior (examples/hier_gauss/model.him's header)."""
    n = len(x)
    var = 1.25 / (1.25 + n)
    beta_mean = x.sum(0) / (1.25 + n)
    return {"beta_mean": beta_mean, "beta_sd": np.full(x.shape[1], math.sqrt(var)),
            "z_mean": (beta_mean + 4 * x) / 5, "z_sd": np.full(x.shape, math.sqrt(0.2 + var / 25))}


def score(fit_dir: Path, data: Path) -> dict:
    """The fit folder's posterior.npz and locals.npz against the exact posterior."""
    x = np.load(data)["x"].astype(np.float64)
    exact = exact_posterior(x)
    beta = np.load(fit_dir / "posterior.npz")["beta"].astype(np.float64)
    z = np.load(fit_dir / "locals.npz")
    local = local_scores(z["z_mean"], z["z_sd"], exact["z_mean"], exact["z_sd"])
    return {"beta_mean_error_in_sd": np.round((beta.mean(0) - exact["beta_mean"]) / exact["beta_sd"], 3).tolist(),
            "beta_sd_ratio": np.round(beta.std(0) / exact["beta_sd"], 3).tolist(),
            "z_rmse_in_sd": round(local["rmse_in_sd"], 3), "z_sd_ratio": round(local["sd_ratio"], 3)}


def timed(command: list[str]) -> tuple[int, float, float]:
    """Exit status, wall seconds and peak resident MiB of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("quickstart_run"), help="folder for data.npz and fit/")
    p.add_argument("--steps", type=int, help="fit steps (smoke runs only; the default is the README's fit)")
    p.add_argument("--score", type=Path, help="only score this existing fit folder (needs --data)")
    p.add_argument("--data", type=Path, help="the data the --score folder was fitted to")
    args = p.parse_args(argv)
    if args.score:
        if not args.data:
            p.error("--score needs --data")
        out = score(args.score, args.data)
    else:
        himdsl = shutil.which("himdsl") or "himdsl"
        args.out = args.out.resolve()
        args.out.mkdir(parents=True, exist_ok=True)
        data, fit_dir = args.out / "data.npz", args.out / "fit"
        subprocess.run([himdsl, "simulate", MODEL, "-o", str(data), "--rows", "1000", "--seed", "1"],
                       cwd=ROOT, check=True)
        command = [himdsl, "fit", MODEL, str(data), "--out", str(fit_dir)]
        if args.steps is not None:
            command += ["--steps", str(args.steps)]
        status, seconds, peak = timed(command)
        out = {"fit_exit_status": status, "seconds": round(seconds, 1), "peak_mib": round(peak)}
        if (fit_dir / "posterior.npz").exists():
            out.update(score(fit_dir, data))
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
