"""Type and shape inference for expressions, with every error collected.

    >>> typer.infer(parse_expr("concat(eps1, h2)"), context)   # eps1: [100], h2: [128]
    VType(shape=(228,), dtype='real', categories=None)

`ExpressionTyper` is driven by the checker: it asks `resolve(name, span, context)`
for every name, records parents through `context.edge(...)`, registers layers
through `context.add_layer(...)`, and reports diagnostics through `report`.
An unknown shape (None) after an error suppresses follow-on errors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple

from ..diagnostics import Span, did_you_mean, error
from ..frontend import ast
from . import builtins as B
from . import shapes as S
from .constants import OVERFLOW, ConstError, NotConstant, as_int, evaluate


class VType(NamedTuple):
    shape: tuple | None
    dtype: str = "real"
    categories: int | None = None


UNKNOWN = VType(None)
SCALAR = VType(())


@dataclass
class Context:
    """Where an expression sits: its owner node, plates and gradient path."""

    owner: str
    plates: tuple[str, ...]
    differentiable: bool = True
    through_extern: bool = False
    layers: list = field(default_factory=list)
    edges: dict = field(default_factory=dict)  # parent name -> Edge

    def blocked(self, extern: bool = False) -> "Context":
        """The same context below a non-differentiable operation."""
        return replace(self, differentiable=False, through_extern=self.through_extern or extern)


class ExpressionTyper:
    """Infers VTypes of expressions; see the module docstring for the protocol."""

    def __init__(self, resolve: Callable, report: Callable, constants: dict, externs: dict,
                 expr_shapes: dict, bind_args: Callable | None = None):
        self.resolve = resolve  # (name, span, context) -> VType
        self.report = report
        self.bind_args = bind_args  # (DistSpec, call) -> {param: expr} or None after reporting
        self.constants = constants
        self.externs = externs
        self.expr_shapes = expr_shapes

    # ------------------------------------------------------------ entry points
    def infer(self, expr: ast.Expr, ctx: Context) -> VType:
        """The VType of `expr`, recorded for the code generator."""
        vtype = self._infer(expr, ctx)
        self.expr_shapes[id(expr)] = vtype
        return vtype

    def const_int(self, expr: ast.Expr, what: str) -> int | None:
        """A positive whole-number constant, or None after reporting why not."""
        value = self.const_value(expr, what)
        if value is None:
            return None
        try:
            number = as_int(value, expr.span, what)
        except ConstError as exc:
            self.report(error("E0141", exc.span, exc.message))
            return None
        if number <= 0:
            self.report(error("E0141", expr.span, f"{what} must be positive, got {number}"))
            return None
        return number

    def const_value(self, expr: ast.Expr, what: str):
        """The value of a constant expression, or None after reporting why not."""
        try:
            return evaluate(expr, self.constants)
        except NotConstant as exc:
            name = f"`{exc.name}` is not a constant" if exc.name else "this is not a constant expression"
            self.report(error("E0124", exc.span, f"{what} must be a constant: {name}",
                              "declare it with `const NAME = ...`"))
        except ConstError as exc:
            self.report(error("E0140", exc.span, exc.message))
        return None

    def _list_dims(self, expr: ast.Expr, what: str, usage: str) -> tuple[int, ...] | None:
        """Constant dims written as a list literal (`[64, 64]`), or None after an error."""
        if not isinstance(expr, ast.ListLit):
            self.report(error("E0124", expr.span, usage))
            return None
        return self.dims(expr.items, what)

    def dims(self, exprs: list[ast.Expr], what: str) -> tuple[int, ...] | None:
        """A shape written as constant dims (`[D + 1, 2]`)."""
        values = [self.const_int(e, what) for e in exprs]
        return None if any(v is None for v in values) else tuple(values)

    # ------------------------------------------------------------ dispatch
    def _infer(self, expr, ctx: Context) -> VType:
        if isinstance(expr, ast.Num):
            if isinstance(expr.value, float) and not math.isfinite(expr.value):
                self.report(error("E0140", expr.span, OVERFLOW))
            return VType((), "int" if expr.is_int else "real")
        if isinstance(expr, ast.Str):
            self.report(error("E0125", expr.span, "a string is only allowed as an extern's file path"))
            return UNKNOWN
        if isinstance(expr, ast.Name):
            return self._name(expr, ctx)
        if isinstance(expr, ast.Neg):
            return self._numeric(self.infer(expr.operand, ctx))
        if isinstance(expr, ast.Binary):
            return self._binary(expr, ctx)
        if isinstance(expr, ast.Index):
            return self._index(expr, ctx)
        if isinstance(expr, ast.ListLit):
            return self._list(expr, ctx)
        return self._call(expr, ctx)

    def _name(self, expr: ast.Name, ctx: Context) -> VType:
        if expr.id in B.ACTIVATIONS:
            self.report(error("E0125", expr.span, f"activation `{expr.id}` can only be a layer's argument",
                              f"write it as the last argument of `dense(x, UNITS, {expr.id})`"))
            return UNKNOWN
        return self.resolve(expr.id, expr.span, ctx)

    @staticmethod
    def _numeric(vtype: VType) -> VType:
        return VType(vtype.shape, "int" if vtype.dtype in ("int", "cat") else "real")

    def _binary(self, expr: ast.Binary, ctx: Context) -> VType:
        compare = expr.op in ("<", "<=", ">", ">=", "==", "!=")
        inner = ctx.blocked() if compare else ctx
        left, right = self.infer(expr.left, inner), self.infer(expr.right, inner)
        if left.shape is None or right.shape is None:
            return UNKNOWN
        try:
            shape = S.matmul(left.shape, right.shape) if expr.op == "@" else S.broadcast(left.shape, right.shape)
        except S.ShapeError as exc:
            self.report(error("E0130", expr.span, f"shape mismatch in `{expr.op}`: {exc}"))
            return UNKNOWN
        if compare:
            return VType(shape, "real")
        ints = {left.dtype, right.dtype} <= {"int", "cat"} and expr.op in "+-*^"
        return VType(shape, "int" if ints else "real")

    def _index(self, expr: ast.Index, ctx: Context) -> VType:
        target = self.infer(expr.target, ctx)
        items = [self._index_item(item) for item in expr.items]
        if target.shape is None or any(i is None for i in items):
            return UNKNOWN
        try:
            return VType(S.index(target.shape, items), self._numeric(target).dtype)
        except S.ShapeError as exc:
            self.report(error("E0130", expr.span, str(exc)))
            return UNKNOWN

    def _index_item(self, item):
        if not isinstance(item, ast.Slice):
            value = self.const_value(item, "an index")
            try:
                return None if value is None else as_int(value, item.span, "an index")
            except ConstError as exc:
                self.report(error("E0141", exc.span, exc.message))
                return None
        parts = []
        for part in (item.start, item.stop, item.step):
            value = None if part is None else self.const_value(part, "a slice bound")
            if part is not None and value is None:
                return None
            parts.append(None if value is None else int(value))
        return tuple(parts)

    def _list(self, expr: ast.ListLit, ctx: Context) -> VType:
        items = [self.infer(item, ctx) for item in expr.items]
        if not items:
            self.report(error("E0130", expr.span, "an empty list has no shape"))
            return UNKNOWN
        if any(i.shape is None for i in items):
            return UNKNOWN
        try:
            inner = S.broadcast(*[i.shape for i in items])
        except S.ShapeError as exc:
            self.report(error("E0130", expr.span, f"list items differ in shape: {exc}"))
            return UNKNOWN
        return VType((len(items),) + inner, "real")

    # ------------------------------------------------------------ calls
    def _call(self, call: ast.Call, ctx: Context) -> VType:
        name = call.func
        if name in self.externs:
            return self._extern(call, ctx)
        if name in B.DISTRIBUTIONS:
            self.report(error("E0122", call.func_span, f"`{name}` is a distribution, not a function",
                              f"draw from it in a declaration: `latent NAME ~ {name}(...)`"))
            return UNKNOWN
        if name not in B.FUNCTIONS:
            hint = did_you_mean(name, list(B.FUNCTIONS) + list(self.externs))
            self.report(error("E0122", call.func_span, f"unknown function `{name}`", hint))
            for arg in call.args:
                self.infer(arg, ctx)
            return UNKNOWN
        if call.late_positional:
            self.report(error("E0121", call.late_positional,
                              f"positional argument after a named one in `{name}(...)`"))
        if name in B.LAYERS:
            return self._layer(call, ctx)
        if call.kwargs:
            self.report(error("E0121", call.kwargs[0].span, f"`{name}` takes no named arguments"))
        return self._function(call, ctx)

    def _arity(self, call: ast.Call, low: int, high: int | None = None) -> bool:
        high = low if high is None else high
        count = len(call.args)
        if low <= count <= high:
            return True
        wanted = str(low) if low == high else (f"{low} to {high}" if high < 99 else f"at least {low}")
        self.report(error("E0123", call.span,
                          f"`{call.func}` takes {wanted} argument{'s' * (wanted != '1')}, got {count}"))
        return False

    def _function(self, call: ast.Call, ctx: Context) -> VType:
        name = call.func
        if name in B.UNARY:
            return self._unary(call, ctx)
        if name in B.ELEMENTWISE_NARY:
            return self._elementwise(call, ctx)
        if name in B.REDUCTIONS or name in B.LAST_AXIS:
            return self._last_axis(call, ctx)
        if name in B.VARIADIC:
            return self._variadic(call, ctx)
        if name == "onehot":
            return self._onehot(call, ctx)
        return self._reshape(call, ctx)

    def _unary(self, call, ctx) -> VType:
        if not self._arity(call, 1):
            return UNKNOWN
        inner = ctx.blocked() if call.func in B.NON_DIFFERENTIABLE else ctx
        arg = self.infer(call.args[0], inner)
        rule = B.UNARY[call.func]
        integer = rule == "int" or (rule == "keep" and arg.dtype in ("int", "cat"))
        return VType(arg.shape, "int" if integer else "real")

    def _elementwise(self, call, ctx) -> VType:
        if not self._arity(call, B.ELEMENTWISE_NARY[call.func]):
            return UNKNOWN
        args = [self.infer(a, ctx.blocked() if (call.func == "where" and i == 0) else ctx)
                for i, a in enumerate(call.args)]
        return self._broadcast_call(call, args)

    def _broadcast_call(self, call, args: list[VType]) -> VType:
        if any(a.shape is None for a in args):
            return UNKNOWN
        try:
            shape = S.broadcast(*[a.shape for a in args])
        except S.ShapeError as exc:
            shown = ", ".join(S.show(a.shape) for a in args)
            self.report(error("E0130", call.span, f"arguments of `{call.func}` ({shown}) do not broadcast",
                              str(exc)))
            return UNKNOWN
        ints = all(a.dtype in ("int", "cat") for a in args)
        return VType(shape, "int" if ints else "real")

    def _last_axis(self, call, ctx) -> VType:
        if not self._arity(call, 1):
            return UNKNOWN
        inner = ctx.blocked() if call.func == "argmax" else ctx
        arg = self.infer(call.args[0], inner)
        if arg.shape is None:
            return UNKNOWN
        try:
            if call.func == "softmax":
                S.reduce_last(arg.shape, call.func)
                return VType(arg.shape)
            shape = S.reduce_last(arg.shape, call.func)
        except S.ShapeError as exc:
            self.report(error("E0130", call.span, str(exc)))
            return UNKNOWN
        if call.func == "argmax":
            return VType(shape, "cat", arg.shape[-1])
        return VType(shape, "int" if arg.dtype == "int" and call.func in ("sum", "prod") else "real")

    def _variadic(self, call, ctx) -> VType:
        if not self._arity(call, 1, 999):
            return UNKNOWN
        args = [self.infer(a, ctx) for a in call.args]
        if any(a.shape is None for a in args):
            return UNKNOWN
        rule = S.concat if call.func == "concat" else S.stack
        try:
            return VType(rule([a.shape for a in args]))
        except S.ShapeError as exc:
            self.report(error("E0130", call.span, str(exc)))
            return UNKNOWN

    def _onehot(self, call, ctx) -> VType:
        if not self._arity(call, 2):
            return UNKNOWN
        label = self.infer(call.args[0], ctx.blocked())
        size = self.const_int(call.args[1], "the number of categories of `onehot`")
        if label.shape is None or size is None:
            return UNKNOWN
        if label.dtype == "real":
            self.report(error("E0130", call.args[0].span, "`onehot` needs an integer label, got a real value",
                              "use `argmax(...)` or an `int`/`cat` data array"))
        return VType(label.shape + (size,))

    def _reshape(self, call, ctx) -> VType:
        if not self._arity(call, 2):
            return UNKNOWN
        arg = self.infer(call.args[0], ctx)
        dims = self._list_dims(call.args[1], "a dimension", "`reshape` needs the new shape as a list: `[D1, D2]`")
        if arg.shape is None or dims is None:
            return UNKNOWN
        try:
            return VType(S.reshape(arg.shape, dims), self._numeric(arg).dtype)
        except S.ShapeError as exc:
            self.report(error("E0130", call.span, str(exc)))
            return UNKNOWN

    # ------------------------------------------------------------ externs
    def _extern(self, call: ast.Call, ctx: Context) -> VType:
        info = self.externs[call.func]
        if call.kwargs:
            self.report(error("E0121", call.kwargs[0].span, f"extern `{call.func}` takes positional arguments only"))
        self.resolve(call.func, call.func_span, ctx.blocked(extern=True), call=True)
        if len(call.args) != len(info.params):
            self.report(error("E0123", call.span,
                              f"extern `{call.func}` takes {len(info.params)} argument(s), got {len(call.args)}",
                              notes_hint(info)))
        for arg, (pname, pshape, _) in zip(call.args, info.params):
            vtype = self.infer(arg, ctx.blocked(extern=True))
            if vtype.shape is None or pshape is None:
                continue
            try:
                if S.broadcast(vtype.shape, pshape) != pshape:
                    raise S.ShapeError("")
            except S.ShapeError:
                self.report(error("E0130", arg.span,
                                  f"argument `{pname}` of extern `{call.func}` must have shape "
                                  f"{S.show(pshape)}, got {S.show(vtype.shape)}"))
        return VType(info.shape, info.dtype)

    # ------------------------------------------------------------ layers
    def _layer(self, call: ast.Call, ctx: Context) -> VType:
        prior = self._layer_prior(call)
        if call.func == "layernorm":
            if not self._arity(call, 1):
                return UNKNOWN
            arg = self.infer(call.args[0], ctx)
            if arg.shape is None:
                return UNKNOWN
            if arg.shape == ():
                self.report(error("E0130", call.span, "`layernorm` normalises the last axis, got a scalar"))
                return UNKNOWN
            self._add_layer(ctx, call, "layernorm", arg.shape[-1], arg.shape[-1], "identity", prior)
            return VType(arg.shape)
        if call.func == "dense":
            return self._dense(call, ctx, prior)
        return self._mlp(call, ctx, prior)

    def _layer_prior(self, call: ast.Call):
        prior = None
        for kw in call.kwargs:
            if kw.name != "prior":
                self.report(error("E0121", kw.span, f"`{call.func}` has no argument `{kw.name}`",
                                  "the only named argument of a layer is `prior = DIST`"))
            elif not (isinstance(kw.value, ast.Call) and kw.value.func in B.DISTRIBUTIONS):
                self.report(error("E0120", kw.value.span, "`prior` must be a distribution, e.g. `Normal(0, 1)`"))
            else:
                prior = kw.value
                self._check_prior(prior)
        return prior

    def _check_prior(self, prior: ast.Call) -> None:
        spec = B.DISTRIBUTIONS[prior.func]
        if spec.discrete:
            self.report(error("E0111", prior.span, f"a layer's weights need a continuous prior, not `{prior.func}`"))
        elif spec.event_rank:
            self.report(error("E0111", prior.span, f"a layer's weights need a prior of one weight at a time, "
                                                   f"not `{prior.func}` (a distribution over vectors)"))
        if self.bind_args is not None:  # the code generator reads the arguments by name
            self.bind_args(spec, prior)
        for arg in list(prior.args) + [k.value for k in prior.kwargs]:
            self.const_value(arg, "an argument of a layer prior")

    def _activation(self, expr) -> str | None:
        if isinstance(expr, ast.Name) and expr.id in B.ACTIVATIONS:
            return expr.id
        known = "expected an activation: " + ", ".join(B.ACTIVATIONS)
        if isinstance(expr, ast.Name):
            hint = did_you_mean(expr.id, B.ACTIVATIONS)
            self.report(error("E0125", expr.span, f"unknown activation `{expr.id}`", hint or known))
        else:
            self.report(error("E0125", expr.span, "a layer's last argument must be an activation", known))
        return None

    def _dense(self, call, ctx, prior) -> VType:
        if not self._arity(call, 2, 3):
            return UNKNOWN
        arg = self.infer(call.args[0], ctx)
        units = self.const_int(call.args[1], "the number of units of `dense`")
        act = self._activation(call.args[2]) if len(call.args) == 3 else "identity"
        if arg.shape is None or units is None or act is None:
            return UNKNOWN
        features = _features(arg)
        self._add_layer(ctx, call, "dense", features, units, act, prior)
        return VType(_leading(arg) + (units,))

    def _mlp(self, call, ctx, prior) -> VType:
        if not self._arity(call, 3, 4):
            return UNKNOWN
        arg = self.infer(call.args[0], ctx)
        hidden = self._list_dims(call.args[1], "a hidden width", "`mlp` needs its hidden widths as a list: `[64, 64]`")
        if hidden is None:
            return UNKNOWN
        out = self.const_int(call.args[2], "the output size of `mlp`")
        act = self._activation(call.args[3]) if len(call.args) == 4 else "identity"
        if arg.shape is None or hidden is None or out is None or act is None:
            return UNKNOWN
        sizes = (_features(arg),) + hidden + (out,)
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            self._add_layer(ctx, call, "dense", fan_in, fan_out, "identity" if last else act, prior)
        return VType(_leading(arg) + (out,))

    @staticmethod
    def _add_layer(ctx: Context, call, kind, fan_in, fan_out, act, prior) -> None:
        from .model import Layer

        ctx.layers.append(Layer(ctx.owner, ctx.owner, kind, fan_in, fan_out, act, prior, call,
                                ctx.differentiable, ctx.through_extern))


def _leading(vtype: VType) -> tuple:
    """Axes a layer keeps: all but the feature axis (a one-hot label keeps all)."""
    return vtype.shape if vtype.dtype == "cat" else vtype.shape[:-1]


def _features(vtype: VType) -> int:
    """Input features a layer sees: a cat(K) value is one-hot, so K features."""
    if vtype.dtype == "cat" and vtype.categories:
        return vtype.categories
    return S.dense_input(vtype.shape)


def notes_hint(info) -> str:
    """`declared as lotka_volterra(theta : real[4])`."""
    params = ", ".join(f"{n} : {dtype}{S.show(s) if s else ''}" for n, s, dtype in info.params)
    return f"declared as `{info.name}({params})`"
