"""What inference needs to know of a model's structure, read off its graph.

    facts = model_structure(graph)
    facts.likelihood_parents   # ("theta",): the latents the observations depend on directly
    facts.explicit_locals      # ("theta",): locals whose density is known in closed form
    facts.explicit_observed    # (): observations written with `~` and noise-free arguments
    facts.likelihood_inputs    # ("logr",): the noise-free values the observations are computed from

A density is *known* when its arguments are functions of latents, covariates,
parameters and constants only: a noise or an extern upstream of an argument makes
the node's distribution a mixture over that noise, which has no closed form. The
likelihood's parents are the latents reached from an observation through
deterministic, noise and extern nodes: given them, the observation is independent
of every other latent, so a ratio estimator reads only them. Its inputs go one
step further: the first noise-free real values on the way back (a `let` computed
from latents only, or a latent itself), through which every latent reaches the
observation; p(x | latents) = p(x | inputs), often in fewer numbers
(`let logr = mu + sigma * v` carries three latents in one value).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

LATENT_ROLES = ("global", "local")
# nodes the likelihood passes through on its way to a latent (integrated out, or computed)
PASS_THROUGH = ("deterministic", "noise", "extern")
RANDOM_ROLES = ("noise", "extern")


@dataclass(frozen=True)
class Structure:
    """Structural facts about a model's densities (see the module docstring)."""

    explicit_locals: tuple[str, ...] = ()
    explicit_observed: tuple[str, ...] = ()
    likelihood_parents: tuple[str, ...] = ()
    # {local: latents its prior reads}, for the locals with a density
    local_prior_parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    likelihood_inputs: tuple[str, ...] = ()


def model_structure(graph: nx.DiGraph, has_density: set[str], order: list[str]) -> Structure:
    """The facts for a model graph; `has_density`: nodes declared with `~`;
    `order`: the graph's topological order (the facts keep it)."""
    roles = nx.get_node_attributes(graph, "role")
    locals_ = [n for n in order if roles.get(n) == "local" and n in has_density]
    observed = [n for n in order if roles.get(n) == "observed"]
    parents = set().union(*(latent_parents(graph, n) for n in observed)) if observed else set()
    return Structure(
        explicit_locals=tuple(n for n in locals_ if noise_free(graph, n)),
        explicit_observed=tuple(n for n in observed if n in has_density and noise_free(graph, n)),
        likelihood_parents=tuple(n for n in order if n in parents),
        likelihood_inputs=tuple(n for n in order if n in _inputs(graph, observed)),
        local_prior_parents={n: tuple(p for p in order if p in latent_parents(graph, n)) for n in locals_},
    )


def _walk_up(graph: nx.DiGraph, start: str | list[str], through) -> None:
    """Visit the nodes upstream of `start` (not `start` itself) once each, going on
    through a node's parents while `through(node)` is true."""
    starts = [start] if isinstance(start, str) else list(start)
    seen = set(starts)
    stack = [p for s in starts for p in graph.predecessors(s)]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if through(node):
            stack.extend(graph.predecessors(node))


def latent_parents(graph: nx.DiGraph, name: str) -> set[str]:
    """Latents reached from `name` backwards through deterministic, noise and
    extern nodes (its direct dependence on the model's latent variables)."""
    found: set[str] = set()

    def through(node: str) -> bool:
        role = graph.nodes[node]["role"]
        if role in LATENT_ROLES:
            found.add(node)
        return role in PASS_THROUGH

    _walk_up(graph, name, through)
    return found


def _inputs(graph: nx.DiGraph, observed: list[str]) -> set[str]:
    """The likelihood's inputs (module docstring): latents, and real deterministic
    nodes that are noise-free and read at least one latent."""
    found: set[str] = set()

    def through(node: str) -> bool:
        attrs = graph.nodes[node]
        if attrs["role"] in LATENT_ROLES or (
                attrs["role"] == "deterministic" and attrs["dtype"] == "real"
                and noise_free(graph, node) and latent_parents(graph, node)):
            found.add(node)
            return False
        return attrs["role"] in PASS_THROUGH

    _walk_up(graph, observed, through)
    return found


def noise_free(graph: nx.DiGraph, name: str) -> bool:
    """True when no noise or extern lies upstream of `name`'s arguments before a
    latent, covariate or parameter: its density given those is then exact."""
    random: list[str] = []

    def through(node: str) -> bool:
        role = graph.nodes[node]["role"]
        if role in RANDOM_ROLES:
            random.append(node)
        return role == "deterministic"

    _walk_up(graph, name, through)
    return not random
