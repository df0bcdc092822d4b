"""Parse `.him` source text into an AST (`Program`) or a syntax diagnostic.

    >>> parse_source("model m\\ndata x : real[2]").statements[1]
    Data(name='x', type=Type(base='real', dims=[Num(value=2, is_int=True)], categories=None))

The grammar is `grammar/him.lark`, shipped in the wheel as `himdsl.grammar`.
The transformer only builds dataclasses; every check lives in `himdsl.semantics`.
"""
from __future__ import annotations

import functools
from importlib import resources

from lark import Lark, Token, Transformer
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
        previous = None
        for token in stream:
            if token.type == "_NL" and self.open and self.open[-1].type in _OPENING:
                continue
            _check_glued(previous, token)
            previous = token
            yield token
            if token.type in _OPENERS:
                self.open.append(token)
            elif token.type in _CLOSERS and self.open:
                self.open.pop()


class GluedKeyword(Exception):
    """A keyword run into the next word (`constD`): Lark's contextual lexer would
    read it as `const D` where only a keyword may come, and as a name elsewhere."""

    def __init__(self, keyword: Token, rest: Token):
        super().__init__(f"{keyword}{rest}")
        self.keyword, self.rest = keyword, rest


def _check_glued(previous: Token | None, token: Token) -> None:
    if (previous is not None and previous.type != "NAME" and previous.value.isalpha()
            and token.start_pos == previous.end_pos and (token.value[:1].isalnum() or token.value[:1] == "_")):
        raise GluedKeyword(previous, token)


_OPENERS = _OPENING | {"LBRACE"}
_CLOSERS = _CLOSING | {"RBRACE"}
_CLOSER_OF = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_POSTLEX = _BracketNewlines()


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = resources.files("himdsl.grammar").joinpath("him.lark").read_text()
    # The transformer runs inside the parser and spans come from the tokens: no
    # intermediate tree, no position propagation (about 3× faster on large models).
    return Lark(grammar, parser="lalr", postlex=_POSTLEX, maybe_placeholders=True,
                transformer=_ToAst())


def grammar_text() -> str:
    """The Lark grammar shipped with the package."""
    return resources.files("himdsl.grammar").joinpath("him.lark").read_text()


def parse_source(source: str, path: str = "<string>") -> ast.Program:
    """Parse source text; raise `HimError` with one syntax diagnostic on failure."""
    try:
        program = _lark().parse(source)
    except UnexpectedInput as exc:
        raise HimError([syntax_diagnostic(exc, source)], path, source) from None
    except GluedKeyword as exc:
        raise HimError([glued_diagnostic(exc)], path, source) from None
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


def glued_diagnostic(exc: GluedKeyword) -> Diagnostic:
    """`constD`: an error on the whole word, suggesting the space."""
    keyword, rest = exc.keyword, exc.rest
    span = Span(keyword.line, keyword.column, rest.line, rest.column + len(rest.value))
    return error("E0003", span, f"unexpected `{keyword}{rest}`: the keyword `{keyword}` runs into `{rest}`",
                 f"write `{keyword} {rest}`, or choose a name that does not start with a keyword")


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


# ------------------------------------------------------------------ parse → AST
def _token_span(token: Token) -> Span:
    return Span(token.line, token.column, token.end_line, token.end_column)


def _first(item):
    """The first positioned thing in a child (token, AST node or list), or None."""
    if isinstance(item, list):
        return next((f for f in map(_first, item) if f is not None), None)
    return item if isinstance(item, Token) or getattr(item, "span", None) else None


def _last(item):
    if isinstance(item, list):
        return next((f for f in map(_last, reversed(item)) if f is not None), None)
    return item if isinstance(item, Token) or getattr(item, "span", None) else None


def _span(items) -> Span:
    """From the start of the first positioned child to the end of the last."""
    first, last = _first(list(items)), _last(list(items))
    if first is None:
        return ast.NOWHERE
    start = _token_span(first) if isinstance(first, Token) else first.span
    end = _token_span(last) if isinstance(last, Token) else last.span
    return Span(start.line, start.column, end.end_line, end.end_column)


def _values(items) -> list:
    """Children without the keyword and bracket tokens kept only for their position."""
    return [i for i in items if not (isinstance(i, Token) and i.type in _PUNCTUATION)]


_PUNCTUATION = {"MODEL", "CONST", "DATA", "PARAM", "EXTERN", "PLATE", "GUIDE", "LSQB", "RSQB", "RPAR",
                "RBRACE", "MINUS"}


