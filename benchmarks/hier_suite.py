"""The hierarchical suite: himdsl's default fit against NUTS reference posteriors.

    python benchmarks/hier_suite.py [--models a,b] [--seeds 0,1] [--steps N] [--json out.json]

Models, data and references live in benchmarks/hier_suite/<name>/ (its README
says how they were made). Every fit uses `FitSettings(seed=seed)` and nothing
else: the suite measures what a user gets without tuning. `--steps` exists only
for smoke runs; its scores are not results. Targets: globals C2ST <= 0.55;
locals mean RMSE < 0.1 reference sd and sd ratio within 15 %.

A model whose import, fit or scoring raises is reported with the exception and
the suite goes on (the inference code may be mid-rewrite).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "hier_suite"
sys.path.insert(0, str(ROOT))

from benchmarks.metrics import c2st, local_scores, marginal_scores, worst_marginals  # noqa: E402

GLOBAL_DRAWS = 10_000
LOCAL_DRAWS = 256
TARGETS = {"c2st": 0.55, "local_rmse_in_sd": 0.1, "local_sd_tolerance": 0.15}


def available_models() -> list[str]:
    """Every folder with a model and a reference is part of the suite."""
    return sorted(p.name for p in SUITE.iterdir() if (p / "model.him").exists() and (p / "reference.npz").exists())


def load_case(name: str) -> tuple[dict, dict]:
    """The model's data and its NUTS reference, as numpy arrays."""
    folder = SUITE / name
    return dict(np.load(folder / "data.npz")), dict(np.load(folder / "reference.npz"))


def reference_globals(reference: dict) -> list[str]:
    """Globals are the reference's arrays that are not a local's moments."""
    return [k for k in reference if not k.endswith(("_mean", "_sd"))]


def reference_locals(reference: dict) -> list[str]:
    return [k[:-5] for k in reference if k.endswith("_mean")]


# ---- scores (pure numpy: they work on any draws, e.g. fake ones in a test)

def global_marginals(draws: dict, reference: dict) -> tuple[list[str], np.ndarray, np.ndarray,
                                                              np.ndarray, np.ndarray]:
    """(column names, each column's mean error in reference sds, sd ratio, the draws
    and the reference as [n, columns] arrays) of every global, a vector's by element."""
    names = reference_globals(reference)
    q = np.concatenate([_columns(draws[n]) for n in names], axis=1)
    ref = np.concatenate([_columns(reference[n]) for n in names], axis=1)
    mean_err, sd_ratio = marginal_scores(q, ref)
    columns = [f"{n}[{i}]" if _columns(reference[n]).shape[1] > 1 else n
               for n in names for i in range(_columns(reference[n]).shape[1])]
    return columns, mean_err, sd_ratio, q, ref


def score_globals(draws: dict, reference: dict) -> dict:
    """C2ST of all globals jointly, and each global's mean error and sd ratio."""
    columns, mean_err, sd_ratio, q, ref = global_marginals(draws, reference)
    worst_error, worst_ratio = worst_marginals(mean_err, sd_ratio)
    return {"c2st": round(c2st(q, ref), 4),
            "mean_error_in_sd": dict(zip(columns, np.round(mean_err, 3).tolist())),
            "sd_ratio": dict(zip(columns, np.round(sd_ratio, 3).tolist())),
            "worst_mean_error_in_sd": round(abs(worst_error), 3),
            "worst_sd_ratio": round(worst_ratio, 3)}


def score_locals(moments: dict, reference: dict) -> dict:
    """Each local's posterior means and sds per row against NUTS; the worst local."""
    per_local = {name: local_scores(moments[f"{name}_mean"], moments[f"{name}_sd"],
                                    reference[f"{name}_mean"], reference[f"{name}_sd"])
                 for name in reference_locals(reference)}
    if not per_local:
        return {}
    return {"locals": {k: {m: round(v, 4) for m, v in s.items()} for k, s in per_local.items()},
            "local_rmse_in_sd": round(max(s["rmse_in_sd"] for s in per_local.values()), 4),
            "local_sd_ratio": round(max((s["sd_ratio"] for s in per_local.values()),
                                        key=lambda r: abs(np.log(r))), 4)}


def meets_targets(row: dict) -> bool:
    ok = row.get("c2st", 1.0) <= TARGETS["c2st"]
    if "local_rmse_in_sd" in row:
        ok &= row["local_rmse_in_sd"] < TARGETS["local_rmse_in_sd"]
        ok &= abs(row["local_sd_ratio"] - 1) <= TARGETS["local_sd_tolerance"]
    return bool(ok)


