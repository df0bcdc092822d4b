"""The checker: names, scopes and plates, roles, types and shapes, all errors at once.

    model, diagnostics = check_program(parse_file("model.him"))

Passes, in order: declare every name (duplicates, placement, reserved words);
evaluate constants; resolve declared types; infer every node's type and shape
(lazily, following references, so statement order does not matter); assign data
arrays to plates; then whole-model rules (top-level noise in plates, unused
noise and data, settings blocks). Cycles and gradient paths are the graph
stage's job (`himdsl.graph.build`).
"""
from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from ..diagnostics import Diagnostic, Note, Span, did_you_mean, error, warning
from ..frontend import ast
from . import builtins as B
from . import shapes as S
from .constants import ConstError, NotConstant, evaluate, shape_of
from .expressions import UNKNOWN, Context, ExpressionTyper, VType
from .model import CheckedModel, Edge, ExternInfo, PlateInfo, Symbol
from .settings import check_settings

_TOP_ONLY = (ast.Const, ast.Data, ast.Param, ast.Extern, ast.Guide, ast.Settings, ast.ModelName)
_KEYWORD_OF = {ast.Const: "const", ast.Data: "data", ast.Param: "param", ast.Extern: "extern",
               ast.Guide: "guide", ast.Settings: "a settings block", ast.ModelName: "model"}
_ROLE_OF = {"noise": "noise", "let": "deterministic"}
# what a parameter with extra trailing axes needs (by: is the distribution categorical)
_EXTRA_AXES = {True: "a last axis of categories", False: "a last axis beyond the draw's (a [D, D] matrix)"}
# integer data types: what they hold and where such values come from (a real value
# observed as either is simulated off the data's support: a ratio tells them apart at once)
_INTEGER_DATA = {
    "cat": ("labels", "labels come from `argmax(...)`, a `Categorical`, or an int extern"),
    "int": ("integers", "integers come from an integer distribution (`Poisson`, `Binomial`, ...), "
                        "`floor(...)` or an int extern; or declare `data {name} : real`"),
}


def check_program(program: ast.Program, overrides: dict | None = None) -> tuple[CheckedModel, list[Diagnostic]]:
    """Check a parsed program; return the checked model and every diagnostic."""
    return _Checker(program, overrides or {}).run()


def default_model_name(path: str) -> str:
    """A valid identifier from a file name: `my-model.him` → `my_model`."""
    stem = Path(path).stem if path and not path.startswith("<") else "model"
    name = re.sub(r"\W", "_", stem)
    return name if re.match(r"[A-Za-z_]", name) else f"model_{name}"


