"""The structural facts the compiler emits for inference (himdsl/graph/structure.py):
which densities are known, what the likelihood reads."""
import himdsl

SCHOOLS = """
model schools
data y : real
latent mu ~ Normal(0, 5)
latent tau ~ HalfNormal(5)
plate n over y {
    latent theta ~ Normal(mu, tau)
    noise e ~ Normal(0, 1)
    observe y = theta + 2 * e
}
"""

POISSON = """
model poisson
data k : int
latent mu ~ Normal(0, 2)
latent sigma ~ HalfNormal(1)
plate n over k {
    latent v ~ Normal(0, 1)
    let logr = mu + sigma * v
    observe k ~ Poisson(exp(logr))
}
"""

NOISY_LOCAL = """
model noisy
data x : real
latent mu ~ Normal(0, 1)
plate n over x {
    noise e ~ Normal(0, 1)
    latent z ~ Normal(mu + e, 1)
    observe x ~ Normal(z, 1)
}
"""


def _module(name, source):
    return himdsl.load(f"{name}.him", source=source).module()


def test_the_likelihood_reads_the_locals_not_the_hyper_parameters():
    m = _module("schools", SCHOOLS)
    assert m.likelihood_parents == ("theta",)
    assert m.explicit_locals == ("theta",) and m.explicit_observed == ()
    assert m.local_prior_parents == {"theta": ("mu", "tau")}
    assert not m.explicit                      # the observation is a simulator


def test_an_explicit_model_and_its_likelihood_inputs():
    m = _module("poisson", POISSON)
    assert m.explicit and m.explicit_observed == ("k",)
    assert set(m.likelihood_parents) == {"mu", "sigma", "v"}
    assert m.likelihood_inputs == ("logr",)    # three latents reach k through one value


def test_a_noise_in_a_prior_makes_its_density_unknown():
    m = _module("noisy", NOISY_LOCAL)
    assert m.explicit_locals == () and not m.explicit
    assert m.explicit_observed == ("x",)
