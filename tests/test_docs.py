"""The docs show what the code does: every model snippet and every command they show runs.

Model snippets are the fenced blocks of docs/language.md, docs/commands.md and
README.md whose info string is `him` or empty; each checks without errors. A comment
just before a block says how else to test it (it is not rendered):

    <!-- docs-test: context: STATEMENTS -->   the block is checked after these
                                              statements (a fragment of a model)
    <!-- docs-test: beside DIR/FILE -->       checked as a model in DIR (extern paths)
    <!-- docs-test: error CODE -->            an error example: check reports error CODE
    <!-- docs-test: output of the model above [with "OLD" -> "NEW"] -->
        before a `text` block: exactly what check prints for the nearest .him block
        above it (with OLD replaced by NEW), the file called model.him

Commands are the `himdsl ...` lines of the `bash` blocks of README.md,
docs/commands.md, docs/examples.md and docs/language.md, run in order (one block's
files feed the next) in a temporary copy of examples/, through the command line's
own entry (typer's CliRunner). A `fit` runs with `--steps 20 --samples 50` appended
(the last value of an option wins). Each must exit 0, or N when its comment says
`exit N`.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import typer.main
from typer.testing import CliRunner

from himdsl import cli
from himdsl.driver import run_frontend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNIPPET_DOCS = ("docs/language.md", "docs/commands.md", "README.md")
COMMAND_DOCS = ("README.md", "docs/commands.md", "docs/examples.md", "docs/language.md")
KNOWN_INFO = ("", "him", "text", "bash", "python")
SMALL_FIT = ["--steps", "20", "--samples", "50"]

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*docs-test:\s*((?:(?!-->).)*?)\s*-->\s*\Z", re.S)
OUTPUT = re.compile(r'output of the model above(?:\s+with\s+"(.*)"\s*->\s*"(.*)")?\Z', re.S)


@dataclass
class Block:
    doc: str
    line: int
    info: str
    body: str
    marker: str  # the docs-test comment just before the block, or ""

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(doc: str) -> list[Block]:
    text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    found = []
    for match in FENCE.finditer(text):
        before = MARKER.search(text[:match.start()])
        found.append(Block(doc, text.count("\n", 0, match.start()) + 1, match.group(1).strip(),
                           match.group(2), before.group(1) if before else ""))
    return found


def model_blocks() -> list[Block]:
    return [b for doc in SNIPPET_DOCS for b in blocks(doc) if b.info in ("", "him")]


def check(source: str, path: str = "model.him"):
    return run_frontend(source=source, path=path)


def errors(result) -> list[str]:
    return [f"{d.code}: {d.message}" for d in result.diagnostics if d.is_error]


# ------------------------------------------------------------------ model snippets
def test_every_block_is_classified():
    """No block escapes the tests below by an unknown info string."""
    for doc in SNIPPET_DOCS + COMMAND_DOCS:
        for block in blocks(doc):
            assert block.info in KNOWN_INFO, f"{block.where}: unknown info string `{block.info}`"
            if block.info in ("", "him"):
                assert not block.body.lstrip().startswith("himdsl "), \
                    f"{block.where}: a command in a model block (mark it ```bash)"


@pytest.mark.parametrize("block", model_blocks(), ids=lambda b: b.where)
def test_model_snippet(block: Block):
    marker, source, path = block.marker, block.body, "model.him"
    if marker.startswith("context:"):
        source = marker[len("context:"):].strip() + "\n" + source
    elif marker.startswith("beside "):
        path = os.path.join(ROOT, os.path.dirname(marker.split()[1]), "model.him")
    result = check(source, path)
    if marker.startswith("error "):
        code = marker.split()[1]
        assert code in [d.code for d in result.diagnostics if d.is_error], \
            f"{block.where}: the docs show error {code}; check reports {errors(result) or 'no error'}"
    else:
        assert result.ok, f"{block.where}: the snippet does not check:\n{result.rendered()}"


def output_blocks() -> list[tuple[Block, Block]]:
    """(diagnostic output block, the .him block above it)."""
    pairs = []
    for doc in SNIPPET_DOCS:
        last_model = None
        for block in blocks(doc):
            if block.info in ("", "him"):
                last_model = block
            elif block.marker.startswith("output of"):
                assert last_model is not None, f"{block.where}: no model above"
                pairs.append((block, last_model))
    return pairs


@pytest.mark.parametrize("output,model", output_blocks(), ids=lambda b: b.where)
def test_diagnostic_output(output: Block, model: Block):
    match = OUTPUT.match(output.marker)
    assert match, f"{output.where}: cannot read the marker `{output.marker}`"
    source = model.body
    if match.group(1) is not None:
        assert match.group(1) in source, f"{output.where}: `{match.group(1)}` is not in {model.where}"
        source = source.replace(match.group(1), match.group(2), 1)
    shown = "\n".join(line.rstrip() for line in output.body.strip("\n").splitlines())
    printed = "\n".join(line.rstrip() for line in check(source).rendered().strip("\n").splitlines())
    assert printed == shown


def test_snippet_markers_are_used():
    """A marker the tests do not understand would silently test nothing."""
    known = ("context:", "beside ", "error ", "output of the model above")
    for doc in SNIPPET_DOCS + COMMAND_DOCS:
        text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
        for marker in re.findall(r"<!--\s*docs-test:\s*(.*?)\s*-->", text, re.S):
            assert marker.startswith(known), f"{doc}: unknown docs-test marker `{marker}`"


# ------------------------------------------------------------------ commands
def command_lines(doc: str) -> list[tuple[int, list[str], int]]:
    """(line, argv after `himdsl`, expected exit status) of every command in a bash block."""
    out = []
    for block in blocks(doc):
        if block.info != "bash":
            continue
        for offset, line in enumerate(block.body.splitlines(), start=1):
            if not line.startswith("himdsl "):
                continue
            argv = shlex.split(line, comments=True)[1:]
            status = re.search(r"#.*\bexit (\d+)", line)
            out.append((block.line + offset, argv, int(status.group(1)) if status else 0))
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temporary copy of examples/, as the current folder; torch's thread count kept."""
    shutil.copytree(os.path.join(ROOT, "examples"), tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


def run_commands(doc: str) -> None:
    runner = CliRunner()
    lines = command_lines(doc)
    assert lines, f"{doc} shows no command"
    for line, argv, status in lines:
        if argv and argv[0] == "fit":
            argv = argv + SMALL_FIT
        result = runner.invoke(cli.app, argv)
        shown = f"{doc}:{line}: himdsl {shlex.join(argv)}"
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            f"{shown} raised {result.exception!r}\n{result.output}"
        assert result.exit_code == status, \
            f"{shown} exited {result.exit_code}, the docs say {status}\n{result.output}"


def test_readme_commands(workdir):
    run_commands("README.md")
    folder = workdir / "hier_gauss_fit"
    # the files the README says the quickstart's fit leaves
    for name in ("posterior.npz", "posterior.nc", "locals.npz", "summary.csv", "trace.csv", "fit.json",
                 "posterior.png", "checkpoint.pt"):
        assert (folder / name).exists(), name
    assert (workdir / "data.truth.npz").exists()


def test_commands_page(workdir):
    run_commands("docs/commands.md")
    # `fit` without --out writes to the folder of the model's name (model.him: its folder's)
    assert (workdir / "hier_gauss_fit" / "posterior.npz").exists()
    assert (workdir / "fits" / "normal" / "fit.json").exists()
    assert (workdir / "figures" / "lotka_volterra.json").exists()
    sets = np.load(workdir / "sets.npz")["x"]
    assert sets.shape == (3, 50, 2)  # --draws D: a leading axis of size D


def test_examples_page(workdir):
    run_commands("docs/examples.md")


def test_language_page(workdir):
    run_commands("docs/language.md")


def test_readme_python(workdir):
    """The README's Python example, run as shown (from the repository root)."""
    os.chdir(ROOT)
    code = [b.body for b in blocks("README.md") if b.info == "python"]
    assert code
    for body in code:
        scope: dict = {}
        exec(compile(body, "README.md", "exec"), scope)
        assert scope["draw"]["z"].shape == (16, 128, 2)


# ------------------------------------------------------------------ options
SECTION = re.compile(r"^## `himdsl (\w+)([^`]*)`\n(.*?)(?=^## |\Z)", re.S | re.M)


def documented_options() -> dict[str, set[str]]:
    text = open(os.path.join(ROOT, "docs/commands.md"), encoding="utf-8").read()
    # the prose and tables of each section; its example commands may run other commands
    return {name: set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-o)\b", usage + FENCE.sub("", body)))
            for name, usage, body in SECTION.findall(text)}


def test_documented_options_exist_and_every_option_is_documented():
    """Each command's section of docs/commands.md names exactly the options it has."""
    commands = typer.main.get_command(cli.app).commands
    documented = documented_options()
    assert set(documented) == set(commands), "a command without a section, or a section without a command"
    common = {"--help", "--set"}  # described once, at the top of the page
    for name, command in commands.items():
        actual = {opt for param in command.params for opt in param.opts if opt.startswith("-")}
        missing = actual - documented[name] - common
        assert not missing, f"`himdsl {name}` options not in docs/commands.md: {sorted(missing)}"
        unknown = documented[name] - actual
        assert not unknown, f"docs/commands.md names `himdsl {name}` options it does not have: {sorted(unknown)}"
