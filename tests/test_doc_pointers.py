"""Pointers into the docs must not rot: every `docs/X.md` that the code, the examples,
the benchmarks or the docs themselves name is a file of the repository, and every
`docs/X.md, "Section"` pointer names one of that file's headings.

A section matches a heading when it is the heading's text or its start, up to a
space, "(" or ":" (`"Checks"` names `## Checks (checks.py): ...`), ignoring case.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("himdsl", "examples", "benchmarks", "docs", "README.md")
SUFFIXES = {".py", ".md", ".him", ".toml", ".lark"}
# docs/X.md, optionally followed by `, "Section"`; the section may begin on the next
# line of a comment or docstring.
POINTER = re.compile(r'docs/([A-Za-z0-9_./-]+\.md)(?:,\s*(?:#\s*)?"([^"\n]+)")?')
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _files():
    for entry in SCANNED:
        path = ROOT / entry
        paths = [path] if path.is_file() else sorted(path.rglob("*"))
        for p in paths:
            if p.is_file() and p.suffix in SUFFIXES:
                yield p


def _pointers():
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in POINTER.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield f"{path.relative_to(ROOT)}:{line}", match.group(1), match.group(2)


def _headings(doc: str) -> list[str]:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)  # not headings
    return [h.replace("`", "") for h in HEADING.findall(text)]


def _names(section: str, heading: str) -> bool:
    section, heading = section.strip().lower(), heading.strip().lower()
    return heading == section or (heading.startswith(section) and heading[len(section)] in " (:")


def test_pointers_are_found():
    """The scan sees the pointers it is meant to check (a broken regex passes nothing)."""
    sections = [s for _, _, s in _pointers() if s]
    assert len(sections) >= 5, sections


def test_every_doc_pointer_names_a_file_and_a_heading():
    broken = []
    for where, doc, section in _pointers():
        if not (ROOT / "docs" / doc).is_file():
            broken.append(f"{where}: docs/{doc} does not exist")
        elif section and not any(_names(section, h) for h in _headings(doc)):
            broken.append(f'{where}: docs/{doc} has no heading "{section}"')
    assert not broken, "\n".join(broken)


def test_section_matching():
    assert _names("Checks", "Checks (checks.py): a fit that fails one is not a posterior")
    assert _names("ratio inputs", "Ratio inputs (ratio_inputs)")
    assert not _names("Check", "Checks (checks.py)")
    assert not _names("Contrastive mode", "The contrastive ratio (contrastive.py)")
