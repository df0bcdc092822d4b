"""slcp's posterior mode by mode, himdsl against sbibm's reference (docs/accuracy.md).

    python benchmarks/slcp_modes.py [--observation 1] [--seed 0]

slcp's likelihood reads theta[2] and theta[3] only through their squares, so its
posterior has four modes, one per pair of their signs. A C2ST says that a fit is
off, not how: this script fits the task with the defaults (as benchmarks/sbibm_suite.py
does) and prints, per mode, the share of the draws in it and the mean |theta| and
sd of each coordinate there, beside the reference's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import sbibm_suite  # noqa: E402
from benchmarks.metrics import c2st  # noqa: E402


def by_mode(draws: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """The draws [n, 5] split by the signs of theta[2] and theta[3]."""
    signs = np.sign(draws[:, 2:4])
    return {(a, b): draws[(signs[:, 0] == a) & (signs[:, 1] == b)] for a in (-1, 1) for b in (-1, 1)}


def report(draws: np.ndarray, reference: np.ndarray) -> list[str]:
    lines = [f"C2ST {c2st(draws, reference):.3f}"]
    ours, theirs = by_mode(draws), by_mode(reference)
    for mode in ours:
        q, r = ours[mode], theirs[mode]
        lines.append(f"signs {mode}: share {len(q) / len(draws):.3f} (reference {len(r) / len(reference):.3f})")
        lines.append(f"  mean |theta| {np.round(np.abs(q).mean(0), 2)} (reference {np.round(np.abs(r).mean(0), 2)})")
        lines.append(f"  sd           {np.round(q.std(0), 2)} (reference {np.round(r.std(0), 2)})")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observation", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    module = sbibm_suite.load_module("slcp")
    obs = sbibm_suite.load_observation("slcp", args.observation)
    draws, _ = sbibm_suite.fit_himdsl(module, obs["x"], args.seed, None, None)
    name = sbibm_suite.single_global(module)
    print("\n".join(report(draws[name].reshape(sbibm_suite.POSTERIOR_DRAWS, -1), obs["reference"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
