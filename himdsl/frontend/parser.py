"""Parse `.him` source text into an AST (`Program`) or a syntax diagnostic.

    >>> parse_source("model m\\ndata x : real[2]").statements[1]
    Data(name='x', type=Type(base='real', dims=[Num(value=2, is_int=True)], categories=None))

The grammar is `grammar/him.lark`, shipped in the wheel as `himdsl.grammar`.
The transformer only builds dataclasses; every check lives in `himdsl.semantics`.
"""
from __future__ import annotations

import functools
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..diagnostics import Diagnostic, HimError, Note, Span, error
from . import ast

_OPENING = {"LPAR", "LSQB"}
_CLOSING = {"RPAR", "RSQB"}

# Human names for the grammar's terminals, used in "expected ..." messages.
TOKEN_NAMES = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "a new line",
    "SEMICOLON": "`;`", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`",
    "LBRACE": "`{`", "RBRACE": "`}`", "COMMA": "`,`", "COLON": "`:`", "EQUAL": "`=`",
    "TILDE": "`~`", "MINUS": "`-`", "CIRCUMFLEX": "`^`", "__ANON_0": "`->`",
    "ADD_OP": "`+` or `-`", "MUL_OP": "`*`, `/` or `@`", "COMPARE_OP": "a comparison",
    "$END": "the end of the file",
}


class _BracketNewlines:
    """Postlexer: inside ( ) and [ ] a newline is only whitespace.

    It also keeps the brackets and braces still open, so that a syntax error can
    point at the `(` or `{` that was never closed. Openers are pushed and closers
    popped after the token is handed to the parser: when the parser rejects a token,
    `open` still describes the text before it.
    """

    always_accept = ("_NL",)

    def __init__(self):
        self.open: list[Token] = []

    def process(self, stream):
        self.open = []
        for token in stream:
            if token.type == "_NL" and self.open and self.open[-1].type in _OPENING:
                continue
            yield token
            if token.type in _OPENERS:
                self.open.append(token)
            elif token.type in _CLOSERS and self.open:
                self.open.pop()


_OPENERS = _OPENING | {"LBRACE"}
_CLOSERS = _CLOSING | {"RBRACE"}
_CLOSER_OF = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_POSTLEX = _BracketNewlines()


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = resources.files("himdsl.grammar").joinpath("him.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, postlex=_POSTLEX,
                maybe_placeholders=True)


def grammar_text() -> str:
    """The Lark grammar shipped with the package."""
    return resources.files("himdsl.grammar").joinpath("him.lark").read_text()


def parse_source(source: str, path: str = "<string>") -> ast.Program:
    """Parse source text; raise `HimError` with one syntax diagnostic on failure."""
    try:
        tree = _lark().parse(source)
    except UnexpectedInput as exc:
        raise HimError([syntax_diagnostic(exc, source)], path, source) from None
    program = _ToAst().transform(tree)
    program.path, program.source = path, source
    return program


def parse_file(path) -> ast.Program:
    """Read and parse a `.him` file (OSError propagates to the caller)."""
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    return parse_source(source, str(path))


# ------------------------------------------------------------------ syntax errors
def syntax_diagnostic(exc: UnexpectedInput, source: str) -> Diagnostic:
    """Turn a Lark exception into a diagnostic with a readable 'expected' list."""
    if isinstance(exc, UnexpectedCharacters):
        char = source[exc.pos_in_stream] if exc.pos_in_stream < len(source) else "?"
        span = Span(exc.line, exc.column, exc.line, exc.column + 1)
        hint = "strings use double quotes" if char == "'" else None
        return error("E0001", span, f"unexpected character `{char}`", hint)
    expected = _plausible(set(getattr(exc, "expected", None) or ()))
    if isinstance(exc, UnexpectedEOF) or exc.token.type == "$END":
        return _unclosed("E0002", _end_of_text(source), "unexpected end of file", expected) or error(
            "E0002", _end_of_text(source), "unexpected end of file", _expected_hint(expected))
    assert isinstance(exc, UnexpectedToken)
    token = exc.token
    text = "a new line" if token.type == "_NL" else f"`{token.value}`"
    end = token.end_column if token.type != "_NL" else token.column + 1
    span = Span(token.line, token.column, token.line, end)
    unclosed = _unclosed("E0003", span, f"unexpected {text}", expected) if _ends_bracket(token) else None
    return unclosed or error("E0003", span, f"unexpected {text}", _syntax_hint(token, expected))


def _ends_bracket(token: Token) -> bool:
    """Whether a rejected token suggests the innermost `(` or `[` lacks its closer:
    a closer of another kind, or a token on a later line (newlines inside brackets
    are skipped, so the next statement runs into the open call). An open `{` is
    only blamed at the end of the file: `}` is acceptable after most statements."""
    if not _POSTLEX.open or _POSTLEX.open[-1].type not in _OPENING:
        return False
    return token.type in _CLOSERS or token.line > _POSTLEX.open[-1].line


def _plausible(expected: set) -> set:
    """LALR's expected set merges contexts; drop what cannot follow here (a new line
    or `;` inside brackets, a closer for a bracket that is not open)."""
    innermost = _POSTLEX.open[-1].type if _POSTLEX.open else None
    wanted = _CLOSER_OF.get(innermost)
    drop = {c for c in _CLOSERS if c != wanted}
    if innermost in _OPENING:
        drop |= {"_NL", "SEMICOLON"}
    return expected - drop


def _end_of_text(source: str) -> Span:
    """Just after the last character that is not white space (1:1 in an empty file)."""
    text = source.rstrip()
    line = text.count("\n") + 1
    col = len(text.rsplit("\n", 1)[-1]) + 1
    return Span(line, col, line, col + 1)


def _unclosed(code: str, span: Span, message: str, expected) -> Diagnostic | None:
    """An error naming the innermost open bracket when its closer is what the parser wanted."""
    if not _POSTLEX.open:
        return None
    opener = _POSTLEX.open[-1]
    closer = _CLOSER_OF[opener.type]
    if closer not in expected or (opener.line, opener.column) >= (span.line, span.column):
        return None
    where = f"line {opener.line}" if opener.line != span.line else f"column {opener.column}"
    rest = sorted({TOKEN_NAMES.get(t, _keyword_name(t)) for t in expected} - {TOKEN_NAMES[closer]})
    hint = f"add {TOKEN_NAMES[closer]}" + (f" (or {', '.join(rest[:4])}{', ...' * (len(rest) > 4)})"
                                             if rest and len(rest) <= 6 else "")
    return error(code, span, f"{message}: the {TOKEN_NAMES[opener.type]} on {where} is never closed", hint,
                 [Note(_token_span(opener), f"this {TOKEN_NAMES[opener.type]} is never closed")])


def _syntax_hint(token: Token, expected) -> str | None:
    if token.type == "NAME" and "_NL" in expected:
        return "statements end at a new line or `;`: is something missing before this?"
    if token.type == "NAME" and token.value in {"real", "int", "cat"}:
        return None
    return _expected_hint(expected)


def _expected_hint(expected) -> str | None:
    first = {"RPAR": 0, "RSQB": 0, "RBRACE": 0, "COMMA": 1}  # the usual fix comes first
    ordered = sorted(expected, key=lambda t: (first.get(t, 2), TOKEN_NAMES.get(t, _keyword_name(t))))
    names = list(dict.fromkeys(TOKEN_NAMES.get(t, _keyword_name(t)) for t in ordered))
    if not names:
        return None
    if len(names) > 6:
        names = names[:6] + ["..."]
    return "expected " + ", ".join(names)


def _keyword_name(terminal: str) -> str:
    return f"`{terminal.lower()}`" if terminal.isalpha() else terminal


# ------------------------------------------------------------------ tree → AST
def _span(meta) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _token_span(token: Token) -> Span:
    return Span(token.line, token.column, token.end_line, token.end_column)


@v_args(meta=True)
class _ToAst(Transformer):
    """Builds `himdsl.frontend.ast` nodes; does no checking."""

    def start(self, meta, stmts):
        return ast.Program(list(stmts))

    def model_stmt(self, meta, items):
        (name,) = items
        return ast.ModelName(str(name), _span(meta), _token_span(name))

    def const_stmt(self, meta, items):
        name, value = items
        return ast.Const(str(name), value, _span(meta), _token_span(name))

    def data_stmt(self, meta, items):
        name, typ = items
        return ast.Data(str(name), typ, _span(meta), _token_span(name))

    def param_stmt(self, meta, items):
        name, typ = items
        return ast.Param(str(name), typ, _span(meta), _token_span(name))

    def node_dist(self, meta, items):
        keyword, name, dist, shape = items
        return ast.Node(str(keyword), str(name), dist=dist, shape=shape,
                        span=_span(meta), name_span=_token_span(name))

    def node_def(self, meta, items):
        keyword, name, value = items
        return ast.Node(str(keyword), str(name), value=value, span=_span(meta),
                        name_span=_token_span(name))

    def dist(self, meta, items):
        name, args = items
        return self._make_call(meta, name, args)

    def shape(self, meta, items):
        (dims,) = items
        return dims

    def dims(self, meta, items):
        return list(items)

    def type_array(self, meta, items):
        name, dims = items
        return ast.Type(str(name), dims or [], None, _span(meta))

    def type_call(self, meta, items):
        name, arg = items
        return ast.Type(str(name), [], arg, _span(meta))

    def extern_stmt(self, meta, items):
        name, params, result, path = items
        return ast.Extern(str(name), params or [], result, self._string(path), _span(meta),
                          _token_span(name))

    def extern_params(self, meta, items):
        return list(items)

    def extern_param(self, meta, items):
        name, typ = items
        return ast.ExternArg(str(name), typ, _span(meta))

    def plate_stmt(self, meta, items):
        name, over, *body = items
        return ast.Plate(str(name), ast.Name(str(over), _token_span(over)), list(body),
                         _span(meta), _token_span(name))

    def guide_block(self, meta, items):
        return ast.Guide(list(items), _span(meta))

    def guide_entry(self, meta, items):
        name, family = items
        return ast.GuideEntry(str(name), family, _span(meta))

    def settings_block(self, meta, items):
        block, *entries = items
        return ast.Settings(str(block), list(entries), _span(meta))

    def setting(self, meta, items):
        name, value = items
        return ast.Setting(str(name), value, _span(meta))

    # ---- expressions
    def binary(self, meta, items):
        left, op, right = items
        return ast.Binary(str(op), left, right, _span(meta))

    def neg(self, meta, items):
        (operand,) = items
        return ast.Neg(operand, _span(meta))

    def pow(self, meta, items):
        left, right = items
        return ast.Binary("^", left, right, _span(meta))

    def index(self, meta, items):
        target, index_items = items
        return ast.Index(target, index_items, _span(meta))

    def index_items(self, meta, items):
        return list(items)

    def slice(self, meta, items):
        start, stop, step = (list(items) + [None, None, None])[:3]
        return ast.Slice(start, stop, step, _span(meta))

    def number(self, meta, items):
        (token,) = items
        text = str(token)
        is_int = not any(c in text for c in ".eE")
        return ast.Num(int(text) if is_int else float(text), is_int, _token_span(token))

    def string(self, meta, items):
        (token,) = items
        return self._string(token)

    def name(self, meta, items):
        (token,) = items
        return ast.Name(str(token), _token_span(token))

    def keyword_atom(self, meta, items):
        (token,) = items
        return ast.Name(str(token), _token_span(token))

    def call(self, meta, items):
        name, args = items
        return self._make_call(meta, name, args)

    def list(self, meta, items):
        (list_items,) = items
        return ast.ListLit(list_items or [], _span(meta))

    def list_items(self, meta, items):
        return list(items)

    def args(self, meta, items):
        return list(items)

    def kwarg(self, meta, items):
        name, value = items
        return ast.Keyword(name, value, _span(meta))

    def arg_name(self, meta, items):
        (token,) = items
        return str(token)

    @staticmethod
    def _string(token: Token) -> ast.Str:
        return ast.Str(str(token)[1:-1], _token_span(token))

    @staticmethod
    def _make_call(meta, name: Token, args) -> ast.Call:
        positional = [a for a in (args or []) if not isinstance(a, ast.Keyword)]
        keywords = [a for a in (args or []) if isinstance(a, ast.Keyword)]
        return ast.Call(str(name), positional, keywords, _span(meta), _token_span(name),
                        _late_positional(args or []))


def _late_positional(args) -> Span:
    """The span of the first positional argument after a named one, or NOWHERE."""
    seen_keyword = False
    for arg in args:
        if isinstance(arg, ast.Keyword):
            seen_keyword = True
        elif seen_keyword:
            return arg.span
    return ast.NOWHERE
