"""q against the ratio's own posterior on a plate: one default fit of a suite model
with no locals, scored against NUTS twice, as q's draws and as q's draws
importance-resampled to the posterior the ratio defines (the prior times
exp(Σ_n r(x_n, β)), which on a plate the fit weighs for its check but does not
draw from), with the weights' Pareto k̂.

    python benchmarks/plate_ratio_posterior.py dose_response [--seed 0] [--weighed 40000] [--every 250] [--curvature] [--identity] [--corrected] [--spread 6]

Which of the two is nearer NUTS says whether q (its family, its fitting) or the
ratio is what a missed target comes from. With `--every K`, both are also scored
every K steps after the warm-up (4,000 draws weighed; means and sds only), with the
random stream restored after each look, so that the fit is the default one: how
q and the ratio's posterior move while the ratio trains. With `--curvature`, the
ratio's summed log likelihood is set against the exact one (the NumPyro twin of
references.py) at 2,000 NUTS draws: each fitted by a quadratic in q's coordinates,
the curvature along the likelihood's principal directions, exact and the ratio's.
With `--identity`, Fisher's information identity is tested on the ratio itself:
on rows simulated at q's draws, the covariance of its score in q's coordinates
against minus its mean Hessian, equal for any likelihood; this needs no reference.
With `--corrected`, q's draws are also scored with the curvature the ratio gave
them replaced by the one its score's variance gives (`score_corrected`).
With `--spread R`, k̂ of R independent weighings of the check's number of draws and
of four times as many: how much one k̂ varies with the weighing's random stream,
and whether the weights' tail grows further out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import hier_suite  # noqa: E402

LOOK_DRAWS = 4_000


def resampled_draws(trainer, result, weighed: int, num: int) -> tuple[dict, float]:
    """`num` draws resampled from `weighed` of q's by their PSIS weights to the
    ratio's posterior, whatever k̂ (reported beside them)."""
    from himdsl.infer.covering import ratio_posterior
    from himdsl.infer.importance import weigh

    guide = result.global_guide
    _, log_posterior_u = ratio_posterior(trainer.model, guide, trainer.ratio)
    with torch.no_grad():
        u, weights, report = weigh(guide, log_posterior_u, weighed)
        index = np.random.default_rng(0).choice(len(weights), num, p=weights)
        globals, _ = guide.constrain(u[torch.as_tensor(index)])
    return {name: value.numpy() for name, value in globals.items()}, report.khat


def marginals(draws: dict, reference: dict) -> str:
    """Each global's mean error (reference sds) and sd ratio, on one line."""
    columns, error, ratio, _, _ = hier_suite.global_marginals(draws, reference)
    return "  ".join(f"{c} {e:+.2f} x{r:.2f}" for c, e, r in zip(columns, error, ratio))


def trajectory_callback(trainer, reference: dict, every: int):
    """A fit callback that prints q's and the ratio's posterior every `every` steps
    after the warm-up, leaving the fit's random stream as it found it."""
    def look(row) -> None:
        if row.step % every or row.step <= trainer.plan.warmup_steps:
            return
        state = torch.get_rng_state()
        result = trainer.result()
        with torch.no_grad():
            q = {k: v.numpy() for k, v in result.global_guide.rsample(LOOK_DRAWS)[0].items()}
        draws, khat = resampled_draws(trainer, result, LOOK_DRAWS, LOOK_DRAWS)
        torch.set_rng_state(state)
        print(f"step {row.step}: q  {marginals(q, reference)}  |  ratio's  {marginals(draws, reference)}"
              f"  (k̂ {khat:.2f})", flush=True)
    return look


def exact_log_likelihood(name: str, data: dict, draws: dict) -> np.ndarray:
    """Σ_n log p(x_n | β) at each of `draws` ({global: [K, ...]}), from the model's
    NumPyro twin (references.py), whose likelihood is the simulator's, explicit."""
    import importlib.util

    import jax
    from numpyro.handlers import substitute, trace

    spec = importlib.util.spec_from_file_location("hier_suite_references", hier_suite.SUITE / "references.py")
    references = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(references)
    model = references.TWINS[name].model

    def one(values):
        sites = trace(substitute(model, data=values)).get_trace(data)
        return sum(site["fn"].log_prob(site["value"]).sum() for site in sites.values()
                   if site["type"] == "sample" and site.get("is_observed"))

    return np.asarray(jax.vmap(one)({k: np.asarray(v, np.float64) for k, v in draws.items()}))