class _ToAst(Transformer):
    """Builds `himdsl.frontend.ast` nodes inside the parser; does no checking."""

    def start(self, items):
        return ast.Program(list(items))

    def model_stmt(self, items):
        (name,) = _values(items)
        return ast.ModelName(str(name), _span(items), _token_span(name))

    def const_stmt(self, items):
        name, value = _values(items)
        return ast.Const(str(name), value, _span(items), _token_span(name))

    def data_stmt(self, items):
        name, typ = _values(items)
        return ast.Data(str(name), typ, _span(items), _token_span(name))

    def param_stmt(self, items):
        name, typ = _values(items)
        return ast.Param(str(name), typ, _span(items), _token_span(name))

    def node_dist(self, items):
        keyword, name, dist, shape = items
        return ast.Node(str(keyword), str(name), dist=dist, shape=shape and shape.dims,
                        span=_span(items), name_span=_token_span(name))

    def node_def(self, items):
        keyword, name, value = items
        return ast.Node(str(keyword), str(name), value=value, span=_span(items),
                        name_span=_token_span(name))

    def dist(self, items):
        return self._make_call(items)

    def shape(self, items):
        dims, _ = items
        return _Shape(dims, _span(items))

    def dims(self, items):
        return list(items)

    def type_array(self, items):
        name, shape = items
        return ast.Type(str(name), shape.dims if shape else [], None, _span(items))

    def type_call(self, items):
        name, arg, _ = items
        return ast.Type(str(name), [], arg, _span(items))

    def extern_stmt(self, items):
        name, params, result, path = _values(items)
        return ast.Extern(str(name), params or [], result, self._string(path), _span(items),
                          _token_span(name))

    def extern_params(self, items):
        return list(items)

    def extern_param(self, items):
        name, typ = items
        return ast.ExternArg(str(name), typ, _span(items))

    def plate_stmt(self, items):
        name, over, *body = _values(items)
        return ast.Plate(str(name), ast.Name(str(over), _token_span(over)), list(body),
                         _span(items), _token_span(name))

    def guide_block(self, items):
        return ast.Guide(_values(items), _span(items))

    def guide_entry(self, items):
        name, family = items
        return ast.GuideEntry(str(name), family, _span(items))

    def settings_block(self, items):
        block, *entries = _values(items)
        return ast.Settings(str(block), list(entries), _span(items))

    def setting(self, items):
        name, value = items
        return ast.Setting(str(name), value, _span(items))

    # ---- expressions
    def binary(self, items):
        left, op, right = items
        return ast.Binary(str(op), left, right, _span(items))

    def neg(self, items):
        _, operand = items
        return ast.Neg(operand, _span(items))

    def pow(self, items):
        left, right = items
        return ast.Binary("^", left, right, _span(items))

    def index(self, items):
        target, index_items, _ = items
        return ast.Index(target, index_items, _span(items))

    def index_items(self, items):
        return list(items)

    def slice(self, items):
        start, stop, step = (list(items) + [None, None, None])[:3]
        return ast.Slice(start, stop, step, _span(items))

    def number(self, items):
        (token,) = items
        text = str(token)
        is_int = not any(c in text for c in ".eE")
        return ast.Num(int(text) if is_int else float(text), is_int, _token_span(token))

    def string(self, items):
        (token,) = items
        return self._string(token)

    def name(self, items):
        (token,) = items
        return ast.Name(str(token), _token_span(token))

    def keyword_atom(self, items):
        (token,) = items
        return ast.Name(str(token), _token_span(token))

    def call(self, items):
        return self._make_call(items)

    def list(self, items):
        _, list_items, _ = items
        return ast.ListLit(list_items or [], _span(items))

    def list_items(self, items):
        return list(items)

    def args(self, items):
        return list(items)

    def kwarg(self, items):
        name, value = items
        return ast.Keyword(str(name), value, _span(items))

    def arg_name(self, items):
        (token,) = items
        return token

    @staticmethod
    def _string(token: Token) -> ast.Str:
        return ast.Str(str(token)[1:-1], _token_span(token))

    @staticmethod
    def _make_call(items) -> ast.Call:
        name, args, _ = items
        positional = [a for a in (args or []) if not isinstance(a, ast.Keyword)]
        keywords = [a for a in (args or []) if isinstance(a, ast.Keyword)]
        return ast.Call(str(name), positional, keywords, _span(items), _token_span(name),
                        _late_positional(args or []))


class _Shape:
    """`[d1, d2]` after a distribution or type: its dims and where it ends."""

    def __init__(self, dims, span: Span):
        self.dims, self.span = dims, span


def _late_positional(args) -> Span:
    """The span of the first positional argument after a named one, or NOWHERE."""
    seen_keyword = False
    for arg in args:
        if isinstance(arg, ast.Keyword):
            seen_keyword = True
        elif seen_keyword:
            return arg.span
    return ast.NOWHERE
