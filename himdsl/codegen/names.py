"""The one table of Python names in a generated module.

Model names are mangled into identifiers (`h.weight` → `h_weight`), and the
generated code has names of its own (`out`, `H`, `prior_beta`, `beta_row`), so two
different things could otherwise end up under one Python name and the module
would silently read one in place of the other. Every identifier comes from here,
and each is handed out once:

    names = ModuleNames(model)
    names.var("h_weight")   # 'h_weight'   (a latent written that way keeps its name)
    names.var("h.weight")   # 'h_weight_2' (the layer's weight)
    names.row("beta")       # 'beta_row', or 'beta_row_2' when the model has a `beta_row`
    names.prior("beta")     # 'prior_beta', the method (never a parameter's attribute)

Names are claimed in a fixed order (model names written as identifiers first, then
the mangled ones, then derived names), so the same model gives the same code.
"""
from __future__ import annotations

import builtins
import keyword

from ..runtime.model import HimModule
from ..semantics.model import CheckedModel
from .emit import MODULE_NAMES, class_name, identifier
# the generated methods' own arguments and locals
METHOD_LOCALS = frozenset({"self", "g", "covariates", "rows", "draws", "fixed", "log_probs", "out", "top",
                           "batch", "name", "extern_dir"})


class Names:
    """Identifiers handed out once each: a clash gets a numbered variant (`x_2`)."""

    def __init__(self, taken):
        self._taken = set(taken)
        self._given: dict = {}

    def claim(self, key, wanted: str) -> str:
        """The identifier of `key`, `wanted` if it is still free."""
        if key not in self._given:
            ident, number = wanted, 2
            while ident in self._taken or keyword.iskeyword(ident):
                ident, number = f"{wanted}_{number}", number + 1
            self._taken.add(ident)
            self._given[key] = ident
        return self._given[key]


class ModuleNames:
    """Variables (module level and method locals share one namespace) and the
    attributes of the module (`self.NAME`) of one generated module."""

    def __init__(self, model: CheckedModel):
        self.class_name = class_name(model.name)
        self.variables = Names(MODULE_NAMES | METHOD_LOCALS | set(dir(builtins)) | {self.class_name})
        model_names = list(model.symbols) + [w for layer in model.layers if layer.bayesian
                                             for w in (layer.weight_name, layer.bias_name)]
        for name in sorted(model_names, key=lambda n: identifier(n) != n):
            self.variables.claim(name, identifier(name))
        # parameters and point-estimated layers keep their model name: it is their state_dict key
        fixed = {s.name for s in model.by_role("param")} | {l.owner for l in model.layers if not l.bayesian}
        self.attributes = Names(set(dir(HimModule)) | fixed)
        self._constants = model.constants
        self.constants_used: list[str] = []   # in the order of first use

    def constant(self, name: str) -> str:
        """How generated code reads constant `name`: a module-level number, or the
        module's tensor of a list; recorded as used."""
        if name not in self.constants_used:
            self.constants_used.append(name)
        return f"self.{self.buffer(name)}" if isinstance(self._constants[name], list) else self.var(name)

    def var(self, name: str) -> str:
        """The variable that holds model name `name` (a node, weight or constant)."""
        return self.variables.claim(name, identifier(name))

    def row(self, name: str) -> str:
        """The variable of top-level `name` with a row axis, for use inside the plate."""
        return self.variables.claim(("row", name), f"{self.var(name)}_row")

    def prior(self, name: str) -> str:
        """The method that returns the prior of global `name`."""
        return self.attributes.claim(("prior", name), f"prior_{self.var(name)}")

    def buffer(self, name: str) -> str:
        """The attribute of a list constant's tensor."""
        return self.attributes.claim(("const", name), self.var(name))