def _columns(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), -1)


# ---- one fit

def fit_model(name: str, data: dict, seed: int, steps: int | None, overrides: dict | None = None):
    """The default fit (`overrides`: settings compared against the defaults, printed);
    imported here so that a broken himdsl fails one row, not the suite."""
    import himdsl
    from himdsl.infer import FitSettings, fit

    module = himdsl.load(str(SUITE / name / "model.him")).module()
    options = dict(overrides or {}, seed=seed)
    if steps is not None:
        options["steps"] = steps
    settings = FitSettings(**options)
    start = time.perf_counter()
    result = fit(module, data, settings)
    return result, time.perf_counter() - start


def fit_record(result) -> dict:
    """What the fit chose (its plan) and what its own checks concluded."""
    out = {}
    plan = getattr(result, "plan", None)
    if plan is not None:
        plan = plan.to_dict()
        out["method"] = plan.get("method")
        if "ratio" in plan:
            out["ratio"] = plan["ratio"]
    verdict = getattr(result, "verdict", None)
    if verdict is not None:
        out["verdict"] = verdict.to_dict()
    return out


def run_case(name: str, seed: int, steps: int | None, overrides: dict | None = None) -> dict:
    row = {"model": name, "seed": seed}
    try:
        data, reference = load_case(name)
        result, seconds = fit_model(name, data, seed, steps, overrides)
        row.update(fit_record(result), seconds=round(seconds, 1))
        start = time.perf_counter()
        row.update(score_globals(result.posterior(GLOBAL_DRAWS), reference))
        row.update(score_locals(result.locals(data, draws=LOCAL_DRAWS), reference))
        row["score_seconds"] = round(time.perf_counter() - start, 1)
        row["meets_targets"] = meets_targets(row)
    except Exception as exc:  # noqa: BLE001 - one broken model must not stop the suite
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc(limit=-4)
    return row


# ---- report

COLUMNS = ("model", "seed", "globals C2ST", "worst global err (sd)", "worst sd ratio",
           "locals RMSE (sd)", "locals sd ratio", "seconds", "checks failed", "targets")


def table_row(row: dict) -> str:
    if "error" in row:
        cells = [row["model"], row["seed"], f"error: {row['error'].splitlines()[0][:100]}"] + [""] * 7
    else:
        verdict = row.get("verdict", {})
        failed = [c["name"] for c in verdict.get("checks", []) if not c["ok"] and not c.get("advisory")]
        verdict = ", ".join(failed) or ("none" if verdict else "")
        cells = [row["model"], row["seed"], row["c2st"], row["worst_mean_error_in_sd"], row["worst_sd_ratio"],
                 row.get("local_rmse_in_sd", ""), row.get("local_sd_ratio", ""), row["seconds"], verdict,
                 "met" if row["meets_targets"] else "missed"]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(rows: list[dict]) -> str:
    head = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(head + [table_row(r) for r in rows])


def versions() -> dict:
    out = {"numpy": np.__version__}
    for module in ("torch", "himdsl"):
        try:
            out[module] = __import__(module).__version__
        except Exception as exc:  # noqa: BLE001
            out[module] = f"unavailable ({type(exc).__name__})"
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated names (default: every model with a reference)")
    parser.add_argument("--seeds", default="0", help="comma-separated fit seeds")
    parser.add_argument("--steps", type=int, help="override the default steps (smoke runs only)")
    parser.add_argument("--json", type=Path, help="write every row and the settings here")
    parser.add_argument("--settings", type=json.loads, default={},
                        help="JSON FitSettings fields to compare with the defaults (not the benchmark)")
    args = parser.parse_args(argv)
    args.models = args.models.split(",") if args.models else available_models()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    unknown = sorted(set(args.models) - set(available_models()))
    if unknown:
        parser.error(f"unknown models {unknown}; known: {available_models()}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)     # small networks: one thread is faster on a shared CPU
    except ImportError:
        pass
    if args.steps is not None:
        print(f"NOTE: --steps {args.steps} overrides the default steps: a smoke run, not a benchmark result")
    if args.settings:
        print(f"NOTE: --settings {json.dumps(args.settings)} changes the defaults: a comparison, not the benchmark")
    rows = []
    for name in args.models:
        for seed in args.seeds:
            rows.append(run_case(name, seed, args.steps, args.settings))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "traceback"}), flush=True)
    print()
    print(markdown(rows))
    if args.json:
        out = {"argv": argv, "steps": args.steps, "settings": args.settings, "targets": TARGETS, "versions": versions(), "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
