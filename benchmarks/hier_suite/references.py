"""NUTS reference posteriors for the hierarchical suite (NumPyro, CPU jax).

    python benchmarks/hier_suite/references.py [names...]

Each `.him` model has a NumPyro twin here: the same priors, and the explicit
likelihood the simulator draws from (Normal, Bernoulli(logits), Poisson,
StudentT, Binomial). A twin may be non-centred where the posterior is a funnel:
the reference needs the right posterior, not the same parameterisation (the
centred site is kept as a deterministic, so names match the `.him` file).

Writes `<name>/reference.npz` (float32: DRAWS draws of every global, in its
support; `<local>_mean` and `<local>_sd` per row for every local) and
`<name>/reference.json` (R-hat, ESS, divergences, seconds, versions, command).
A model whose max R-hat reaches RHAT_MAX is reported and not written.
"""
from __future__ import annotations

import os

# Small models: one XLA thread is as fast and leaves the machine's other core free.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.diagnostics import summary  # noqa: E402
from numpyro.handlers import reparam  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402
from numpyro.infer.reparam import LocScaleReparam  # noqa: E402

numpyro.enable_x64()   # long chains in float32 pick up energy errors in the 1,000-school funnel

SUITE = Path(__file__).resolve().parent
CHAINS, WARMUP, DRAWS_PER_CHAIN = 4, 2000, 2500
DRAWS = CHAINS * DRAWS_PER_CHAIN          # 10,000 reference draws
RHAT_MAX = 1.01
SEED = 0


# ---- the twins: priors as in model.him, the simulator's likelihood made explicit

