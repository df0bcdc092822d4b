"""The `himdsl` command line: thin commands over the library.

    himdsl check model.him
    himdsl graph model.him -o graph.svg

Exit status: 0 success, 1 the model (or the data) has errors, 2 a missing file
or a bad flag. User mistakes never show a traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .diagnostics import summary_line
from .driver import FrontendResult, run_frontend

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="himdsl: hierarchical implicit models, compiled to PyTorch and fit by LFVI.")

EXIT_MODEL_ERROR = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print `error: message` to stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def parse_overrides(items: list[str] | None) -> dict:
    """`--set D=8 --set s=0.5` → {"D": 8, "s": 0.5}; numbers and JSON lists."""
    from .runtime.values import parse_value

    overrides = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            fail(f"--set expects NAME=VALUE, got `{item}`")
        try:
            overrides[name.strip()] = parse_value(text)
        except ValueError as exc:
            fail(f"--set {name.strip()}: {exc}")
    return overrides


def load_frontend(model: Path, overrides: dict | None = None, quiet_warnings: bool = False) -> FrontendResult:
    """Run the front end on a file; print diagnostics; exit 1 on errors, 2 if unreadable."""
    try:
        result = run_frontend(path=str(model), overrides=overrides)
    except FileNotFoundError:
        fail(f"no such file: {model}")
    except IsADirectoryError:
        fail(f"{model} is a folder; expected a .him file")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {model}: {exc}")
    if result.diagnostics and (not result.ok or not quiet_warnings):
        typer.echo(result.rendered(), err=True)
    if not result.ok:
        typer.echo(f"\n{model}: {summary_line(result.diagnostics)}", err=True)
        raise typer.Exit(EXIT_MODEL_ERROR)
    return result


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"himdsl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                              help="Print the version and exit.")) -> None:
    """himdsl: hierarchical implicit models."""


@app.command()
def check(model: Path = typer.Argument(..., help="The .him model file."),
          set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a constant: NAME=VALUE.")) -> None:
    """Report every error and warning in a model file."""
    result = load_frontend(model, parse_overrides(set_))
    suffix = f" ({summary_line(result.diagnostics)})" if result.diagnostics else ""
    typer.echo(f"{model}: model `{result.model.name}` is valid{suffix}")


@app.command()
def graph(model: Path = typer.Argument(..., help="The .him model file."),
          output: Optional[Path] = typer.Option(None, "-o", "--output",
                                                help="Write .dot, .json, .svg, .png or .pdf (by extension)."),
          renderer: str = typer.Option("auto", help="auto (Graphviz when `dot` is installed), graphviz or matplotlib."),
          set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a constant: NAME=VALUE.")) -> None:
    """Draw the model's dependency graph as a plate diagram."""
    from .graph import render

    result = load_frontend(model, parse_overrides(set_), quiet_warnings=True)
    if output is None:
        typer.echo(render.to_dot(result.graph), nl=False)
        return
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in render.FORMATS:
        fail(f"cannot write `{output.name}`: the extension must be one of "
             + ", ".join("." + f for f in render.FORMATS))
    if renderer not in ("auto", "graphviz", "matplotlib"):
        fail(f"--renderer must be auto, graphviz or matplotlib, got `{renderer}`")
    try:
        used = render.write_graph(result.graph, output, renderer=renderer)
    except render.RenderError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {output}: {exc}")
    typer.echo(f"wrote {output} ({used})")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="himdsl")


if __name__ == "__main__":  # pragma: no cover
    main()