class _Checker:
    def __init__(self, program: ast.Program, overrides: dict):
        self.program = program
        self.overrides = overrides
        self.diags: list[Diagnostic] = []
        self.model = CheckedModel(default_model_name(program.path), program)
        self.symbols = self.model.symbols
        self.observes: dict[str, tuple[ast.Node, tuple[str, ...]]] = {}
        self.vtypes: dict[str, VType] = {}
        self.in_progress: set[str] = set()
        self.uses: list[tuple[str, str, Span, tuple[str, ...]]] = []
        self.plate_spans: dict[str, Span] = {}
        self.typer = ExpressionTyper(self._resolve, self.diags.append, {}, self.model.externs,
                                     self.model.expr_shapes, self._bind_dist_args)

    def run(self) -> tuple[CheckedModel, list[Diagnostic]]:
        self._declare_all()
        self._evaluate_constants()
        self._resolve_declared_types()
        self._check_plates()
        for name in list(self.symbols):
            self._symbol_type(name)
        for name in list(self.observes):
            self._observe(name)
        self._assign_data_plates()
        self._check_noise_in_plates()
        self._check_unused()
        self.diags += check_settings(self.program, self.model, self.typer)
        return self.model, [self._blame_overrides(d) for d in self.diags]

    def _blame_overrides(self, diag: Diagnostic) -> Diagnostic:
        """Say so when a reported expression uses a constant set with `--set`."""
        if diag.hint or not self.overrides or not diag.span:
            return diag
        lines = self.program.source.splitlines()[diag.span.line - 1:diag.span.end_line]
        if not lines:
            return diag
        if diag.span.line == diag.span.end_line:
            lines = [lines[0][diag.span.column - 1:diag.span.end_column - 1]]
        text = "\n".join(lines)
        used = [n for n in self.overrides if re.search(rf"\b{re.escape(n)}\b", text)]
        if not used:
            return diag
        sets = ", ".join(f"`--set {n}={self.overrides[n]}`" for n in used)
        return replace(diag, hint=f"the value comes from the command line: {sets}")

    def report(self, diag: Diagnostic) -> None:
        self.diags.append(diag)

    # ------------------------------------------------------------ declarations
    def _declare_all(self) -> None:
        for index, (stmt, plates) in enumerate(ast.walk_statements(self.program.statements)):
            names = tuple(p.name for p in plates)
            if plates and isinstance(stmt, _TOP_ONLY):
                self.report(error("E0117", stmt.span, f"`{_KEYWORD_OF[type(stmt)]}` is only allowed at top level",
                                  f"move it out of plate `{names[-1]}`"))
            self._declare(stmt, names, index)

    def _declare(self, stmt, plates: tuple[str, ...], index: int) -> None:
        if isinstance(stmt, ast.ModelName):
            self._model_name(stmt, index)
        elif isinstance(stmt, ast.Const):
            self._add(stmt.name, "const", stmt, stmt.name_span, plates)
        elif isinstance(stmt, ast.Data):
            self._add(stmt.name, "covariate", stmt, stmt.name_span, plates)
        elif isinstance(stmt, ast.Param):
            self._add(stmt.name, "param", stmt, stmt.name_span, plates)
        elif isinstance(stmt, ast.Extern):
            self._add(stmt.name, "extern", stmt, stmt.name_span, plates)
        elif isinstance(stmt, ast.Plate):
            self._plate(stmt, plates)
        elif isinstance(stmt, ast.Node) and stmt.keyword == "observe":
            self._record_observe(stmt, plates)
        elif isinstance(stmt, ast.Node):
            self._add(stmt.name, self._node_role(stmt, plates), stmt, stmt.name_span, plates)

    @staticmethod
    def _node_role(stmt: ast.Node, plates) -> str:
        if stmt.keyword == "latent":
            return "local" if plates else "global"
        return _ROLE_OF[stmt.keyword]

    def _model_name(self, stmt: ast.ModelName, index: int) -> None:
        if index != 0:
            self.report(error("E0104", stmt.span, "`model NAME` must be the first statement"))
        self._check_name_allowed(stmt.name, stmt.name_span)
        self.model.name = stmt.name

    def _add(self, name, role, stmt, span, plates) -> None:
        # a reserved name is reported but still declared, so its uses do not cascade
        self._check_name_allowed(name, span)
        if name in self.symbols or name in self.plate_spans:
            first = self.symbols[name].span if name in self.symbols else self.plate_spans[name]
            self.report(error("E0100", span, f"`{name}` is declared twice",
                              "every name in a model must be unique, across plates too",
                              [Note(first, f"`{name}` is first declared here")]))
            return
        self.symbols[name] = Symbol(name, role, stmt, span, plates)

    def _check_name_allowed(self, name: str, span: Span) -> bool:
        if name in B.KEYWORDS:
            self.report(error("E0103", span, f"`{name}` is a keyword and cannot be used as a name",
                              f"rename it, e.g. `{name}_`"))
            return False
        if name in B.RESERVED_NAMES:
            kind = ("distribution" if name in B.DISTRIBUTIONS else
                    "activation" if name in B.ACTIVATIONS else "function")
            self.report(error("E0103", span, f"`{name}` is a built-in {kind} and cannot be used as a name",
                              f"rename it, e.g. `{name}_`"))
            return False
        return True

    def _record_observe(self, stmt: ast.Node, plates) -> None:
        if stmt.name in self.observes:
            first = self.observes[stmt.name][0]
            self.report(error("E0114", stmt.name_span, f"data `{stmt.name}` is observed twice",
                              None, [Note(first.name_span, "first observed here")]))
            return
        self.observes[stmt.name] = (stmt, plates)

    def _plate(self, stmt: ast.Plate, plates) -> None:
        if plates:
            self.report(error("E0116", stmt.span, f"nested plates are not supported yet (plate `{stmt.name}` "
                                                  f"inside plate `{plates[-1]}`)",
                              "this version fits models with one level of plates"))
        if self._check_name_allowed(stmt.name, stmt.name_span):
            if stmt.name in self.plate_spans or stmt.name in self.symbols:
                first = self.plate_spans.get(stmt.name) or self.symbols[stmt.name].span
                self.report(error("E0100", stmt.name_span, f"`{stmt.name}` is declared twice",
                                  "every name in a model must be unique, plates included",
                                  [Note(first, f"`{stmt.name}` is first declared here")]))
            self.plate_spans[stmt.name] = stmt.name_span
        self.model.plates[stmt.name] = PlateInfo(stmt.name, stmt.over.id, plates[-1] if plates else None,
                                                 stmt.span)

    def _check_plates(self) -> None:
        for stmt, _ in ast.walk_statements(self.program.statements):
            if not isinstance(stmt, ast.Plate):
                continue
            over = self.symbols.get(stmt.over.id)
            if over is None or over.role not in ("covariate", "observed"):
                data = [s.name for s in self.symbols.values() if isinstance(s.stmt, ast.Data)]
                what = f"`{stmt.over.id}` is not declared" if over is None else f"`{stmt.over.id}` is a {over.role}"
                self.report(error("E0115", stmt.over.span,
                                  f"plate `{stmt.name}` must run over a `data` array; {what}",
                                  did_you_mean(stmt.over.id, data) or "declare it: `data NAME : TYPE`"))
            else:
                self.uses.append((stmt.name, stmt.over.id, stmt.over.span, (stmt.name,)))

    # ------------------------------------------------------------ constants and types
    def _evaluate_constants(self) -> None:
        env = self.typer.constants
        for name, value in self.overrides.items():
            if name not in self.symbols or self.symbols[name].role != "const":
                consts = [s.name for s in self.symbols.values() if s.role == "const"]
                self.report(error("E0142", Span(0, 0, 0, 0), f"--set {name}: the model has no constant `{name}`",
                                  did_you_mean(name, consts)))
        pending = {s.name: s for s in self.symbols.values() if s.role == "const"}
        for name in list(pending):
            self._constant(name, pending, env, [])

    def _constant(self, name, pending, env, chain) -> None:
        if name in env or name not in pending:
            return
        symbol = pending[name]
        if name in chain:
            self.report(error("E0143", symbol.span, "constants defined in terms of each other: "
                                                    + " → ".join(chain[chain.index(name):] + [name])))
            env[name] = None
            return
        for ref in ast.walk_expr(symbol.stmt.value):
            if isinstance(ref, ast.Name):
                self._constant(ref.id, pending, env, chain + [name])
        env[name] = self._constant_value(symbol, env)
        symbol.value = env[name]
        if env[name] is None:
            del env[name]

    def _constant_value(self, symbol: Symbol, env):
        if symbol.name in self.overrides:
            return self.overrides[symbol.name]
        try:
            return evaluate(symbol.stmt.value, {k: v for k, v in env.items() if v is not None})
        except NotConstant as exc:
            culprit = f"`{exc.name}` is not a constant" if exc.name else "this is not a constant expression"
            if exc.name and exc.name not in self.symbols:
                culprit = f"undefined name `{exc.name}`"
            self.report(error("E0140", exc.span, f"`const {symbol.name}` must be computable before running: "
                                                 f"{culprit}", "use `let` for values that depend on the model"))
        except ConstError as exc:
            self.report(error("E0140", exc.span, exc.message))
        return None

    def _resolve_declared_types(self) -> None:
        for symbol in list(self.symbols.values()):
            stmt = symbol.stmt
            if isinstance(stmt, (ast.Data, ast.Param)):
                self.vtypes[symbol.name] = self._declared_type(stmt.type, symbol.name)
                if isinstance(stmt, ast.Param) and stmt.type.base != "real":
                    self.report(error("E0126", stmt.type.span, f"`param {symbol.name}` must be `real[...]`"))
            elif isinstance(stmt, ast.Extern):
                self._extern(stmt)
            elif symbol.role == "const":
                self.vtypes[symbol.name] = _const_type(symbol.value)
            else:
                continue
            self._set_type(symbol, self.vtypes[symbol.name])

    def _declared_type(self, typ: ast.Type, owner: str) -> VType:
        if typ.base == "cat" and typ.categories is not None:
            k = self.typer.const_int(typ.categories, "the number of categories")
            return VType(() if k else None, "cat", k)
        if typ.base in ("real", "int") and typ.categories is None:
            dims = self.typer.dims(typ.dims, "a dimension")
            return VType(dims, typ.base)
        hint = did_you_mean(typ.base, ["real", "int", "cat"]) or "expected `real`, `int` or `cat(K)`"
        message = (f"`{typ.base}(...)` is not a type" if typ.categories is not None
                   else f"unknown type `{typ.base}`")
        self.report(error("E0126", typ.span, f"{message} (in the declaration of `{owner}`)", hint))
        return UNKNOWN

    def _extern(self, stmt: ast.Extern) -> None:
        params, seen = [], set()
        for param in stmt.params:
            if param.name in seen:
                self.report(error("E0100", param.span, f"extern argument `{param.name}` is declared twice"))
            seen.add(param.name)
            vtype = self._declared_type(param.type, stmt.name)
            params.append((param.name, vtype.shape, vtype.dtype))
        result = self._declared_type(stmt.result, stmt.name)
        if result.dtype == "cat":
            result = VType((), "int")
        self.model.externs[stmt.name] = ExternInfo(stmt.name, params, result.shape, result.dtype,
                                                   stmt.path.value, stmt.span)
        self.vtypes[stmt.name] = UNKNOWN
        self._check_extern_file(stmt)

    def _check_extern_file(self, stmt: ast.Extern) -> None:
        if self.program.path.startswith("<") or not stmt.path.value.endswith(".py"):
            if not stmt.path.value.endswith(".py"):
                self.report(error("E0160", stmt.path.span, f"extern `{stmt.name}` must come from a `.py` file"))
            return
        folder = os.path.dirname(os.path.abspath(self.program.path))
        if not os.path.isfile(os.path.join(folder, stmt.path.value)):
            self.report(error("E0161", stmt.path.span,
                              f"extern `{stmt.name}`: file `{stmt.path.value}` not found next to the model",
                              f"looked for {os.path.join(os.path.dirname(self.program.path), stmt.path.value)}"))

    # ------------------------------------------------------------ node types
    def _symbol_type(self, name: str) -> VType:
        if name in self.vtypes:
            return self.vtypes[name]
        if name in self.in_progress:  # a cycle; the graph stage reports it
            return UNKNOWN
        symbol = self.symbols[name]
        self.in_progress.add(name)
        ctx = Context(name, symbol.plates)
        vtype = self._node_type(symbol.stmt, ctx)
        self.in_progress.discard(name)
        self._register_layers(ctx)
        symbol.parents.update(ctx.edges)
        self.vtypes[name] = vtype
        self._set_type(symbol, vtype)
        self._check_role(symbol)
        return vtype

    def _node_type(self, stmt: ast.Node, ctx: Context) -> VType:
        if stmt.dist is not None:
            return self._dist_type(stmt.dist, stmt.shape, ctx)
        return self.typer.infer(stmt.value, ctx)

    def _set_type(self, symbol: Symbol, vtype: VType) -> None:
        symbol.shape, symbol.dtype, symbol.categories = vtype.shape, vtype.dtype, vtype.categories

    def _register_layers(self, ctx: Context) -> None:
        numbered = len(ctx.layers) > 1
        for index, layer in enumerate(ctx.layers):
            layer.prefix = f"{ctx.owner}.{index}" if numbered else ctx.owner
            self.model.layers.append(layer)
            self.model.call_layers.setdefault(id(layer.call), []).append(layer)

    def _check_role(self, symbol: Symbol) -> None:
        stmt = symbol.stmt
        if symbol.role == "local":
            self._check_local_prior(symbol)
        if symbol.role != "global":
            return
        if stmt.value is not None:
            self.report(error("E0110", stmt.span, f"global latent `{symbol.name}` is defined by `=`: "
                                                  "globals need a prior density",
                              f"globals need a prior: write `latent {symbol.name} ~ ...`, "
                              "or use `let` for a deterministic value"))
        elif stmt.dist.func in B.DISTRIBUTIONS and B.DISTRIBUTIONS[stmt.dist.func].discrete:
            self.report(error("E0111", stmt.dist.span, f"global latent `{symbol.name}` has a discrete prior "
                                                       f"`{stmt.dist.func}`",
                              "globals are inferred by reparameterisation and need a continuous prior "
                              "(e.g. `Uniform`, `Normal`)"))

    def _check_local_prior(self, symbol: Symbol) -> None:
        """A local whose prior's support no local guide keeps (a simplex) fails in `fit`:
        say so here."""
        call = symbol.stmt.dist
        spec = B.DISTRIBUTIONS.get(call.func) if call is not None else None
        if spec is None or spec.local:
            return
        self.report(error("E0111", call.span, f"local latent `{symbol.name}` has a `{call.func}` prior, "
                                              "whose support (the simplex) the local guides cannot keep",
                          f"make `{symbol.name}` a global (declare it outside the plate), or write "
                          f"`latent a ~ Normal(0, 1) [K]` and `let {symbol.name} = softmax(a)`"))

    def _dist_type(self, call: ast.Call, shape_exprs, ctx: Context) -> VType:
        spec = B.DISTRIBUTIONS.get(call.func)
        if spec is None:
            self._unknown_distribution(call, ctx)
            return UNKNOWN
        bound = self._bind_dist_args(spec, call)
        if bound is None:  # still type the arguments: their names are used, their errors are real
            self._infer_all(call, ctx)
        args = {name: self.typer.infer(expr, ctx) for name, expr in (bound or {}).items()}
        draw = None if shape_exprs is None else self.typer.dims(shape_exprs, "a dimension of the draw shape")
        if bound is None or any(a.shape is None for a in args.values()) or (shape_exprs and draw is None):
            return VType(draw, spec.dtype)
        return self._draw_type(spec, call, args, draw)

    def _infer_all(self, call: ast.Call, ctx: Context) -> None:
        for arg in list(call.args) + [k.value for k in call.kwargs]:
            self.typer.infer(arg, ctx)

    def _unknown_distribution(self, call: ast.Call, ctx: Context) -> None:
        hint = did_you_mean(call.func, B.DISTRIBUTIONS) or "distributions: " + ", ".join(B.DISTRIBUTIONS)
        self.report(error("E0120", call.func_span, f"unknown distribution `{call.func}`", hint))
        self._infer_all(call, ctx)

    def _bind_dist_args(self, spec: B.DistSpec, call: ast.Call) -> dict | None:
        params = spec.signature({k.name for k in call.kwargs})
        signature = f"{spec.name}({', '.join(params)})"
        if call.late_positional:
            self.report(error("E0121", call.late_positional, "positional argument after a named one"))
            return None
        if len(call.args) > len(params):
            self.report(error("E0121", call.span, f"`{spec.name}` takes {len(params)} argument"
                                                  f"{'s' * (len(params) != 1)}, got {len(call.args) + len(call.kwargs)}",
                              f"the signature is `{signature}`"))
            return None
        bound = dict(zip(params, call.args))
        ok = True
        for kw in call.kwargs:
            if kw.name not in params:
                hint = did_you_mean(kw.name, params) or f"the signature is `{signature}`"
                self.report(error("E0121", kw.span, f"`{spec.name}` has no argument `{kw.name}`", hint))
                ok = False
            elif kw.name in bound:
                self.report(error("E0121", kw.span, f"argument `{kw.name}` of `{spec.name}` is given twice"))
                ok = False
            else:
                bound[kw.name] = kw.value
        missing = [p for p in params if p not in bound]
        if missing and ok:
            self.report(error("E0121", call.span, f"`{spec.name}` needs its argument"
                                                  f"{'s' * (len(missing) > 1)} {', '.join(f'`{m}`' for m in missing)}",
                              f"the signature is `{signature}`"))
            ok = False
        return bound if ok else None

    def _draw_type(self, spec, call, args: dict, draw) -> VType:
        categories = None
        batches = {}
        for name, vtype in args.items():
            extra = spec.extra(name)
            if len(vtype.shape) < extra + (spec.event_rank if extra else 0):
                self.report(error("E0130", call.span, f"`{name}` of `{spec.name}` needs "
                                                      f"{_EXTRA_AXES[spec.dtype == 'cat']}, got shape "
                                                      f"{S.show(vtype.shape)}"))
                return VType(draw, spec.dtype)
            batches[name] = vtype.shape[:len(vtype.shape) - extra]
            if extra and spec.dtype == "cat":
                categories = vtype.shape[-1]
        if draw is None:
            try:
                draw = S.broadcast(*batches.values())
            except S.ShapeError as exc:
                self.report(error("E0130", call.span, f"arguments of `{spec.name}` do not broadcast: {exc}"))
                return UNKNOWN
        if len(draw) < spec.event_rank:
            first = spec.params[0]
            self.report(error("E0130", call.span, f"`{spec.name}` draws a vector (its last axis), but "
                                                  f"`{first}` is a scalar",
                              f"give `{first}` a last axis (`[1.0, 1.0, 1.0]`) or write the draw "
                              f"shape: `~ {spec.name}(...) [K]`"))
            return UNKNOWN
        for name, batch in batches.items():
            if _fits(batch, draw):
                self._check_event_matrix(spec, call, name, args[name], draw)
                continue
            self.report(error("E0133", call.span, f"argument `{name}` of `{spec.name}` has shape {S.show(batch)}, "
                                                  f"which does not fit the draw shape {S.show(draw)}",
                              "the draw shape is written after the distribution: `~ Normal(0, 1) [D]`"))
            return VType(draw, spec.dtype, categories)
        return VType(draw, spec.dtype, categories)

    def _check_event_matrix(self, spec, call, name: str, vtype: VType, draw: tuple) -> None:
        """A matrix parameter of a vector draw (scale_tril) must be [.., D, D], D the
        draw's last axis."""
        if not (spec.event_rank and spec.extra(name)) or vtype.shape[-2:] == (draw[-1],) * 2:
            return
        self.report(error("E0130", call.span, f"`{name}` of `{spec.name}` must be a square [D, D] matrix "
                                              f"with D = {draw[-1]} (the draw's last axis), got shape "
                                              f"{S.show(vtype.shape)}"))

    # ------------------------------------------------------------ name resolution
    def _resolve(self, name: str, span: Span, ctx: Context, call: bool = False) -> VType:
        symbol = self.symbols.get(name)
        if symbol is None:
            self._undefined(name, span, ctx)
            return UNKNOWN
        if symbol.role == "extern" and not call:
            self.report(error("E0124", span, f"extern `{name}` is a function: call it, `{name}(...)`"))
            return UNKNOWN
        if symbol.plates and symbol.plates != ctx.plates[:len(symbol.plates)]:
            where = f"plate `{ctx.plates[-1]}`" if ctx.plates else "top level"
            self.report(error("E0102", span, f"`{name}` is local to plate `{symbol.plates[-1]}` and cannot be "
                                             f"used at {where}",
                              "globals are declared at top level; a local lives inside its plate",
                              [Note(symbol.span, f"`{name}` is declared here")]))
            return UNKNOWN
        self.uses.append((ctx.owner, name, span, ctx.plates))
        if symbol.role != "const":
            self._add_edge(ctx, name, span)
        return UNKNOWN if call else self._symbol_type(name)

    def _undefined(self, name: str, span: Span, ctx: Context) -> None:
        if name in self.plate_spans:
            self.report(error("E0101", span, f"`{name}` is a plate, not a value"))
            return
        if name in B.KEYWORDS:
            self.report(error("E0101", span, f"`{name}` is a keyword, not a value",
                              did_you_mean(name, self.symbols) or "keywords start statements"))
            return
        candidates = list(self.symbols) + [n for n in self.observes]
        self.report(error("E0101", span, f"undefined name `{name}`", did_you_mean(name, candidates)))

    @staticmethod
    def _add_edge(ctx: Context, parent: str, span: Span) -> None:
        owner_edges = ctx.edges
        edge = owner_edges.setdefault(parent, Edge())
        edge.differentiable |= ctx.differentiable
        if not ctx.differentiable and not ctx.through_extern:
            edge.blocked_only_by_externs = False
        edge.spans.append(span)

    # ------------------------------------------------------------ observations
    def _observe(self, name: str) -> None:
        stmt, plates = self.observes[name]
        symbol = self.symbols.get(name)
        if symbol is None or not isinstance(symbol.stmt, ast.Data):
            self._observe_undeclared(stmt, symbol)
            ctx = Context(name, plates)
            self._node_type(stmt, ctx)
            return
        declared = self.vtypes.get(name, UNKNOWN)
        symbol.role, symbol.declared, symbol.stmt = "observed", symbol.stmt, stmt
        symbol.span = stmt.name_span
        ctx = Context(name, plates)
        if self._draw_shape_differs(stmt, declared):  # one error, not a second one per argument
            self._dist_type(stmt.dist, None, ctx)
            vtype = UNKNOWN
        else:
            vtype = self._node_type(stmt, ctx)
        self._register_layers(ctx)
        symbol.parents.update(ctx.edges)
        self._check_observed_type(stmt, declared, vtype)

    def _draw_shape_differs(self, stmt: ast.Node, declared: VType) -> bool:
        """Report `observe y ~ D(...) [SHAPE]` whose SHAPE is not the data's row type."""
        if stmt.shape is None or declared.shape is None:
            return False
        try:
            draw = tuple(evaluate(d, self.typer.constants) for d in stmt.shape)
        except (NotConstant, ConstError):
            return False  # typing the shape reports it
        if draw == declared.shape or not all(isinstance(d, int) and d > 0 for d in draw):
            return False  # a bad dimension is reported when the shape is typed
        start, end = stmt.shape[0].span, stmt.shape[-1].span
        shown = S.show(declared.shape)
        fix = f"write `{shown}` or leave it out" if declared.shape else "leave it out"
        self.report(error("E0132", Span(start.line, start.column, end.end_line, end.end_column),
                          f"`observe {stmt.name}` draws shape {S.show(draw)} but data `{stmt.name}` has "
                          f"shape {shown}", f"the shape after the distribution is one row of `{stmt.name}`: {fix}"))
        return True

    def _observe_undeclared(self, stmt: ast.Node, symbol: Symbol | None) -> None:
        if symbol is not None:
            self.report(error("E0113", stmt.name_span, f"`observe {stmt.name}`: `{stmt.name}` is a "
                                                       f"{symbol.role}, not a `data` array",
                              None, [Note(symbol.span, "declared here")]))
            return
        data = [s.name for s in self.symbols.values() if isinstance(s.stmt, ast.Data)]
        self.report(error("E0113", stmt.name_span, f"`observe {stmt.name}`: no `data` array named `{stmt.name}`",
                          did_you_mean(stmt.name, data) or f"declare it: `data {stmt.name} : real[...]`"))

    def _check_observed_type(self, stmt: ast.Node, declared: VType, vtype: VType) -> None:
        if declared.shape is None or vtype.shape is None:
            return
        where = stmt.value.span if stmt.value is not None else stmt.dist.span
        if vtype.shape != declared.shape:
            self.report(error("E0131", where, f"`observe {stmt.name}`: the model gives shape {S.show(vtype.shape)}, "
                                              f"but data `{stmt.name}` is declared with shape "
                                              f"{S.show(declared.shape)}"))
        elif declared.dtype in _INTEGER_DATA and vtype.dtype not in ("cat", "int"):
            what, hint = _INTEGER_DATA[declared.dtype]
            shown = f"cat({declared.categories})" if declared.dtype == "cat" else "int"
            self.report(error("E0131", where, f"`observe {stmt.name}`: data `{stmt.name}` holds {what} "
                                              f"({shown}) but the model gives a real value",
                              hint.format(name=stmt.name)))
        elif declared.dtype == "cat" and vtype.dtype == "cat" and vtype.categories != declared.categories:
            self.report(error("E0131", where, f"`observe {stmt.name}`: data has {declared.categories} categories "
                                              f"but the model gives {vtype.categories}"))

    # ------------------------------------------------------------ whole-model rules
    def _assign_data_plates(self) -> None:
        for symbol in self.symbols.values():
            if symbol.role == "observed":
                symbol.plates = self.observes[symbol.name][1]
            elif symbol.role == "covariate":
                plates = [p for _, n, _, p in self.uses if n == symbol.name and p]
                symbol.plates = plates[0][-1:] if plates else ()
                self._check_mixed_use(symbol)

    def _check_mixed_use(self, symbol: Symbol) -> None:
        if not symbol.plates:
            return
        for owner, name, span, plates in self.uses:
            if name == symbol.name and not plates:
                self.report(error("E0118", span, f"data `{name}` is read row by row in plate "
                                                 f"`{symbol.plates[-1]}` and whole here",
                                  "use it either inside its plate or at top level"))

    def _check_noise_in_plates(self) -> None:
        for owner, name, span, plates in self.uses:
            symbol = self.symbols[name]
            if not plates or symbol.plates:
                continue
            noise = self._top_level_noise(name, set())
            if noise is not None:
                via = "" if noise == name else f" (through `{name}`)"
                self.report(error("E0112", span, f"top-level noise `{noise}` used inside plate `{plates[-1]}`{via}",
                                  f"it would be shared by every element, an un-inferred latent: declare "
                                  f"`noise {noise}` inside the plate, or make it a global `latent`",
                                  [Note(self.symbols[noise].span, f"`{noise}` is declared at top level here")]))

    def _top_level_noise(self, name: str, seen: set) -> str | None:
        symbol = self.symbols.get(name)
        if symbol is None or symbol.plates or name in seen:
            return None
        seen.add(name)
        if symbol.role == "noise":
            return name
        if symbol.role != "deterministic":
            return None
        return next((n for p in symbol.parents if (n := self._top_level_noise(p, seen))), None)

    def _check_unused(self) -> None:
        used = {name for _, name, _, _ in self.uses}
        for symbol in self.symbols.values():
            if symbol.name in used:
                continue
            if symbol.role == "noise":
                self.report(warning("W0200", symbol.span, f"noise `{symbol.name}` is never used",
                                    "remove it, or use it in the expression it was meant for"))
            elif symbol.role == "covariate":
                self.report(warning("W0201", symbol.span, f"data `{symbol.name}` is never used",
                                    f"`observe {symbol.name} = ...` ties it to the model"))
        if not self.observes:
            span = self.program.statements[0].span if self.program.statements else Span(1, 1, 1, 2)
            self.report(warning("W0204", span, "the model observes no data",
                                "`fit` needs at least one `observe NAME = ...`"))
        self._check_discrete_locals()

    def _check_discrete_locals(self) -> None:
        """`simulate` draws a discrete local; `fit` cannot infer one (its guides are
        reparameterised, so real-valued): say so at `check`, not after data loading."""
        for symbol in self.symbols.values():
            if symbol.role == "local" and symbol.dtype in ("int", "cat"):
                self.report(warning(
                    "W0205", symbol.span, f"`fit` cannot infer the discrete local latent "
                    f"`{symbol.name}` ({symbol.dtype}); `simulate` can draw it",
                    "to fit the model, sum it out by hand (a mixture written with a real-valued "
                    "local or noise), or draw it as `noise` if it need not be inferred"))


def _const_type(value) -> VType:
    if value is None:
        return UNKNOWN
    if isinstance(value, list):
        return VType(shape_of(value), "real")
    return VType((), "int" if isinstance(value, int) else "real")


def _fits(batch: tuple, draw: tuple) -> bool:
    try:
        return S.broadcast(batch, draw) == draw
    except S.ShapeError:
        return False
