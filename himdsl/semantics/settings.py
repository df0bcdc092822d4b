"""Checks of the `guide { }`, `ratio { }` and `fit { }` blocks.

    guide { beta ~ flow; z ~ implicit(hidden = [64, 64], noise = 8) }
    → model.guide = {"beta": GuideSpec("beta", "flow"), "z": GuideSpec("z", "implicit", {...})}

Values are stored in `CheckedModel.guide / .ratio / .fit`; unknown keys and bad
values become diagnostics with a did-you-mean.
"""
from __future__ import annotations

from ..diagnostics import Diagnostic, did_you_mean, error, warning
from ..frontend import ast
from . import builtins as B
from .constants import ConstError, NotConstant, as_int, evaluate
from .model import CheckedModel, GuideSpec

GLOBAL_FAMILIES = ("auto", "flow", "mvnormal", "normal", "point")
LOCAL_FAMILIES = ("implicit", "normal")


def check_settings(program: ast.Program, model: CheckedModel, typer) -> list[Diagnostic]:
    """Validate every settings block; fill model.guide, model.ratio and model.fit."""
    diags: list[Diagnostic] = []
    for stmt in program.statements:
        if isinstance(stmt, ast.Guide):
            for entry in stmt.entries:
                _guide_entry(entry, model, typer.constants, diags)
            _locals_share_a_guide(model, diags)
        elif isinstance(stmt, ast.Settings):
            target = model.ratio if stmt.block == "ratio" else model.fit
            keys = B.RATIO_KEYS if stmt.block == "ratio" else B.FIT_KEYS
            for setting in stmt.entries:
                _setting(stmt.block, setting, keys, target, typer.constants, diags)
    if "batch" in model.fit and not model.plates:
        span = next(s.span for st in program.statements if isinstance(st, ast.Settings)
                    for s in st.entries if s.name == "batch")
        diags.append(warning("W0202", span, "`fit { batch }` is ignored: the model has no plate",
                             "batch is the number of data rows per step; a model without a plate has one"))
    return diags


def _guide_entry(entry: ast.GuideEntry, model: CheckedModel, constants, diags) -> None:
    symbol = model.symbols.get(entry.name)
    bayesian = {layer.weight_name for layer in model.layers if layer.bayesian}
    bayesian |= {layer.bias_name for layer in model.layers if layer.bayesian}
    latents = [s.name for s in model.symbols.values() if s.role in ("global", "local")]
    if (symbol is None or symbol.role not in ("global", "local")) and entry.name not in bayesian:
        what = "is not declared" if symbol is None else f"is a {symbol.role}, not a latent variable"
        diags.append(error("E0150", entry.span, f"guide: `{entry.name}` {what}",
                           did_you_mean(entry.name, latents + sorted(bayesian))))
        return
    if entry.name in model.guide:
        diags.append(error("E0151", entry.span, f"guide: `{entry.name}` is given twice"))
        return
    is_local = symbol is not None and symbol.role == "local"
    family, options = _family(entry, is_local, constants, diags)
    if family is not None:
        model.guide[entry.name] = GuideSpec(entry.name, family, options, entry.span)


def _locals_share_a_guide(model: CheckedModel, diags) -> None:
    """The locals of a row share one amortised guide q(z_1, z_2, .. | x_n, β), so
    their entries must name one family with one set of options."""
    entries = [spec for name, spec in model.guide.items()
               if name in model.symbols and model.symbols[name].role == "local"]
    for spec in entries[1:]:
        first = entries[0]
        if (spec.family, spec.options) != (first.family, first.options):
            diags.append(error("E0154", spec.span,
                               f"guide: `{spec.name}` and `{first.name}` are locals with different "
                               "guides, but the locals of a row share one amortised guide",
                               f"give both the same family and options (`{first.name}` has "
                               f"`{first.family}`)"))


def _family(entry: ast.GuideEntry, is_local: bool, constants, diags):
    expr = entry.family
    name = expr.id if isinstance(expr, ast.Name) else expr.func if isinstance(expr, ast.Call) else None
    allowed = LOCAL_FAMILIES if is_local else GLOBAL_FAMILIES
    if name not in allowed:
        kind = "a local latent" if is_local else "a global latent"
        diags.append(error("E0150", expr.span, f"guide: `{name or 'this'}` is not a family for {kind}",
                           did_you_mean(name or "", allowed) or "families: " + ", ".join(allowed)))
        return None, {}
    options = {}
    if isinstance(expr, ast.Call):
        allowed_options = (B.LOCAL_GUIDE_OPTIONS if is_local else B.GUIDE_OPTIONS).get(name, ())
        for arg in expr.args:
            diags.append(error("E0150", arg.span, f"guide options are named: `{name}(hidden = [64, 64])`"))
        for kw in expr.kwargs:
            if kw.name not in allowed_options:
                diags.append(error("E0152", kw.span, f"guide: `{name}` has no option `{kw.name}`",
                                   did_you_mean(kw.name, allowed_options)
                                   or ("options: " + ", ".join(allowed_options) if allowed_options else None)))
                continue
            value = _value(kw.value, "list" if kw.name == "hidden" else "int", constants, diags, kw.name)
            if value is not None:
                options[kw.name] = value
    return name, options


def _setting(block, setting: ast.Setting, keys: dict, target: dict, constants, diags) -> None:
    if setting.name not in keys:
        diags.append(error("E0152", setting.span, f"`{block}` has no setting `{setting.name}`",
                           did_you_mean(setting.name, keys) or "settings: " + ", ".join(keys)))
        return
    if setting.name in target:
        diags.append(error("E0151", setting.span, f"`{block} {{ {setting.name} }}` is given twice"))
        return
    value = _value(setting.value, keys[setting.name], constants, diags, setting.name)
    if value is not None:
        target[setting.name] = value


def _value(expr: ast.Expr, kind, constants, diags, key: str):
    """A setting's value: a choice (tuple of names), "int", "real" or "list" of ints."""
    if isinstance(kind, tuple):
        if isinstance(expr, ast.Name) and expr.id in kind:
            return expr.id
        shown = expr.id if isinstance(expr, ast.Name) else "this"
        diags.append(error("E0153", expr.span, f"`{key}` must be one of {', '.join(kind)}; got `{shown}`",
                           did_you_mean(shown, kind)))
        return None
    try:
        value = evaluate(expr, constants)
        if kind == "list":
            if not isinstance(value, list):
                value = [value]
            return [_positive(as_int(v, expr.span, f"each of `{key}`"), expr, key) for v in value]
        if kind == "int":
            return _positive(as_int(value, expr.span, f"`{key}`"), expr, key)
        if isinstance(value, list) or value <= 0:
            raise ConstError(expr.span, f"`{key}` must be a positive number")
        return float(value)
    except NotConstant as exc:
        diags.append(error("E0153", exc.span, f"`{key}` must be a constant number"))
    except ConstError as exc:
        diags.append(error("E0153", exc.span, exc.message))
    return None


def _positive(value: int, expr, key: str) -> int:
    if value <= 0 and key != "seed":
        raise ConstError(expr.span, f"`{key}` must be positive, got {value}")
    return value
