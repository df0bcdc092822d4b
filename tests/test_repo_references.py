"""The docs and comments describe the project, not its history, and point only at
files in the repository: no internal episode numbers ("session 12", "stop 3"; name
a date or a commit instead) and no paths outside the tree (a script in /tmp, a home
folder, `../shared`, specification files the repository does not have)."""
from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("docs", "himdsl", "examples", "tests", "benchmarks", "grammar", "README.md")
BINARY = (".npz", ".npy", ".png", ".jpg", ".pdf", ".pt", ".gz", ".zip", ".pkl", ".pyc")

HISTORY = re.compile(r"\b(?:session|stop|episode|sprint|issue)\s+#?\d+\b", re.I)
OUTSIDE = re.compile(
    r"(?<![\w.])/tmp/"                              # temporary scripts and outputs
    r"|(?<![\w.])/(?:work|home|root|Users)/"        # someone's machine
    r"|\.\./shared\b"                               # a folder beside the checkout
    r"|(?<![\w/.-])(?:LANGUAGE|LFVI)\.md\b"         # specifications not in the repository
    r"|\blfvi-notes\.md\b"                          # a deleted lab notebook
)


def scanned_files():
    this = os.path.abspath(__file__)
    for top in SCANNED:
        path = os.path.join(ROOT, top)
        if os.path.isfile(path):
            yield path
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", ".pytest_cache")]
            for name in files:
                full = os.path.join(folder, name)
                if not name.endswith(BINARY) and full != this:
                    yield full


def offending_lines(pattern: re.Pattern) -> list[str]:
    found = []
    for path in scanned_files():
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if pattern.search(line):
                found.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    return found


def test_no_internal_history():
    assert offending_lines(HISTORY) == []


def test_no_references_outside_the_repository():
    assert offending_lines(OUTSIDE) == []


def test_the_patterns_catch_what_they_are_for():
    for text in ("see session 12", "fixed in Stop 3", "(issue #13)", "/tmp/run_fit.py",
                 "LANGUAGE.md lists", "(LFVI.md pitfall 1)", "../shared/notes", "/home/me/x"):
        assert HISTORY.search(text) or OUTSIDE.search(text), text
    for text in ("docs/language.md", "docs/lfvi.md", "stop at step 300", "tempfile.mkdtemp()",
                 "a session of 3 fits"):
        assert not (HISTORY.search(text) or OUTSIDE.search(text)), text