def quadratic_fit(u: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, float]:
    """The Hessian [D, D] of the least-squares quadratic in u [K, D] through `value`
    [K], and the residual's sd (what no quadratic explains)."""
    centred = u - u.mean(0)
    dim = u.shape[1]
    pairs = [(i, j) for i in range(dim) for j in range(i, dim)]
    design = np.concatenate([np.ones((len(u), 1)), centred,
                             np.stack([centred[:, i] * centred[:, j] for i, j in pairs], 1)], 1)
    coef, *_ = np.linalg.lstsq(design, value, rcond=None)
    hessian = np.zeros((dim, dim))
    for c, (i, j) in zip(coef[1 + dim:], pairs):
        hessian[i, j] = hessian[j, i] = 2 * c if i == j else c
    return hessian, float((value - design @ coef).std())


def curvature(trainer, name: str, data: dict, reference: dict, num: int = 2_000) -> str:
    """The ratio's summed log likelihood against the exact one over `num` NUTS draws,
    each fitted by a quadratic in q's coordinates u: the exact curvature along its own
    principal directions (least curved first) beside the ratio's along the same
    directions. A ratio flatter than the likelihood along a direction leaves the
    posterior too wide there; a residual of several nats, a ratio that is not smooth."""
    from himdsl.infer.covering import ratio_posterior

    names = hier_suite.reference_globals(reference)
    index = np.random.default_rng(0).permutation(len(reference[names[0]]))[:num]
    draws = {n: reference[n][index] for n in names}
    prior_u, log_posterior_u = ratio_posterior(trainer.model, trainer.global_guide, trainer.ratio)
    with torch.no_grad():
        u = trainer.global_guide.flat_u({n: torch.as_tensor(v, dtype=torch.float32) for n, v in draws.items()})
        ratio_ll = (log_posterior_u(u) - prior_u(u)[1]).double().numpy()
    exact_hessian, exact_residual = quadratic_fit(u.double().numpy(), exact_log_likelihood(name, data, draws))
    ratio_hessian, ratio_residual = quadratic_fit(u.double().numpy(), ratio_ll)
    curv, directions = np.linalg.eigh(-exact_hessian)
    along = np.diag(directions.T @ -ratio_hessian @ directions)
    return (f"curvature along the likelihood's principal directions (least curved first): exact "
            f"{np.array2string(curv, precision=1)}, ratio {np.array2string(along, precision=1)}; "
            f"residual sd exact {exact_residual:.2f}, ratio {ratio_residual:.2f} nats")


def information_identity(trainer) -> str:
    """Fisher's identity for the ratio (himdsl/infer/identity.py, the check "ratio is a
    likelihood") on one line: the eigenvalues, their standard errors, the direction of
    the one furthest from 1."""
    from himdsl.infer.identity import information_identity as identity

    report = identity(trainer)
    return (f"information identity over {report.rows:,} rows simulated at q's draws: eigenvalues of "
            f"(-E r'')^-1 E[r' r'^T] {np.array2string(report.values, precision=3)} (1 for a likelihood; "
            f"standard errors {np.array2string(report.errors, precision=3)}); the furthest from 1 along "
            f"{report.describe(int(np.argmax(np.abs(np.log(np.abs(report.values))))))}")


