"""A tiny emitter for generated Python: lines with indentation.

    e = Emitter()
    with e.block("def f(x):"):
        e.line("return x")
    e.text() == "def f(x):\\n    return x\\n"
"""
from __future__ import annotations

import keyword
from contextlib import contextmanager

# Local variable names the generated methods use themselves.
GENERATED_LOCALS = frozenset({"self", "g", "covariates", "rows", "fixed", "log_probs", "out", "top",
                              "batch", "draws", "torch", "H", "nn", "NodeInfo", "ExternSpec", "HimModule"})


class Emitter:
    """Collects lines of Python source with the current indentation."""

    def __init__(self, indent: str = "    "):
        self.lines: list[str] = []
        self.level = 0
        self.indent = indent

    def line(self, text: str = "") -> None:
        self.lines.append(self.indent * self.level + text if text else "")

    @contextmanager
    def block(self, header: str):
        self.line(header)
        self.level += 1
        yield
        self.level -= 1

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def python_name(name: str) -> str:
    """A safe Python identifier for a model name (`h.weight` → `h_weight`, `lambda` → `lambda_`)."""
    ident = name.replace(".", "_")
    if keyword.iskeyword(ident) or ident in GENERATED_LOCALS or ident.startswith("__"):
        ident += "_"
    return ident


def class_name(model_name: str) -> str:
    """`hier_gauss` → `HierGauss`."""
    parts = [p for p in model_name.split("_") if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return name if not keyword.iskeyword(name) else name + "_"