def schools(d):
    """eight_schools and schools_1000: y_j = theta_j + sigma_j e."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(5.0))
    with numpyro.plate("j", len(d["y"])):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, d["sigma"]), obs=d["y"])


def schools_covariate(d):
    """y_ji = theta_j + sigma e_ji, theta_j ~ Normal(mu + b ses_j, tau)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    b = numpyro.sample("b", dist.Normal(0.0, 10.0))
    tau = numpyro.sample("tau", dist.HalfNormal(5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    with numpyro.plate("j", len(d["y"])):
        theta = numpyro.sample("theta", dist.Normal(mu + b * d["ses"], tau))
        numpyro.sample("y", dist.Normal(theta[:, None], sigma).to_event(1), obs=d["y"])


def hier_logistic(d):
    """(u < sigmoid(eta)) with u ~ Uniform(0, 1) is Bernoulli(logits = eta)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    with numpyro.plate("g", len(d["y"])):
        a = numpyro.sample("a", dist.Normal(mu, sigma))
        logits = a[:, None] + b * d["x"]
        numpyro.sample("y", dist.Bernoulli(logits=logits).to_event(1), obs=d["y"])


def poisson_re(d):
    """Already non-centred in the .him file: v_g ~ Normal(0, 1), log rate mu + sigma v_g."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("g", len(d["y"])):
        v = numpyro.sample("v", dist.Normal(0.0, 1.0))
        rate = d["exposure"] * jnp.exp(mu + sigma * v)
        numpyro.sample("y", dist.Poisson(rate), obs=d["y"])


def student_t(d):
    """theta_g + s t with t ~ StudentT(4, 0, 1) is StudentT(4, theta_g, s)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(5.0))
    s = numpyro.sample("s", dist.HalfNormal(2.0))
    with numpyro.plate("g", len(d["y"])):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.StudentT(4.0, theta[:, None], s).to_event(1), obs=d["y"])


def extern_plate(d):
    """sim.binomial_count(n, a) draws Binomial(n, sigmoid(a))."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.5))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("g", len(d["y"])):
        a = numpyro.sample("a", dist.Normal(mu, sigma))
        numpyro.sample("y", dist.Binomial(d["n"], logits=a), obs=d["y"])


def site_counts(d):
    """Poisson(e^a g) with g ~ Gamma(phi, phi) is negative binomial: GammaPoisson(phi, phi e^-a)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    phi = numpyro.sample("phi", dist.Gamma(2.0, 0.2))
    with numpyro.plate("s", len(d["y"])):
        a = numpyro.sample("a", dist.Normal(mu, tau))
        rate = phi * jnp.exp(-a)
        numpyro.sample("y", dist.GammaPoisson(phi, rate[:, None]).to_event(1), obs=d["y"])


def site_visits(d):
    """Poisson(e^log_lam g) with g ~ Gamma(phi, phi): GammaPoisson(phi, phi e^-log_lam)."""
    mu = numpyro.sample("mu", dist.Normal(1.0, 1.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    phi = numpyro.sample("phi", dist.LogNormal(1.0, 1.0))
    with numpyro.plate("site", len(d["y"])):
        log_lam = numpyro.sample("log_lam", dist.Normal(mu + beta * d["elev"], sigma))
        rate = phi * jnp.exp(-log_lam)
        numpyro.sample("y", dist.GammaPoisson(phi, rate[:, None]).to_event(1), obs=d["y"])


def hier_linreg(d):
    """y = a_g + b_g x + sigma e: Normal(a_g + b_g x, sigma)."""
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 5.0))
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 2.0))
    tau_a = numpyro.sample("tau_a", dist.HalfNormal(2.0))
    tau_b = numpyro.sample("tau_b", dist.HalfNormal(1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("g", len(d["y"])):
        a = numpyro.sample("a", dist.Normal(mu_a, tau_a))
        b = numpyro.sample("b", dist.Normal(mu_b, tau_b))
        mean = a[:, None] + b[:, None] * d["x"]
        numpyro.sample("y", dist.Normal(mean, sigma).to_event(1), obs=d["y"])


def robust_regression(d):
    """y = a + b x + where(u < w, 10 sigma o, sigma t): the mixture of
    StudentT(df, a + b x, sigma) (weight 1 − w) and Normal(a + b x, 10 sigma) (weight w)."""
    a = numpyro.sample("a", dist.Normal(0.0, 5.0))
    b = numpyro.sample("b", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    df = numpyro.sample("df", dist.Gamma(2.0, 0.1))
    w = numpyro.sample("w", dist.Beta(1.0, 9.0))
    mean = a + b * d["xc"]
    inlier = jnp.log1p(-w) + dist.StudentT(jnp.maximum(df, 0.001), mean, sigma).log_prob(d["y"])
    outlier = jnp.log(w) + dist.Normal(mean, 10 * sigma).log_prob(d["y"])
    numpyro.factor("y", jnp.logaddexp(inlier, outlier).sum())


def dose_response(d):
    """dead = floor(u < sigmoid(eta)), u ~ Uniform(0, 1): Bernoulli(logits=eta)."""
    a0 = numpyro.sample("a0", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    sg = numpyro.sample("sg", dist.HalfNormal(1.0))
    r = numpyro.sample("r", dist.Normal(0.0, 1.0).expand([6]).to_event(1))
    eta = a0 + sg * r[d["batch"]] + b * d["dose"]
    numpyro.sample("dead", dist.Bernoulli(logits=eta), obs=d["dead"])


def poisson_regression(d):
    """k ~ Poisson(exp(a + b1 x1 + b2 x2 + log(expo))), observed as y."""
    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    b1 = numpyro.sample("b1", dist.Normal(0.0, 1.0))
    b2 = numpyro.sample("b2", dist.Normal(0.0, 1.0))
    log_rate = a + b1 * d["x1"] + b2 * d["x2"] + jnp.log(d["expo"])
    numpyro.sample("y", dist.Poisson(jnp.exp(log_rate)), obs=d["y"])


def hetero_regression(d):
    """y = a + b x + sigma exp(d x) eps, eps ~ Normal(0, 1): Normal(a + b x, sigma exp(d x))."""
    a = numpyro.sample("a", dist.Normal(0.0, 5.0))
    b = numpyro.sample("b", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    slope = numpyro.sample("d", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(a + b * d["x"], sigma * jnp.exp(slope * d["x"])), obs=d["y"])


def gamma_wait(d):
    """y = exp(a + b x) g, g ~ Gamma(k, 1): Gamma(k, rate exp(−(a + b x)))."""
    a = numpyro.sample("a", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    k = numpyro.sample("k", dist.LogNormal(0.0, 1.0))
    numpyro.sample("y", dist.Gamma(k, jnp.exp(-(a + b * d["x"]))), obs=d["y"])


def weibull_surv(d):
    """t = exp(b0 + x b) (−log u)^(1/k), u ~ Uniform(0, 1): Weibull(scale exp(b0 + x b), k)."""
    b0 = numpyro.sample("b0", dist.Normal(0.0, 2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    k = numpyro.sample("k", dist.Gamma(2.0, 1.0))
    numpyro.sample("t", dist.Weibull(jnp.exp(b0 + d["x"] @ b), k), obs=d["t"])


def location_scale(d):
    """y = mu + sigma e, e ~ Normal(0, 1): Normal(mu, sigma)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    numpyro.sample("y", dist.Normal(mu, sigma), obs=d["y"])


def michaelis_menten(d):
    """v = Vmax S / (Km + S) + sigma eps, eps ~ Normal(0, 1): Normal(Vmax S / (Km + S), sigma)."""
    vmax = numpyro.sample("Vmax", dist.LogNormal(2.0, 1.0))
    km = numpyro.sample("Km", dist.LogNormal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("v", dist.Normal(vmax * d["S"] / (km + d["S"]), sigma), obs=d["v"])


def pk_onecomp(d):
    """y = dose / V exp(−exp(logk) t) exp(sigma e), e ~ Normal(0, 1) at the 5 times t:
    LogNormal(log dose − logV − exp(logk) t, sigma)."""
    times = jnp.array([0.5, 1.0, 2.0, 4.0, 8.0])
    mu = numpyro.sample("mu_logk", dist.Normal(-1.5, 1.0))
    omega = numpyro.sample("omega", dist.HalfNormal(0.5))
    log_v = numpyro.sample("logV", dist.Normal(3.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.5))
    with numpyro.plate("subj", len(d["y"])):
        logk = numpyro.sample("logk", dist.Normal(mu, omega))
        centre = jnp.log(100.0) - log_v - jnp.exp(logk)[:, None] * times
        numpyro.sample("y", dist.LogNormal(centre, sigma).to_event(1), obs=d["y"])


@dataclass(frozen=True)
class Twin:
    """A model's NumPyro twin, its sites named as in model.him."""

    model: Callable
    globals: tuple[str, ...]
    locals: tuple[str, ...]
    noncentred: tuple[str, ...] = ()    # locals sampled as loc + scale * z (funnels)
    thin: int = 1     # keep every thin-th draw: longer chains where a global mixes slowly

    def runnable(self):
        """The model NUTS runs: non-centred sites keep their name as a deterministic."""
        if not self.noncentred:
            return self.model
        return reparam(self.model, config={name: LocScaleReparam(centered=0) for name in self.noncentred})


TWINS = {
    "eight_schools": Twin(schools, ("mu", "tau"), ("theta",), noncentred=("theta",)),
    # centred: ESS of tau 147 (R-hat 1.03); non-centred unthinned: 1,410
    "schools_1000": Twin(schools, ("mu", "tau"), ("theta",), noncentred=("theta",), thin=4),
    "schools_covariate": Twin(schools_covariate, ("mu", "b", "tau", "sigma"), ("theta",)),
    "hier_logistic": Twin(hier_logistic, ("mu", "sigma", "b"), ("a",), noncentred=("a",)),
    "poisson_re": Twin(poisson_re, ("mu", "sigma"), ("v",)),
    "student_t": Twin(student_t, ("mu", "tau", "s"), ("theta",)),
    "extern_plate": Twin(extern_plate, ("mu", "sigma"), ("a",)),    # centred mixes better here
    "site_counts": Twin(site_counts, ("mu", "tau", "phi"), ("a",)),
    "hier_linreg": Twin(hier_linreg, ("mu_a", "mu_b", "tau_a", "tau_b", "sigma"), ("a", "b")),
    "robust_regression": Twin(robust_regression, ("a", "b", "sigma", "df", "w"), ()),
    "robust_regression_let": Twin(robust_regression, ("a", "b", "sigma", "df", "w"), ()),
    "dose_response": Twin(dose_response, ("a0", "b", "sg", "r"), ()),
    "poisson_regression": Twin(poisson_regression, ("a", "b1", "b2"), ()),
    "hetero_regression": Twin(hetero_regression, ("a", "b", "sigma", "d"), ()),
    "gamma_wait": Twin(gamma_wait, ("a", "b", "k"), ()),
    "gamma_wait_let": Twin(gamma_wait, ("a", "b", "k"), ()),
    "weibull_surv": Twin(weibull_surv, ("b0", "b", "k"), ()),
    "site_visits": Twin(site_visits, ("mu", "beta", "sigma", "phi"), ("log_lam",)),
    "location_scale": Twin(location_scale, ("mu", "sigma"), ()),
    "michaelis_menten": Twin(michaelis_menten, ("Vmax", "Km", "sigma"), ()),
    "pk_onecomp": Twin(pk_onecomp, ("mu_logk", "omega", "logV", "sigma"), ("logk",), noncentred=("logk",)),
}


def run_nuts(twin: Twin, data: dict) -> tuple[dict, dict]:
    """Draws grouped by chain [C, S, ...] of the twin's globals and locals, and the divergences."""
    mcmc = MCMC(NUTS(twin.runnable()), num_warmup=WARMUP, num_samples=DRAWS_PER_CHAIN * twin.thin,
                thinning=twin.thin, num_chains=CHAINS, chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(SEED), {k: jnp.asarray(v) for k, v in data.items()},
             extra_fields=("diverging",))
    draws = mcmc.get_samples(group_by_chain=True)
    kept = {name: np.asarray(draws[name]) for name in twin.globals + twin.locals}
    return kept, {"divergences": int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())}


def diagnostics(twin: Twin, draws: dict) -> dict:
    """Split R-hat and ESS of every global (the worst over a vector's elements); the
    worst over each local's rows."""
    stats = summary(draws, group_by_chain=True)
    out = {"globals": {name: {"r_hat": _round(np.max(stats[name]["r_hat"])),
                              "ess": _round(np.min(stats[name]["n_eff"]), 0)}
                       for name in twin.globals}}
    out["locals"] = {name: {"max_r_hat": _round(np.max(stats[name]["r_hat"])),
                            "min_ess": _round(np.min(stats[name]["n_eff"]), 0)} for name in twin.locals}
    out["max_r_hat"] = max([v["r_hat"] for v in out["globals"].values()]
                           + [v["max_r_hat"] for v in out["locals"].values()])
    out["min_ess"] = min([v["ess"] for v in out["globals"].values()]
                         + [v["min_ess"] for v in out["locals"].values()])
    return out


def reference_arrays(twin: Twin, draws: dict) -> dict:
    """The reference file's content: draws of the globals, moments of the locals."""
    flat = {name: value.reshape((-1,) + value.shape[2:]) for name, value in draws.items()}
    out = {name: flat[name].astype(np.float32) for name in twin.globals}
    for name in twin.locals:
        out[f"{name}_mean"] = flat[name].mean(0).astype(np.float32)
        out[f"{name}_sd"] = flat[name].std(0, ddof=1).astype(np.float32)
    return out


def make_reference(name: str) -> dict:
    """Run NUTS for one model; write its files when the chains have mixed."""
    twin, folder = TWINS[name], SUITE / name
    data = dict(np.load(folder / "data.npz"))
    start = time.perf_counter()
    draws, extra = run_nuts(twin, data)
    seconds = time.perf_counter() - start
    record = {"model": name, **diagnostics(twin, draws), **extra, "seconds": round(seconds, 1),
              "chains": CHAINS, "warmup": WARMUP, "draws_per_chain": DRAWS_PER_CHAIN, "seed": SEED,
              "thin": twin.thin, "noncentred": list(twin.noncentred), "x64": True,
              "numpyro": numpyro.__version__, "jax": jax.__version__,
              "command": f"python benchmarks/hier_suite/references.py {name}"}
    record["ok"] = record["max_r_hat"] < RHAT_MAX
    if record["ok"]:
        np.savez_compressed(folder / "reference.npz", **reference_arrays(twin, draws))
        (folder / "reference.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _round(x, digits: int = 4) -> float:
    return round(float(x), digits)


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(TWINS))
    if unknown:
        print(f"unknown models: {', '.join(unknown)}; known: {', '.join(TWINS)}")
        return 2
    failed = []
    for name in names or list(TWINS):
        record = make_reference(name)
        status = "written" if record["ok"] else f"NOT written: max R-hat >= {RHAT_MAX}"
        print(f"{name}: max R-hat {record['max_r_hat']:.4f}, min ESS {record['min_ess']:.0f}, "
              f"divergences {record['divergences']}, {record['seconds']:.1f} s ({status})", flush=True)
        if not record["ok"]:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
