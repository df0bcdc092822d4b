"""The one table of built-in distributions, functions, layers and activations.

Every other stage (checker, code generator, runtime) reads these tables; nothing
else lists them.
"""
from __future__ import annotations

from dataclasses import dataclass

KEYWORDS = frozenset(
    "model const data latent param noise let observe plate over extern from guide ratio fit".split()
)


@dataclass(frozen=True)
class DistSpec:
    """A distribution: its parameters in positional order and what it draws."""

    name: str
    params: tuple[str, ...]
    dtype: str = "real"  # real | int | cat
    # alternative parameterisations that replace the first parameter (probs | logits)
    alternatives: tuple[str, ...] = ()
    # for Categorical: the last axis of the parameter is the category axis
    categorical: bool = False

    @property
    def discrete(self) -> bool:
        return self.dtype != "real"

    def signatures(self) -> list[tuple[str, ...]]:
        """Every accepted parameter tuple, e.g. (probs,) and (logits,)."""
        return [self.params] + [(alt,) + self.params[1:] for alt in self.alternatives]


DISTRIBUTIONS: dict[str, DistSpec] = {
    spec.name: spec
    for spec in [
        DistSpec("Normal", ("loc", "scale")),
        DistSpec("Uniform", ("low", "high")),
        DistSpec("LogNormal", ("loc", "scale")),
        DistSpec("HalfNormal", ("scale",)),
        DistSpec("Exponential", ("rate",)),
        DistSpec("Gamma", ("concentration", "rate")),
        DistSpec("Beta", ("a", "b")),
        DistSpec("Laplace", ("loc", "scale")),
        DistSpec("StudentT", ("df", "loc", "scale")),
        DistSpec("Gumbel", ("loc", "scale")),
        DistSpec("Bernoulli", ("probs",), "int", ("logits",)),
        DistSpec("Categorical", ("probs",), "cat", ("logits",), categorical=True),
        DistSpec("Poisson", ("rate",), "int"),
    ]
}

ACTIVATIONS = ("relu", "tanh", "sigmoid", "softplus", "elu", "gelu", "identity")

# Elementwise functions of one argument; the second item says whether the result
# keeps an integer dtype (abs of an int is an int, exp of an int is real).
UNARY = {
    "exp": False, "log": False, "sqrt": False, "abs": True, "sin": False, "cos": False,
    "tan": False, "tanh": False, "sigmoid": False, "softplus": False, "relu": True,
    "floor": True, "sign": True,
}
# Functions with zero or undefined gradient: a path through them carries no gradient.
NON_DIFFERENTIABLE = frozenset({"floor", "sign", "argmax", "onehot"})

ELEMENTWISE_NARY = {"clamp": 3, "where": 3, "min": 2, "max": 2}
REDUCTIONS = ("sum", "mean", "prod", "logsumexp")
LAST_AXIS = ("softmax", "argmax")
VARIADIC = ("concat", "stack")
STRUCTURAL = {"onehot": 2, "reshape": 2}
LAYERS = ("dense", "mlp", "layernorm")

FUNCTIONS = frozenset(
    list(UNARY) + list(ELEMENTWISE_NARY) + list(REDUCTIONS) + list(LAST_AXIS)
    + list(VARIADIC) + list(STRUCTURAL) + list(LAYERS)
)

# Names a user may not take for a node: they would shadow a built-in.
RESERVED_NAMES = frozenset(FUNCTIONS | set(DISTRIBUTIONS) | set(ACTIVATIONS))

GUIDE_FAMILIES = ("auto", "flow", "mvnormal", "normal", "point", "implicit")
GUIDE_OPTIONS = {"implicit": ("hidden", "noise"), "flow": ("layers", "hidden")}
# options of a local latent's guide (`normal` is then an amortised conditional Gaussian)
LOCAL_GUIDE_OPTIONS = {"implicit": ("hidden", "noise"), "normal": ("hidden",)}
RATIO_KEYS = {"hidden": "list", "loss": ("log", "hinge"), "mode": ("auto", "empirical", "contrastive")}
FIT_KEYS = {
    "steps": "int", "batch": "int", "particles": "int", "lr": "real", "ratio_lr": "real",
    "samples": "int", "seed": "int",
}
