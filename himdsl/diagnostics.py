"""Diagnostics: values that every stage returns, and the one function that renders them.

    model.him:7:17: error[E0101]: undefined name `h3`
        |
      7 |     latent z1 = dense(h3, 128, relu)
        |                       ^^
        = help: did you mean `h2`?
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A source range: 1-based lines and columns, end column exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    def __bool__(self) -> bool:
        return self.line > 0


@dataclass(frozen=True)
class Note:
    """A secondary location attached to a diagnostic ("declared here")."""

    span: Span
    message: str


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # "error" or "warning"
    code: str
    message: str
    span: Span
    hint: str | None = None
    notes: tuple[Note, ...] = field(default=())

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class HimError(Exception):
    """Raised by the Python API when a stage reports errors; carries them all."""

    def __init__(self, diagnostics: list[Diagnostic], path: str = "<string>", source: str = ""):
        self.diagnostics = diagnostics
        self.path = path
        self.source = source
        errors = [d for d in diagnostics if d.is_error]
        super().__init__(render_all(errors or diagnostics, path, source))


def error(code: str, span: Span, message: str, hint: str | None = None, notes=()) -> Diagnostic:
    """An error diagnostic."""
    return Diagnostic("error", code, message, span, hint, tuple(notes))


def warning(code: str, span: Span, message: str, hint: str | None = None, notes=()) -> Diagnostic:
    """A warning diagnostic."""
    return Diagnostic("warning", code, message, span, hint, tuple(notes))


def did_you_mean(name: str, candidates) -> str | None:
    """`did you mean `x`?` for the closest candidate, or None.

    difflib's ratio misses short names (`h3` for `h2` scores 0.5), so a candidate
    one or two edits away (at most a third of the name) also counts.
    """
    pool = sorted(set(candidates) - {name})
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not close:
        limit = max(1, len(name) // 3)
        near = [(edit_distance(name, c), c) for c in pool]
        close = [c for d, c in sorted(near) if d <= limit and d < len(name)][:1]
    return f"did you mean `{close[0]}`?" if close else None


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, with a swap of two neighbours counting as one edit."""
    previous, current = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        before, previous, current = previous, current, [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], before[j - 2] + 1)
    return current[-1]


def render(diag: Diagnostic, path: str, source: str) -> str:
    """Render one diagnostic: location line, quoted source with caret, notes, hint."""
    lines = source.splitlines()
    where = f"{path}:{diag.span.line}:{diag.span.column}" if diag.span else path
    out = [f"{where}: {diag.severity}[{diag.code}]: {diag.message}"]
    out += _excerpt(diag.span, lines)
    for note in diag.notes:
        out.append(f"  = note: {path}:{note.span.line}:{note.span.column}: {note.message}")
        out += _excerpt(note.span, lines)
    if diag.hint:
        out.append(f"  = help: {diag.hint}")
    return "\n".join(out)


def render_all(diagnostics: list[Diagnostic], path: str, source: str) -> str:
    """Render diagnostics in source order, followed by a one-line count."""
    ordered = sorted(diagnostics, key=lambda d: (d.span.line, d.span.column, d.severity != "error"))
    parts = [render(d, path, source) for d in ordered]
    return "\n\n".join(parts)


def summary_line(diagnostics: list[Diagnostic]) -> str:
    """`2 errors, 1 warning` (or `no problems found`)."""
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    if not diagnostics:
        return "no problems found"
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' * (errors != 1)}")
    if warnings:
        parts.append(f"{warnings} warning{'s' * (warnings != 1)}")
    return ", ".join(parts)


def _excerpt(span: Span, lines: list[str]) -> list[str]:
    if not span or span.line > len(lines):
        return []
    text = lines[span.line - 1].replace("\t", " ")
    width = len(str(span.line))
    end = span.end_column if span.end_line == span.line else len(text) + 1
    carets = "^" * max(1, end - span.column)
    gutter = " " * (width + 3)
    return [
        f"{gutter}|",
        f"  {span.line} | {text}",
        f"{gutter}| {' ' * (span.column - 1)}{carets}",
    ]
