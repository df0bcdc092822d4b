"""The Python API, mirroring the command line.

    import himdsl
    program = himdsl.parse("model.him")            # AST
    diagnostics = himdsl.check("model.him")         # list of Diagnostic
    model = himdsl.load("model.him")                # raises HimError on errors
    module = model.module()                         # a torch.nn.Module (HimModule)
    source = model.python()                         # the generated code
"""
from __future__ import annotations

import os
import sys
import types

from . import __version__
from .codegen.module import check_codegen, emit_module
from .codegen.emit import class_name
from .diagnostics import Diagnostic, HimError
from .driver import FrontendResult, read_source, run_frontend
from .frontend import ast
from .frontend.parser import parse_source
from .runtime.externs import ExternError


def parse(path_or_source: str) -> ast.Program:
    """Parse a `.him` file, or source text (anything containing a newline); raises HimError."""
    if "\n" in path_or_source:
        return parse_source(path_or_source)
    return parse_source(read_source(path_or_source), path_or_source)


def check(path: str, overrides: dict | None = None) -> list[Diagnostic]:
    """Every diagnostic of a model file (errors and warnings)."""
    return run_frontend(path=str(path), overrides=overrides).diagnostics


def load(path: str, overrides: dict | None = None, source: str | None = None) -> "Model":
    """Check and compile a model; raises HimError carrying every error."""
    result = run_frontend(source, path=str(path), overrides=overrides)
    result.raise_for_errors()
    extra = check_codegen(result.model)
    if extra:
        raise HimError(result.diagnostics + extra, result.path, result.source)
    return Model(result, overrides or {})


class Model:
    """A checked model: its graph, generated code and compiled module."""

    def __init__(self, frontend: FrontendResult, overrides: dict):
        self.frontend = frontend
        self.overrides = overrides
        self.checked = frontend.model
        self.graph = frontend.graph
        self._python: str | None = None
        self._class = None

    @property
    def name(self) -> str:
        return self.checked.name

    @property
    def path(self) -> str:
        return self.frontend.path

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return self.frontend.diagnostics

    def python(self) -> str:
        """The generated module's source code."""
        if self._python is None:
            self._python = emit_module(self.checked, self.graph, __version__)
        return self._python

    def module_class(self) -> type:
        """The generated `HimModule` subclass, compiled in memory."""
        if self._class is None:
            name = f"himdsl_generated_{self.name}"
            module = types.ModuleType(name)
            module.__file__ = f"<himdsl:{self.path}>"
            exec(compile(self.python(), module.__file__, "exec"), module.__dict__)
            sys.modules.setdefault(name, module)
            self._class = getattr(module, class_name(self.name))
        return self._class

    def module(self, device=None, extern_dir: str | None = None):
        """A fresh instance of the compiled model (on `device` if given).

        Raises ExternError (user-facing) if an extern cannot be loaded."""
        folder = extern_dir or os.path.dirname(os.path.abspath(self.path))
        instance = self.module_class()(folder)
        return instance.to(device) if device is not None else instance

    def simulate(self, rows: int | None = None, draws: int = 1, given: dict | None = None,
                 covariates: dict | None = None, seed: int | None = None,
                 params: dict | None = None) -> tuple[dict, dict]:
        """Prior-predictive (data, truth) arrays, as `himdsl simulate` writes them;
        `params` sets point-estimated weights by name (`z2.weight`)."""
        from .simulation import simulate_dataset

        return simulate_dataset(self, rows, draws, given, covariates, params, seed)

    def fit(self, data, device: str = "auto", out: str | None = None, **settings):
        """Fit to `data` (a dict of arrays or an .npz path); `settings` as `himdsl fit`'s
        options (steps, batch, particles, lr, samples, seed, budget, method,
        guide={name: family})."""
        from .fitting import run_fit

        return run_fit(self, data, settings, device, out)


__all__ = ["parse", "check", "load", "Model", "HimError", "ExternError"]
