"""Copy sbibm observation 1 of two_moons and gaussian_linear into data.npz files.

    python examples/make_sbibm_data.py [SBIBM_DIR]

SBIBM_DIR defaults to the repository's benchmarks/sbibm (each task folder holds
`obs1.npz`, whose `x` is the observation; benchmarks/sbibm/README.md). Writes
examples/<task>/data.npz with one float64 array `x` of shape [2] or [10]
(the name of the models' `data` declaration).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TASKS = {"two_moons": 2, "gaussian_linear": 10}
HERE = Path(__file__).resolve().parent


def main(sbibm_dir: str = str(HERE.parent / "benchmarks" / "sbibm")) -> None:
    for task, dim in TASKS.items():
        obs = np.load(Path(sbibm_dir) / task / "obs1.npz")["x"].reshape(-1).astype(np.float64)
        if obs.shape != (dim,):
            raise SystemExit(f"{task}: expected {dim} values, got shape {obs.shape}")
        out = HERE / task / "data.npz"
        np.savez(out, x=obs)
        print(f"wrote {out.relative_to(HERE.parent)}: x = {np.array2string(obs, precision=4)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
