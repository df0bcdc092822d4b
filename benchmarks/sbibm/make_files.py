"""Copy the sbibm benchmark's observations and reference posteriors into the repo.

    pip download sbibm==1.1.0 --no-deps -d DIR
    python benchmarks/sbibm/make_files.py DIR/sbibm-1.1.0-py2.py3-none-any.whl

Reads the wheel directly (sbibm itself, with its pyro and Julia dependencies, is
never imported) and writes benchmarks/sbibm/<task>/obs<k>.npz for observations
1-3 of every task: `x` (float64, in the shape the task's model.him declares),
`reference` (10,000 reference posterior draws, float32) and `true_theta`
(the parameters that generated x, float64).

Two tasks are variants stored in another task's folder of the wheel, with their
own observation file and the shared reference (the extra dimensions carry no
information about the parameters, so the posterior is the same):
slcp_distractors (slcp, observation_distractors.csv) and bernoulli_glm_raw
(bernoulli_glm, observation_raw.csv).
"""
from __future__ import annotations

import bz2
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OBSERVATIONS = (1, 2, 3)

# task: (folder in the wheel, observation file, shape of x in model.him)
TASKS = {
    "two_moons": ("two_moons", "observation.csv", (2,)),
    "gaussian_linear": ("gaussian_linear", "observation.csv", (10,)),
    "gaussian_linear_uniform": ("gaussian_linear_uniform", "observation.csv", (10,)),
    "slcp": ("slcp", "observation.csv", (4, 2)),
    "slcp_distractors": ("slcp", "observation_distractors.csv", (100,)),
    "bernoulli_glm": ("bernoulli_glm", "observation.csv", (10,)),
    "bernoulli_glm_raw": ("bernoulli_glm", "observation_raw.csv", (100,)),
    "gaussian_mixture": ("gaussian_mixture", "observation.csv", (2,)),
    "sir": ("sir", "observation.csv", (10,)),
    "lotka_volterra": ("lotka_volterra", "observation.csv", (20,)),
}


def read_csv(wheel: zipfile.ZipFile, name: str) -> np.ndarray:
    """A csv of sbibm's (one header row, then rows of numbers) as a 2-d float64 array."""
    raw = wheel.read(name)
    if name.endswith(".bz2"):
        raw = bz2.decompress(raw)
    return np.loadtxt(io.BytesIO(raw), delimiter=",", skiprows=1, ndmin=2)


def task_arrays(wheel: zipfile.ZipFile, task: str, k: int) -> dict[str, np.ndarray]:
    folder, observation, shape = TASKS[task]
    base = f"sbibm/tasks/{folder}/files/num_observation_{k}/"
    x = read_csv(wheel, base + observation).reshape(shape)
    reference = read_csv(wheel, base + "reference_posterior_samples.csv.bz2").astype(np.float32)
    true_theta = read_csv(wheel, base + "true_parameters.csv")[0]
    if reference.shape != (10_000, true_theta.size):
        raise SystemExit(f"{task} obs {k}: reference has shape {reference.shape}")
    return {"x": x, "reference": reference, "true_theta": true_theta}


def main(wheel_path: str) -> None:
    with zipfile.ZipFile(wheel_path) as wheel:
        for task in TASKS:
            for k in OBSERVATIONS:
                arrays = task_arrays(wheel, task, k)
                out = HERE / task / f"obs{k}.npz"
                out.parent.mkdir(exist_ok=True)
                np.savez_compressed(out, **arrays)
                print(f"wrote {out.relative_to(HERE.parent.parent)}: x {arrays['x'].shape}, "
                      f"reference {arrays['reference'].shape}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
