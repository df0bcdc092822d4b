"""Translate checked `.him` expressions to PyTorch source text.

    concat(eps1, h2)        →  H.concat(eps1, h2, like=self._anchor)
    dense(z2, 128, relu)    →  self.h2(z2)
    z + 0.5 * eps           →  z + 0.5 * eps
    s * v   (scalar * [3])  →  H.lift(s, element_rank=0, new_axes=1) * v
    -pi / 2 (constants)     →  -pi / 2   (the module defines `pi` as the model does)

Element axes trail the batch axes (draws, rows); whenever operands of different
element rank meet, the lower-rank one that carries batch axes is lifted (a
constant carries none, so torch's trailing alignment is already right).
Constants are written as the model writes them; only what Python's `math` cannot
say (`sigmoid(2)`, an element of a list) is computed now.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..frontend import ast
from ..semantics import builtins as B
from ..semantics.constants import ConstError, NotConstant, evaluate, shape_of
from ..semantics.model import CheckedModel
from .names import ModuleNames

_PY_OP = {"+": "+", "-": "-", "*": "*", "/": "/", "^": "**"}
_PRECEDENCE = {"+": 2, "-": 2, "*": 3, "/": 3, "**": 5}
_ATOM, _UNARY = 9, 4
# functions of constants that Python's `math` (or a builtin) computes as the model does
_MATH = {"exp": "math.exp", "log": "math.log", "sqrt": "math.sqrt", "sin": "math.sin",
         "cos": "math.cos", "tan": "math.tan", "tanh": "math.tanh", "abs": "abs", "floor": "math.floor"}


@dataclass
class Code:
    """Generated source of one expression and what the generator knows of it."""

    text: str
    rank: int  # element rank
    batched: bool  # carries batch axes (depends on a node, not only constants)
    strength: int = _ATOM


class ExpressionGen:
    """Translates expressions of one scope; `scope` maps node names to variables.

    `reads` collects the variables of `scope` that the generated text uses (so the
    module writer can leave out the ones nothing reads); constants are looked up
    in `names`, which records the ones used."""

    def __init__(self, model: CheckedModel, names: ModuleNames, scope: dict[str, str], batch_var: str,
                 layer_calls: dict[int, str]):
        self.model = model
        self.table = names
        self.names = scope
        self.batch_var = batch_var
        self.layer_calls = layer_calls  # id(call) -> module expression, e.g. "self.h2"
        self.reads: set[str] = set()

    def source(self, expr) -> str:
        return self.gen(expr).text

    def rank(self, expr) -> int:
        vtype = self.model.expr_shapes.get(id(expr))
        return len(vtype.shape) if vtype is not None and vtype.shape is not None else 0

    def dtype(self, expr):
        return self.model.expr_shapes[id(expr)]

    def gen(self, expr) -> Code:
        folded = self._fold(expr)
        if folded is not None:
            return folded
        if isinstance(expr, ast.Num):
            return Code(repr(expr.value), 0, False)
        if isinstance(expr, ast.Name):
            return self._name(expr)
        if isinstance(expr, ast.Neg):
            inner = self.gen(expr.operand)
            return Code(f"-{self._wrap(inner, _UNARY)}", inner.rank, inner.batched, _UNARY)
        if isinstance(expr, ast.Binary):
            return self._binary(expr)
        if isinstance(expr, ast.Index):
            return self._index(expr)
        if isinstance(expr, ast.ListLit):
            rank = self.rank(expr)
            items = self._lifted(expr.items, rank - 1)
            texts = ", ".join(c.text for c in items)
            text = f"H.stack_first({texts}, item_rank={rank - 1}, like=self._anchor)"
            return Code(text, rank, any(c.batched for c in items))
        return self._call(expr)

    def _fold(self, expr) -> Code | None:
        """A list computed from constants, or a number Python's `math` cannot write
        as the model does, computed now; None for what `gen` writes out."""
        if isinstance(expr, (ast.Num, ast.Name)):
            return None
        try:
            value = evaluate(expr, self.model.constants)
        except (NotConstant, ConstError):
            return None
        if isinstance(value, list):
            return Code(f"H.tensor_like({value!r}, self._anchor)", len(shape_of(value)), False)
        if self._writable(expr):
            return None
        return Code(repr(value), 0, False, _ATOM if value >= 0 else _UNARY)

    def _writable(self, expr) -> bool:
        """A scalar constant expression that reads the same in Python."""
        if isinstance(expr, ast.Num):
            return True
        if isinstance(expr, ast.Name):
            return not isinstance(self.model.constants.get(expr.id), list)
        if isinstance(expr, ast.Neg):
            return self._writable(expr.operand)
        if isinstance(expr, ast.Binary):
            return expr.op in _PY_OP and self._writable(expr.left) and self._writable(expr.right)
        return (isinstance(expr, ast.Call) and expr.func in _MATH and not expr.kwargs
                and len(expr.args) == 1 and self._writable(expr.args[0]))

    # ------------------------------------------------------------ pieces
    def _name(self, expr: ast.Name) -> Code:
        symbol = self.model.symbols[expr.id]
        rank = len(symbol.shape or ())
        if symbol.role == "const":
            return Code(self.table.constant(expr.id), rank, False)
        self.reads.add(self.names[expr.id])
        return Code(self.names[expr.id], rank, True)

    @staticmethod
    def _wrap(code: Code, minimum: int) -> str:
        return f"({code.text})" if code.strength < minimum else code.text

    def _lift(self, code: Code, rank: int) -> Code:
        if not code.batched or code.rank >= rank:
            return code
        return Code(lift(code.text, code.rank, rank - code.rank), rank, True)

    def _lifted(self, exprs, rank: int) -> list[Code]:
        return [self._lift(self.gen(e), rank) for e in exprs]

    def _binary(self, expr: ast.Binary) -> Code:
        rank = self.rank(expr)
        left, right = self.gen(expr.left), self.gen(expr.right)
        batched = left.batched or right.batched
        if expr.op == "@":
            text = f"H.matmul({left.text}, {right.text}, rank_a={left.rank}, rank_b={right.rank})"
            return Code(text, rank, batched)
        left, right = self._lift(left, rank), self._lift(right, rank)
        if expr.op not in _PY_OP:  # comparison
            return Code(f"H.compare({left.text} {expr.op} {right.text})", rank, batched)
        op = _PY_OP[expr.op]
        strength = _PRECEDENCE[op]
        if op == "**":
            text = f"{self._wrap(left, strength + 1)} ** {self._wrap(right, _UNARY)}"
        else:
            text = f"{self._wrap(left, strength)} {op} {self._wrap(right, strength + 1)}"
        return Code(text, rank, batched, strength)

    def _index(self, expr: ast.Index) -> Code:
        target = self.gen(expr.target)
        items = [self._index_item(i) for i in expr.items]
        items += [":"] * (target.rank - len(items))
        return Code(f"{self._wrap(target, _ATOM)}[..., {', '.join(items)}]", self.rank(expr), target.batched)

    def _index_item(self, item) -> str:
        if not isinstance(item, ast.Slice):
            return str(self._const(item))
        parts = ["" if p is None else str(self._const(p)) for p in (item.start, item.stop)]
        return ":".join(parts) + (f":{self._const(item.step)}" if item.step is not None else "")

    def _const(self, expr):
        value = evaluate(expr, self.model.constants)
        return int(value) if float(value) == int(value) else value

    # ------------------------------------------------------------ calls
    def _call(self, call: ast.Call) -> Code:
        name = call.func
        rank = self.rank(call)
        if name in self.model.externs:
            return self._extern(call)
        if name in B.LAYERS:
            return self._layer(call)
        if name in B.UNARY:
            arg = self.gen(call.args[0])
            func = "torch.nn.functional.softplus" if name == "softplus" else f"torch.{name}"
            if not arg.batched and arg.rank == 0:   # a number: see _writable
                func = _MATH[name]
            return Code(f"{func}({arg.text})", rank, arg.batched)
        if name in B.ELEMENTWISE_NARY:
            helper = {"min": "minimum", "max": "maximum"}.get(name, name)
            args = self._lifted(call.args, rank)
            return self._helper(helper, args, rank)
        if name in B.REDUCTIONS or name in B.LAST_AXIS:
            return self._last_axis(call, rank)
        if name == "concat":
            return self._helper("concat", [self.gen(a) for a in call.args], rank)
        if name == "stack":
            return self._helper("stack", self._lifted(call.args, rank - 1), rank)
        if name == "onehot":
            arg = self.gen(call.args[0])
            text = f"H.onehot({arg.text}, categories={self._const(call.args[1])}, like=self._anchor)"
            return Code(text, rank, arg.batched)
        arg = self.gen(call.args[0])  # reshape
        dims = tuple(int(self._const(d)) for d in call.args[1].items)
        return Code(f"H.reshape({arg.text}, element_rank={arg.rank}, shape={dims})", rank, arg.batched)

    @staticmethod
    def _helper(helper: str, args: list[Code], rank: int) -> Code:
        texts = ", ".join(a.text for a in args)
        return Code(f"H.{helper}({texts}, like=self._anchor)", rank, any(a.batched for a in args))

    def _last_axis(self, call: ast.Call, rank: int) -> Code:
        arg = self.gen(call.args[0])
        base = self._wrap(arg, _ATOM)
        text = {
            "sum": f"{base}.sum(dim=-1)", "mean": f"{base}.mean(dim=-1)", "prod": f"{base}.prod(dim=-1)",
            "logsumexp": f"torch.logsumexp({arg.text}, dim=-1)",
            "softmax": f"torch.softmax({arg.text}, dim=-1)", "argmax": f"{base}.argmax(dim=-1)",
        }[call.func]
        return Code(text, rank, arg.batched)

    def _extern(self, call: ast.Call) -> Code:
        info = self.model.externs[call.func]
        args = [self._lift(self.gen(a), len(shape)) for a, (_, shape, _) in zip(call.args, info.params)]
        texts = "".join(f", {a.text}" for a in args)
        self.reads.add(self.batch_var)
        return Code(f"self._extern({call.func!r}, {self.batch_var}{texts})", self.rank(call), True)

    def _layer(self, call: ast.Call) -> Code:
        layers = self.model.call_layers[id(call)]
        arg = self._layer_input(call.args[0])
        if layers[0].bayesian:
            text = arg
            for layer in layers:
                weight, bias = self.names[layer.weight_name], self.names[layer.bias_name]
                self.reads |= {weight, bias}
                text = f"H.bayes_dense({text}, {weight}, {bias}, activation={layer.activation!r})"
            return Code(text, self.rank(call), True)
        return Code(self.layer_calls[id(call)].format(arg), self.rank(call), True)

    def _layer_input(self, expr) -> str:
        code = self.gen(expr)
        vtype = self.model.expr_shapes[id(expr)]
        if vtype.dtype == "cat" and vtype.categories:
            return f"H.onehot({code.text}, categories={vtype.categories}, like=self._anchor)"
        if code.rank == 0:
            return f"{self._wrap(code, _ATOM)}[..., None]" if code.batched else f"torch.tensor([{code.text}])"
        return code.text


def lift(text: str, element_rank: int, new_axes: int) -> str:
    """Code that inserts `new_axes` singleton axes before the element axes of `text`."""
    return f"H.lift({text}, element_rank={element_rank}, new_axes={new_axes})"
