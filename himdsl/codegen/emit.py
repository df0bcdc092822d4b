"""A tiny emitter for generated Python: lines with indentation, kept within
`LINE_LIMIT` characters by breaking at brackets the way a person would.

    e = Emitter()
    with e.block("def f(x):"):
        e.line("return x")
    e.text() == "def f(x):\\n    return x\\n"
"""
from __future__ import annotations

import io
import keyword
import textwrap
import tokenize
from contextlib import contextmanager

LINE_LIMIT = 100
# what a generated module imports or defines at the top level
MODULE_NAMES = frozenset({"torch", "math", "H", "HimModule", "NodeInfo", "ExternSpec", "SOURCE_SHA256"})
_OPEN, _CLOSE = "([{", ")]}"
_OPERAND_END = (tokenize.NAME, tokenize.NUMBER, tokenize.STRING)


class Emitter:
    """Collects lines of Python source with the current indentation."""

    def __init__(self, indent: str = "    ", level: int = 0):
        self.lines: list[str] = []
        self.level = level
        self.indent = indent

    def line(self, text: str = "") -> None:
        self.lines += wrap(self.indent * self.level + text) if text else [""]

    def comment(self, text: str) -> None:
        """A `#` comment, over several lines when it is long."""
        prefix = self.indent * self.level + "# "
        self.lines += textwrap.wrap(text, LINE_LIMIT, initial_indent=prefix,
                                    subsequent_indent=prefix + "  ", break_long_words=False,
                                    break_on_hyphens=False) or [prefix.rstrip()]

    @contextmanager
    def block(self, header: str):
        self.line(header)
        self.level += 1
        yield
        self.level -= 1

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# ------------------------------------------------------------------ line breaking
def wrap(line: str, limit: int = LINE_LIMIT) -> list[str]:
    """One logical line of code as physical lines of at most `limit` characters:
    the last bracket's contents go on lines of their own (as many items to a
    line as fit), an assignment's long right side is bracketed and broken at
    operators. A line no bracket can break (a long string) stays as it is."""
    if len(line) <= limit:
        return [line]
    code = line.lstrip()
    indent = line[: len(line) - len(code)]
    tokens = _tokens(code)
    if tokens is None:
        return [line]
    bracket = _closing_bracket(code, tokens)
    if bracket is None:
        rhs = _assignment_value(tokens)
        if rhs is None:
            return [line]
        head, value = code[:rhs], code[rhs:].strip()
        space = " " if head.endswith(" =") else ""        # `x = value`, not `name=value`
        comma = "," if value.endswith(",") else ""        # an argument: `name=value,`
        return wrap(f"{indent}{head}{space}({value.removesuffix(',').rstrip()}){comma}", limit)
    start, end = bracket
    inner, pieces = code[start + 1:end].strip(), _items(code, tokens, start, end)
    inner_indent = indent + "    "
    if len(inner_indent) + len(inner) <= limit:
        body = [inner_indent + inner]
    elif len(pieces) > 1:
        body = _fill(pieces, inner_indent, limit)
    else:
        body = [inner_indent + piece for piece in _operands(inner)]
    lines = [indent + code[: start + 1]]
    for item in body:
        lines += wrap(item, limit)
    return lines + [indent + code[end:]]


def _fill(pieces: list[str], indent: str, limit: int) -> list[str]:
    """Comma-separated items, as many to a line as fit, each line ending in a comma."""
    lines: list[str] = []
    for piece in pieces:
        if lines and len(lines[-1]) + len(piece) + 2 <= limit:
            lines[-1] += f" {piece},"
        else:
            lines.append(f"{indent}{piece},")
    return lines


def _tokens(code: str):
    """The tokens of one line of code, None if it does not tokenize."""
    try:
        return [t for t in tokenize.generate_tokens(io.StringIO(code).readline)
                if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT,
                                  tokenize.DEDENT)]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None


def _depths(tokens):
    """(token, bracket depth before it) for every token."""
    depth = 0
    for token in tokens:
        if token.type == tokenize.OP and token.string in _CLOSE:
            depth -= 1
        yield token, depth
        if token.type == tokenize.OP and token.string in _OPEN:
            depth += 1


def _closing_bracket(code: str, tokens) -> tuple[int, int] | None:
    """(open, close) columns of the outermost bracket pair that ends the line, when
    all that follows it is `,` or `:`; None otherwise."""
    pairs, stack = [], []
    for token, depth in _depths(tokens):
        if token.type == tokenize.OP and token.string in _OPEN and depth == 0:
            stack.append(token.start[1])
        elif token.type == tokenize.OP and token.string in _CLOSE and depth == 0 and stack:
            pairs.append((stack.pop(), token.start[1]))
    if not pairs or code[pairs[-1][1] + 1:].strip() not in ("", ",", ":"):
        return None
    start, end = pairs[-1]
    return (start, end) if end - start > 1 else None


def _items(code: str, tokens, start: int, end: int) -> list[str]:
    """The comma-separated items between columns `start` and `end` (one bracket level)."""
    cuts = [start] + [t.start[1] for t, depth in _depths(tokens)
                      if depth == 1 and t.string == "," and start < t.start[1] < end] + [end]
    pieces = [code[a + 1:b].strip() for a, b in zip(cuts[:-1], cuts[1:])]
    return [p for p in pieces if p]


def _assignment_value(tokens) -> int | None:
    """Column where the value of an assignment `a = b = value` starts."""
    equals = [t.end[1] for t, depth in _depths(tokens) if depth == 0 and t.string == "="]
    return equals[-1] if equals else None


def _operands(expression: str) -> list[str]:
    """`a + b - c` as ["a", "+ b", "- c"], cut at the loosest top-level operators."""
    tokens = _tokens(expression) or []
    for operators in (("+", "-"), ("*", "/", "@")):
        cuts, previous = [], None
        for token, depth in _depths(tokens):
            binary = previous is not None and (previous.type in _OPERAND_END or previous.string in ")]}")
            if depth == 0 and token.string in operators and binary:
                cuts.append(token.start[1])
            previous = token
        if cuts:
            bounds = [0] + cuts + [len(expression)]
            return [expression[a:b].strip() for a, b in zip(bounds[:-1], bounds[1:])]
    return [expression]


# ------------------------------------------------------------------ names
def identifier(name: str) -> str:
    """The Python identifier a model name wants (`h.weight` → `h_weight`, `lambda` →
    `lambda_`); `Names` makes it unique."""
    ident = name.replace(".", "_")
    if ident.startswith("__"):   # would be mangled inside the class
        ident = "v" + ident
    return ident + "_" if keyword.iskeyword(ident) else ident


def class_name(model_name: str) -> str:
    """`hier_gauss` → `HierGauss` (`HModel` where the name would be one the generated
    module imports, such as `H`)."""
    parts = [p for p in model_name.split("_") if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return name + "Model" if keyword.iskeyword(name) or name in MODULE_NAMES else name
