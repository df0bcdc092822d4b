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
    # alternative names of parameter `params[alternative_of]` (probs | logits)
    alternatives: tuple[str, ...] = ()
    alternative_of: int = 0
    # parameters with trailing axes beyond the draw's element axes: Categorical's
    # category axis, the columns of MultivariateNormal's scale_tril
    extra_axes: tuple[tuple[str, int], ...] = ()
    # trailing axes of the draw that form one event (a simplex, an MVN vector): 0 or 1
    event_rank: int = 0
    # whether a local latent may have this prior: the local guides keep a draw in an
    # interval or a half-line, not on a simplex
    local: bool = True

    @property
    def discrete(self) -> bool:
        return self.dtype != "real"

    def signatures(self) -> list[tuple[str, ...]]:
        """Every accepted parameter tuple, e.g. (probs,) and (logits,)."""
        i = self.alternative_of
        return [self.params] + [self.params[:i] + (alt,) + self.params[i + 1:] for alt in self.alternatives]

    def signature(self, named) -> tuple[str, ...]:
        """The parameter tuple of a call that names the arguments `named`."""
        i = self.alternative_of
        return next((sig for sig in self.signatures()[1:] if sig[i] in named), self.params)

    def extra(self, param: str) -> int:
        """How many trailing axes `param` has beyond the draw's element axes."""
        return dict(self.extra_axes).get(param, 0)

    def param_rank(self, param: str, draw_rank: int) -> int:
        """The element rank `param` is lifted to for a draw of rank `draw_rank`."""
        return draw_rank + self.extra(param)


_PROBS = ("probs",)
_LOGITS = ("logits",)
DISTRIBUTIONS: dict[str, DistSpec] = {
    spec.name: spec
    for spec in [
        DistSpec("Normal", ("loc", "scale")),
        DistSpec("Uniform", ("low", "high")),
        DistSpec("LogNormal", ("loc", "scale")),
        DistSpec("HalfNormal", ("scale",)),
        DistSpec("HalfCauchy", ("scale",)),
        DistSpec("HalfStudentT", ("df", "scale")),
        DistSpec("Exponential", ("rate",)),
        DistSpec("Gamma", ("concentration", "rate")),
        DistSpec("Weibull", ("scale", "concentration")),
        DistSpec("Beta", ("a", "b")),
        DistSpec("Laplace", ("loc", "scale")),
        DistSpec("Cauchy", ("loc", "scale")),
        DistSpec("StudentT", ("df", "loc", "scale")),
        DistSpec("Gumbel", ("loc", "scale")),
        DistSpec("Dirichlet", ("concentration",), event_rank=1, local=False),
        DistSpec("MultivariateNormal", ("loc", "scale_tril"), extra_axes=(("scale_tril", 1),), event_rank=1),
        DistSpec("Bernoulli", _PROBS, "int", _LOGITS),
        DistSpec("Categorical", _PROBS, "cat", _LOGITS, extra_axes=(("probs", 1), ("logits", 1))),
        DistSpec("Poisson", ("rate",), "int"),
        DistSpec("Binomial", ("total_count",) + _PROBS, "int", _LOGITS, alternative_of=1),
        DistSpec("NegativeBinomial", ("total_count",) + _PROBS, "int", _LOGITS, alternative_of=1),
    ]
}

ACTIVATIONS = ("relu", "tanh", "sigmoid", "softplus", "elu", "gelu", "identity")

# Elementwise functions of one argument and their result's dtype: "real"; "keep" an
# integer argument's (abs of an int is an int); or "int" whatever the argument (a
# discretised simulator observes floor(...) as `int` data).
UNARY = {
    "exp": "real", "log": "real", "sqrt": "real", "abs": "keep", "sin": "real", "cos": "real",
    "tan": "real", "tanh": "real", "sigmoid": "real", "softplus": "real", "relu": "keep",
    "floor": "int", "sign": "int",
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
    "samples": "int", "seed": "int", "budget": "int",
}