def score_corrected(trainer, result, reference: dict) -> str:
    """q's draws with the precision the ratio's curvature gave replaced by what its
    score's variance gives (Fisher's identity: equal for a likelihood): in q's
    coordinates u, precision Σ_q⁻¹ + N (E[r' r'ᵀ] − (−E r'')), the draws mapped
    linearly from q's; scored against NUTS. A reading of the identity's evidence,
    not something fit does."""
    from himdsl.infer.identity import information_identity as identity

    report = identity(trainer)
    guide = result.global_guide
    with torch.no_grad():
        u = guide.rsample(hier_suite.GLOBAL_DRAWS)[2].double().numpy()
    if len(report.labels) != u.shape[1]:
        return "corrected: some coordinate carries no curvature; not applied"
    mean, cov = u.mean(0), np.cov(u.T)
    precision = np.linalg.inv(cov) + trainer.view.n_rows * (report.second - report.curvature)
    if np.linalg.eigvalsh(precision).min() <= 0:
        return "corrected: the corrected precision is not positive definite; not applied"
    whiten = np.linalg.cholesky(np.linalg.inv(cov))           # L with L Lᵀ = Σ_q⁻¹
    colour = np.linalg.cholesky(np.linalg.inv(precision))
    moved = mean + ((u - mean) @ whiten) @ colour.T
    with torch.no_grad():
        globals, _ = guide.constrain(torch.as_tensor(moved, dtype=torch.float32))
    scores = hier_suite.score_globals({k: v.numpy() for k, v in globals.items()}, reference)
    keys = ("c2st", "mean_error_in_sd", "sd_ratio")
    return "corrected " + json.dumps({k: scores.get(k) for k in keys})


def khat_spread(trainer, result, repeats: int) -> str:
    """k̂ of `repeats` independent weighings at the plate check's draws and at 4×."""
    from himdsl.infer.covering import ratio_posterior
    from himdsl.infer.importance import weigh

    guide = result.global_guide
    _, log_posterior_u = ratio_posterior(trainer.model, guide, trainer.ratio)
    lines = []
    for draws in (trainer.plan.weigh_draws, 4 * trainer.plan.weigh_draws):
        with torch.no_grad():
            khats = [weigh(guide, log_posterior_u, draws)[2].khat for _ in range(repeats)]
        lines.append(f"khat over {draws:,} draws, {repeats} weighings: "
                     + " ".join(f"{k:.2f}" for k in khats) + f"  (median {np.median(khats):.2f})")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=hier_suite.available_models())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weighed", type=int, default=40_000, help="q's draws weighed")
    parser.add_argument("--every", type=int, default=0, help="also look every K steps after the warm-up")
    parser.add_argument("--curvature", action="store_true",
                        help="the ratio's log likelihood against the exact one (NumPyro twin) at NUTS draws")
    parser.add_argument("--identity", action="store_true",
                        help="Fisher's information identity for the ratio on simulations at q's draws")
    parser.add_argument("--corrected", action="store_true",
                        help="also score q's draws with the ratio's curvature replaced by its score's variance")
    parser.add_argument("--spread", type=int, default=0,
                        help="k̂ of this many independent weighings at the check's draws and at 4x")
    args = parser.parse_args(argv)
    import himdsl
    from himdsl.infer import FitSettings
    from himdsl.infer.trainer import Trainer

    data, reference = hier_suite.load_case(args.model)
    module = himdsl.load(str(hier_suite.SUITE / args.model / "model.him")).module()
    trainer = Trainer(module, data, FitSettings(seed=args.seed))
    if trainer.view.z_blocks or trainer.plan.ratio != "contrastive":
        parser.error(f"{args.model} has locals or no contrastive ratio: its ratio defines no posterior of the globals")
    result = trainer.run(trajectory_callback(trainer, reference, args.every) if args.every else None)
    keys = ("c2st", "mean_error_in_sd", "sd_ratio")
    # q's draws first, as the suite draws them (the weighing below moves the random stream)
    q_scores = hier_suite.score_globals(result.posterior(hier_suite.GLOBAL_DRAWS), reference)
    draws, khat = resampled_draws(trainer, result, args.weighed, hier_suite.GLOBAL_DRAWS)
    for label, scores in (("q", q_scores), ("resampled", hier_suite.score_globals(draws, reference))):
        print(label, json.dumps({k: scores.get(k) for k in keys}))
    print(f"khat {khat:.3f} over {args.weighed:,} draws; checks ok: {result.verdict.ok}")
    for check in result.verdict.checks:
        if not check.advisory:
            print(f"check {check.name}: {'passed' if check.ok else 'FAILED'} ({check.value:.3g})")
    if args.curvature:
        print(curvature(trainer, args.model, data, reference))
    if args.identity:
        print(information_identity(trainer))
    if args.corrected:
        print(score_corrected(trainer, result, reference))
    if args.spread:
        print(khat_spread(trainer, result, args.spread))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
