"""The `himdsl` command line: thin commands over the library.

    himdsl check model.him
    himdsl graph model.him -o graph.svg

Exit status: 0 success, 1 the model (or the data) has errors, 2 a missing file
or a bad flag, 4 a fit that failed its trust checks. User mistakes never show a
traceback.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from . import __version__
from .atomic import write_text_atomically
from .diagnostics import summary_line
from .driver import FrontendResult, run_frontend
from .tracking import TRACKERS, TrackerError, open_trace_log

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="himdsl: hierarchical implicit models, compiled to PyTorch and fit by LFVI.")

EXIT_MODEL_ERROR = 1
EXIT_USAGE = 2
EXIT_UNTRUSTED = 4
EXIT_INTERRUPTED = 130


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
        typer.echo(result.rendered() + ("\n" if result.ok else ""), err=True)
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
          data: Optional[Path] = typer.Option(None, "--data", metavar="DATA.npz",
                                              help="Also check a data file against the model, as `fit` "
                                                   "does before training."),
          set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a constant: NAME=VALUE.")) -> None:
    """Report every error and warning in a model file (and, with --data, in a data file for it)."""
    result = load_frontend(model, parse_overrides(set_))
    suffix = f" ({summary_line(result.diagnostics)})" if result.diagnostics else ""
    typer.echo(f"{model}: model `{result.model.name}` is valid{suffix}")
    if data is not None:
        typer.echo(_checked_data(load_model(model, parse_overrides(set_)), data))


def _checked_data(model, data: Path) -> str:
    """A line on a data file that the model can be fitted to (exit 2 with the data's
    error otherwise): the checks `fit` makes before any training."""
    from .fitting import prepare_data
    from .runtime.data import DataError

    module = instantiate(model, "cpu")
    try:
        arrays = prepare_data(module, data)
    except DataError as exc:
        fail(str(exc))
    observed = [name for name in module.observed_names if name in arrays]
    rows = f"{len(arrays[observed[0]]):,} rows" if module.plate is not None and observed else "one row"
    shapes = ", ".join(f"`{name}` {list(arrays[name].shape[1 if module.plate is not None else 0:])}"
                       for name in observed)
    return f"{data}: data for `{model.name}` are valid ({rows}; observed {shapes})"


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


def load_model(model: Path, overrides: dict | None = None):
    """Check and compile a model for commands that run it (exit 1 on model errors)."""
    from .api import Model
    from .codegen.module import check_codegen

    result = load_frontend(model, overrides, quiet_warnings=True)
    extra = check_codegen(result.model)
    if extra:
        from .diagnostics import render_all

        typer.echo(render_all(extra, result.path, result.source), err=True)
        raise typer.Exit(EXIT_MODEL_ERROR)
    return Model(result, overrides or {})


def instantiate(model, device=None):
    """The compiled module; an extern that cannot be loaded is a user error."""
    from .runtime.externs import ExternError

    try:
        return model.module(device)
    except ExternError as exc:
        fail(f"{model.path}: {exc}", EXIT_MODEL_ERROR)


@app.command(name="compile")
def compile_(model: Path = typer.Argument(..., help="The .him model file."),
             output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the module to this .py file."),
             emit: str = typer.Option("python", help="Which stage to show: ast, graph or python."),
             set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a constant: NAME=VALUE.")) -> None:
    """Compile a model to a readable PyTorch module (or show the AST or graph)."""
    if emit not in ("ast", "graph", "python"):
        fail(f"--emit must be ast, graph or python, got `{emit}`")
    if output is not None and (output.suffix == ".him" or _same_file(output, model)):
        fail(f"-o {output}: that would overwrite a model file; write the module to a .py file")
    compiled = load_model(model, parse_overrides(set_))
    if emit == "python":
        instantiate(compiled)  # reports a missing extern function now, not at run time
    text = _stage_text(compiled, emit)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        write_text_atomically(output, text)
    except OSError as exc:
        fail(f"cannot write {output}: {exc}")
    typer.echo(f"wrote {output}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and a.resolve() == b.resolve()
    except OSError:
        return False


def _stage_text(compiled, emit: str) -> str:
    if emit == "python":
        return compiled.python()
    if emit == "graph":
        import json

        from .graph.render import to_json

        return json.dumps(to_json(compiled.graph), indent=2, sort_keys=True) + "\n"
    from .frontend.ast_dump import dump_program

    return dump_program(compiled.frontend.program)


@app.command()
def simulate(model: Path = typer.Argument(..., help="The .him model file."),
             output: Path = typer.Option(..., "-o", "--output", help="Data file to write (.npz)."),
             rows: Optional[int] = typer.Option(None, "--rows", help="Plate size (default: the covariates' rows)."),
             draws: int = typer.Option(1, "--draws", min=1, help="Independent data sets (a leading axis when > 1)."),
             given: Optional[List[str]] = typer.Option(None, "--given", help="Fix a global: NAME=VALUE (JSON list for arrays)."),
             data: Optional[Path] = typer.Option(None, "--data", help="Covariates (.npz)."),
             params: Optional[Path] = typer.Option(None, "--params", help="Point-estimated weights by name (.npz)."),
             posterior: Optional[Path] = typer.Option(None, "--posterior", help="Draw globals and weights from a fit's folder."),
             seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (same seed, same output)."),
             set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a constant: NAME=VALUE.")) -> None:
    """Simulate data from the prior (or a fitted posterior): DATA.npz and DATA.truth.npz."""
    from .runtime.data import DataError, read_npz, write_npz
    from .runtime.externs import ExternError
    from .runtime.model import SimulationError
    from .simulation import simulate_dataset

    if output.suffix != ".npz":
        fail(f"-o {output}: the data file must end in .npz")
    compiled = load_model(model, parse_overrides(set_))
    module = instantiate(compiled)
    try:
        covariates = read_npz(data) if data else None
        weights = read_npz(params) if params else None
        globals_from = None
        if posterior is not None:
            from .fitting import posterior_sampler

            globals_from, weights = posterior_sampler(module, posterior, weights)
        arrays, truth = simulate_dataset(compiled, rows, draws, _given(given), covariates, weights, seed,
                                         module=module, globals_from=globals_from)
        truth_path = output.with_name(output.stem + ".truth.npz")
        write_npz(output, arrays)
        write_npz(truth_path, truth)
    except (DataError, SimulationError, ExternError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {output}: {exc}")
    except Exception as exc:  # FitError from --posterior
        if type(exc).__name__ != "FitError":
            raise
        fail(str(exc))
    typer.echo(f"wrote {output} ({_shapes(arrays)})")
    typer.echo(f"wrote {truth_path} ({_shapes(truth)})")
    for name, value in arrays.items():
        bad = int(value.size - np.isfinite(value).sum()) if value.dtype.kind == "f" else 0
        if bad:
            typer.echo(f"warning: simulated array `{name}` has {bad} NaN or inf value(s); the model's "
                       "simulation is undefined there (e.g. log or sqrt of a negative number), and "
                       "`himdsl fit` will reject this file", err=True)


@app.command()
def fit(model: Optional[Path] = typer.Argument(None, metavar="MODEL.him", show_default=False,
                                               help="The .him model file."),
        data: Optional[Path] = typer.Argument(None, metavar="DATA.npz", show_default=False,
                                              help="The data file (.npz, one array per `data` name)."),
        out: Optional[Path] = typer.Option(None, "--out", metavar="DIR",
                                           help="Output folder (default: MODEL_fit, named after the model)."),
        steps: Optional[int] = typer.Option(None, "--steps", min=1, metavar="N", help="Training steps."),
        batch: Optional[int] = typer.Option(None, "--batch", min=1, metavar="N", help="Data rows per step."),
        particles: Optional[int] = typer.Option(None, "--particles", min=1, metavar="N",
                                                help="Global draws per step."),
        lr: Optional[float] = typer.Option(None, "--lr", min=0.0, metavar="RATE",
                                           help="Learning rate of q and the weights."),
        ratio_lr: Optional[float] = typer.Option(None, "--ratio-lr", min=0.0, metavar="RATE",
                                                 help="Learning rate of the ratio estimator."),
        budget: Optional[int] = typer.Option(None, "--budget", min=1, metavar="N",
                                             help="Simulations in all, at most: the ratio stores and reuses "
                                                  "them (for a costly simulator; the plan says how many "
                                                  "it would use otherwise)."),
        samples: Optional[int] = typer.Option(None, "--samples", min=1, metavar="N",
                                              help="Posterior draws written."),
        seed: Optional[int] = typer.Option(None, "--seed", metavar="N", help="Random seed."),
        device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu or cuda."),
        guide: Optional[List[str]] = typer.Option(None, "--guide", metavar="NAME=FAMILY",
                                                  help="flow, mvnormal, normal or point for a global; "
                                                       "normal or implicit for a local."),
        method: str = typer.Option("auto", "--method", metavar="METHOD",
                                   help="auto, lfvi or vi (likelihood-based, explicit models only)."),
        resume: bool = typer.Option(False, "--resume", metavar="",
                                    help="Continue the fit in --out from its checkpoint, with its settings."),
        replay: Optional[Path] = typer.Option(None, "--replay", metavar="FIT_DIR",
                                              help="Rerun the fit recorded in FIT_DIR/fit.json (same model "
                                                   "text, data file and settings)."),
        log: Optional[str] = typer.Option(None, "--log", metavar="TRACKER",
                                          help="Also send the trace to tensorboard (FIT_DIR/tensorboard) "
                                               "or mlflow ($MLFLOW_TRACKING_URI)."),
        threads: Optional[int] = typer.Option(None, "--threads", min=1, metavar="N",
                                              help="CPU threads for torch (default: 1 for small networks, "
                                                   "torch's choice for large ones)."),
        set_: Optional[List[str]] = typer.Option(None, "--set", metavar="NAME=VALUE",
                                                 help="Override a constant.")) -> None:
    """Fit a model to data by likelihood-free variational inference."""
    from .fitting import FitError, UntrustedFit, run_fit
    from .infer import NonFiniteLossError
    from .infer.advice import SMOKE_TEST
    from .runtime.data import DataError
    from .runtime.externs import ExternError
    from .runtime.model import SimulationError

    if method not in ("auto", "lfvi", "vi"):
        fail(f"--method must be auto, lfvi or vi, got `{method}`")
    job = _replay_job(replay, model, data, set_) if replay else _fit_job(model, data, set_)
    folder = out or _default_folder(job.model_path, replay)
    overrides = {"steps": steps, "batch": batch, "particles": particles, "lr": lr, "ratio_lr": ratio_lr,
                 "budget": budget, "samples": samples, "seed": seed, "method": method, "guide": _guides(guide)}
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if log is not None and log not in TRACKERS:
        fail(f"--log must be {' or '.join(TRACKERS)}, got `{log}`")
    bar = ProgressBar(steps or job.settings_steps())
    tracker = FitTracker(log, folder, bar)
    try:
        result = run_fit(job.compiled, job.data, overrides, device, str(folder), resume, tracker.row,
                         announce=lambda plan, settings, cost, at: tracker.start(plan, settings, cost, threads, at),
                         settings=job.settings, polish_progress=bar.polish)
        bar.close()
        typer.echo(f"{result.settings.steps} steps in {result.seconds:.1f} s on {result.device}")
        _echo_checks(result.result.verdict)
        paths = result.save(str(folder))
        tracker.finish(result.result.verdict, paths, "FINISHED")
    except UntrustedFit as exc:
        bar.close()
        _echo_checks(exc.fit.result.verdict)        # what passed, and the advice, as on success
        paths = exc.fit.save(str(folder))
        tracker.finish(exc.fit.result.verdict, paths, "FAILED")
        typer.echo(f"wrote {', '.join(sorted(paths.values()))}", err=True)
        fail(f"{exc} (the reasons are in {folder / 'fit.json'}; the draws, for inspection only, "
             f"in {folder / 'posterior_untrusted.npz'})", EXIT_UNTRUSTED)
    except (DataError, FitError, TrackerError) as exc:
        tracker.finish(None, {}, "FAILED")
        fail(str(exc))
    except (NonFiniteLossError, ExternError, SimulationError) as exc:
        tracker.finish(None, {}, "FAILED")
        checkpoint = folder / "checkpoint.pt"
        saved = f"; the last good checkpoint is {checkpoint}" if checkpoint.exists() else ""
        fail(f"{exc}{saved}", EXIT_MODEL_ERROR)
    except KeyboardInterrupt as exc:
        tracker.finish(None, {}, "KILLED")
        fail(_interrupted(exc, job, folder), EXIT_INTERRUPTED)
    from .fitting import summary_table

    typer.echo(summary_table(result.summary()))
    for note in result.notes + tracker.notes():
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"wrote {', '.join(sorted(paths.values()))}")
    for check in result.result.verdict.advice() if result.result.verdict is not None else ():
        if check.name == SMOKE_TEST:        # the last word: these draws are not a posterior
            typer.echo(f"warning: {check.message}", err=True)


class FitTracker:
    """What `fit` shows and logs while it trains: the plan, the progress bar, and
    the trace sent to `--log`'s tracker (opened once the plan is made, so a tracker
    that cannot start costs no training)."""

    def __init__(self, kind: Optional[str], folder: Path, bar: "ProgressBar"):
        self.kind, self.folder, self.bar = kind, folder, bar
        self.log = None

    def start(self, plan, settings, seconds_per_simulation: float, threads: Optional[int],
              resumed_at: Optional[int] = None) -> None:
        _announce(plan, seconds_per_simulation, self.bar, threads)
        if resumed_at is not None:
            typer.echo(f"resuming at step {resumed_at} of {plan.steps} from {self.folder / 'checkpoint.pt'}")
        if self.kind is not None:
            self.log = open_trace_log(self.kind, str(self.folder), settings.to_dict(), plan.describe())
            if self.kind == "tensorboard":
                typer.echo(f"logging to tensorboard: tensorboard --logdir {self.log.log_dir}")

    def row(self, row) -> None:
        self.bar.update(row)
        if self.log is not None:
            self.log.row(row)

    def finish(self, verdict, paths: dict, status: str) -> None:
        self.bar.close()
        if self.log is not None:
            self.log.finish(verdict.lines() if verdict is not None else [], paths, status)

    def notes(self) -> list[str]:
        return self.log.notes if self.log is not None else []


class FitJob:
    """What `fit` runs: the compiled model, the data, and the settings of a replay."""

    def __init__(self, compiled, model_path: Path, data, settings=None, set_args=()):
        self.compiled, self.model_path, self.data = compiled, model_path, data
        self.settings, self.set_args = settings, tuple(set_args)

    def settings_steps(self) -> int:
        """The steps the progress bar counts to until the plan says (a resume may differ)."""
        from .infer import FitSettings

        if self.settings is not None:
            return self.settings.steps
        return self.compiled.checked.fit.get("steps") or FitSettings().steps


def _fit_job(model: Optional[Path], data: Optional[Path], set_: Optional[List[str]]) -> FitJob:
    if model is None or data is None:
        fail("fit needs MODEL.him and DATA.npz (or --replay FIT_DIR); see `himdsl fit --help`")
    return FitJob(load_model(model, parse_overrides(set_)), model, data, set_args=set_ or ())


def _replay_job(folder: Path, model, data, set_) -> FitJob:
    """The model text, data file and settings that FIT_DIR/fit.json records."""
    from .fitting import FitError
    from .replay import StaleModel, compile_recorded, load_replay

    if model is not None or data is not None or set_:
        fail("--replay takes the model, data and constants from FIT_DIR/fit.json; give no "
             "MODEL, DATA or --set with it")
    try:
        recorded = load_replay(folder)
        compiled = compile_recorded(recorded)
    except StaleModel as exc:
        fail(str(exc), EXIT_MODEL_ERROR)
    except FitError as exc:
        fail(str(exc))
    return FitJob(compiled, Path(recorded.model_file), recorded.data_file, recorded.settings)


def _default_folder(model_path: Path, replay: Optional[Path]) -> Path:
    if replay is not None:
        return Path(str(replay).rstrip("/") + "_replay")
    stem = model_path.stem if model_path.stem != "model" else model_path.resolve().parent.name or "fit"
    return Path(stem + "_fit")


def _announce(plan, seconds_per_simulation: float, bar: "ProgressBar", threads: Optional[int]) -> None:
    """The plan's block (with the simulating's forecast), and the thread count it
    chose when --threads is not given."""
    if threads is None and plan.threads is not None:
        import torch

        torch.set_num_threads(plan.threads)
    bar.total = plan.steps
    typer.echo(plan.describe(seconds_per_simulation))


def _interrupted(exc: KeyboardInterrupt, job: FitJob, folder: Path) -> str:
    """One line: where the fit stopped and the command that continues it."""
    import shlex

    where = f"at step {exc.step}" if hasattr(exc, "step") else ""
    if not (folder / "checkpoint.pt").exists():
        return f"interrupted {where} before the first checkpoint; nothing to resume".replace("  ", " ")
    args = ["himdsl", "fit", str(job.model_path), str(job.data), "--out", str(folder), "--resume"]
    args += [a for item in job.set_args for a in ("--set", item)]
    return f"interrupted {where}; continue with `{shlex.join(args)}`".replace("  ", " ")


def _echo_checks(verdict) -> None:
    """The trust checks the fit passed (docs/lfvi.md, "Checks"), then the advisory
    lines, each OK or what to look at (docs/lfvi.md, "Advice")."""
    for line in verdict.lines() if verdict is not None else ():
        typer.echo(line)


def _guides(items: list[str] | None) -> dict:
    guides = {}
    for item in items or []:
        name, sep, family = item.partition("=")
        if not sep:
            fail(f"--guide expects NAME=FAMILY, got `{item}`")
        guides[name.strip()] = family.strip()
    return guides


class ProgressBar:
    """A one-line live progress bar on stderr (plain lines when not a terminal)."""

    def __init__(self, total: int | None):
        self.total = total
        self.live = sys.stderr.isatty()
        self.last_line = ""

    def update(self, row) -> None:
        total = self.total or row.step
        done = min(1.0, row.step / max(total, 1))
        bar = "#" * int(28 * done) + "-" * (28 - int(28 * done))
        rate = row.step / max(row.seconds, 1e-9)
        # no ELBO yet while the warm-up trains only the ratio
        elbo = "(warm-up)" if math.isnan(row.elbo) else f"{row.elbo:.4g}"
        # a fit with the exact likelihood (method vi) has no ratio to report
        ratio = ("" if math.isnan(row.ratio_loss) and math.isnan(row.ratio_acc)
                 else f"ratio loss {row.ratio_loss:.3f}  acc {row.ratio_acc:.2f}  ")
        line = (f"[{bar}] {row.step}/{total}  ELBO {elbo}  {ratio}"
                f"{rate:.0f} steps/s  {_clock((total - row.step) / max(rate, 1e-9))} left")
        if self.live:
            sys.stderr.write("\r" + line)
            sys.stderr.flush()
        elif int(10 * done) != int(10 * (row.step - 1) / max(total, 1)) or row.step == total:
            sys.stderr.write(line + "\n")
        self.last_line = line

    def polish(self, report) -> None:
        """The local guide training on after the loop (infer/polish.py): a line at its
        start and after each block, so that the wait after the bar is full is explained."""
        from .infer.polish import POLISH_TO

        line = (f"local guide alone, q(beta) held: {report.steps} of at most {self.total} steps; locals' "
                f"means {report.after:.3f} sds from their optimum ({report.before:.3f} after the loop, "
                f"target {POLISH_TO:g})")
        if self.live:
            if report.steps == 0:
                sys.stderr.write("\n")
            sys.stderr.write("\r" + line)
            sys.stderr.flush()
        else:
            sys.stderr.write(line + "\n")
        self.last_line = line

    def close(self) -> None:
        if self.live and self.last_line:
            sys.stderr.write("\n")
            self.last_line = ""


def _clock(seconds: float) -> str:
    """A duration as h:mm:ss, or m:ss under an hour (the progress bar's time left)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _given(items: list[str] | None) -> dict:
    values = parse_overrides(items) if items else {}
    return values


def _shapes(arrays: dict) -> str:
    return ", ".join(f"{name}: {list(value.shape)}" for name, value in arrays.items())


@app.command()
def calibrate(model: Path = typer.Argument(..., metavar="MODEL.him", help="The .him model file."),
              fits: int = typer.Option(..., "--fits", metavar="K",
                                       help="Data sets drawn from the prior and fit (at least 2)."),
              rows: Optional[int] = typer.Option(None, "--rows", metavar="N",
                                                 help="Plate rows of each data set (default: the covariates' "
                                                      "rows, else 100)."),
              data: Optional[Path] = typer.Option(None, "--data", metavar="FILE.npz",
                                                  help="Covariates, for a model that has them."),
              steps: Optional[int] = typer.Option(None, "--steps", min=1, metavar="N",
                                                  help="Training steps of each fit (default: the model's)."),
              workers: Optional[int] = typer.Option(None, "--workers", metavar="N",
                                                    help="Fits run at once, one process each (default: "
                                                         "min(CPU cores, K))."),
              seed: int = typer.Option(0, "--seed", metavar="N", help="Random seed (same seed, same ranks)."),
              out: Optional[Path] = typer.Option(None, "--out", metavar="DIR",
                                                 help="Output folder (default: MODEL_calibration)."),
              resume: bool = typer.Option(False, "--resume", metavar="",
                                          help="Continue the run in --out: only the fits it has not "
                                               "finished are run."),
              set_: Optional[List[str]] = typer.Option(None, "--set", metavar="NAME=VALUE",
                                                       help="Override a constant.")) -> None:
    """Simulation-based calibration: fit K data sets simulated from the prior and test
    the posteriors' ranks, coverage and TARP."""
    from .calibration import CalibrationError, calibrate as run_calibration
    from .fitting import FitError
    from .runtime.data import DataError, read_npz
    from .runtime.externs import ExternError
    from .runtime.model import SimulationError

    compiled = load_model(model, parse_overrides(set_))
    folder = out or Path((model.stem if model.stem != "model" else
                          model.resolve().parent.name or "model") + "_calibration")
    try:
        covariates = read_npz(data) if data else None
        finished = []

        def done(outcome) -> None:
            finished.append(outcome)
            typer.echo(f"fit {outcome.index}: {outcome.status} in {outcome.seconds:.1f} s "
                       f"({len(finished)}/{fits} done)", err=True)

        report = run_calibration(compiled, fits, rows, covariates, steps, seed, workers, str(folder), done,
                                 resume)
        paths = report.save(str(folder))
    except (CalibrationError, DataError, FitError) as exc:
        fail(str(exc))
    except (ExternError, SimulationError) as exc:
        fail(str(exc), EXIT_MODEL_ERROR)
    except OSError as exc:
        fail(f"cannot write {folder}: {exc}")
    except KeyboardInterrupt:
        args = [str(model), "--fits", str(fits)] + [
            a for flag, value in (("--rows", rows), ("--data", data), ("--steps", steps), ("--seed", seed))
            if value is not None for a in (flag, str(value))] + [a for item in set_ or () for a in ("--set", item)]
        fail(_calibration_interrupted(folder, args), EXIT_INTERRUPTED)
    typer.echo(report.table())
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"wrote {', '.join(paths.values())}")
    if report.stats["fits_used"] < 2:
        fail(f"only {report.stats['fits_used']} of {fits} fits passed their checks: too few for "
             "calibration statistics", EXIT_UNTRUSTED)


@app.command()
def diagnose(folder: Path = typer.Argument(..., metavar="FIT_DIR", help="A folder `himdsl fit` wrote."),
             data: Optional[Path] = typer.Option(None, "--data", metavar="DATA.npz",
                                                 help="The fit's data file, when it has moved since "
                                                      "(checked against its recorded sha256)."),
             draws: int = typer.Option(200, "--draws", min=10, metavar="N",
                                       help="Replicated data sets for the posterior predictive check."),
             seed: int = typer.Option(0, "--seed", metavar="N", help="Random seed (same seed, same report)."),
             out: Optional[Path] = typer.Option(None, "--out", metavar="DIR",
                                                help="Where diagnose.json and ppc.png go (default: FIT_DIR).")
             ) -> None:
    """Is the fit right? Posterior predictive checks (numbers and ppc.png) and, for an
    explicit likelihood, Pareto k-hat of q against the exact posterior."""
    from .diagnosis import diagnose as run_diagnosis
    from .fit_folder import open_fit
    from .fitting import FitError, prepare_output_folder
    from .replay import StaleModel
    from .runtime.data import DataError
    from .runtime.externs import ExternError
    from .runtime.model import SimulationError

    target = out or folder
    try:
        if not folder.is_dir():
            raise FitError(f"diagnose {folder}: not a folder (give the --out folder of `himdsl fit`)")
        prepare_output_folder(str(target))
        fit = open_fit(folder, str(data) if data else None)
        report = run_diagnosis(fit, draws, verdict=_recorded_verdict(folder), seed=seed)
        paths = report.save(str(target))
    except StaleModel as exc:
        fail(str(exc), EXIT_MODEL_ERROR)
    except (DataError, FitError) as exc:
        fail(str(exc))
    except (ExternError, SimulationError) as exc:
        fail(str(exc), EXIT_MODEL_ERROR)
    except OSError as exc:
        fail(f"cannot write {target}: {exc}")
    typer.echo(report.text())
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"wrote {', '.join(paths.values())}")


def _recorded_verdict(folder: Path) -> dict | None:
    import json

    try:
        return json.loads((folder / "fit.json").read_text()).get("verdict")
    except (OSError, ValueError):
        return None


def _calibration_interrupted(folder: Path, args: list[str]) -> str:
    """One line: how many fits are kept, and the command that continues the run."""
    import shlex

    from .calibration import OUTPUT_FILES

    journal = folder / OUTPUT_FILES["journal"]
    if not journal.exists():
        return "interrupted before the first fit; nothing to resume"
    kept = max(0, len(journal.read_text().strip().splitlines()) - 1)
    again = shlex.join(["himdsl", "calibrate", *args, "--out", str(folder), "--resume"])
    return f"interrupted; the {kept} finished fits are kept in {journal}: continue with `{again}`"


def main() -> None:
    """Console-script entry point. A bug in himdsl (never a user mistake, which
    gets its own message) is reported in one line, its traceback saved to a file."""
    try:
        app(prog_name="himdsl", standalone_mode=True)
    except SystemExit:
        raise
    except Exception as exc:  # an internal error: keep the terminal readable
        if out_of_memory(exc):
            sys.stderr.write(f"error: {out_of_memory(exc)}\n")
            sys.exit(EXIT_MODEL_ERROR)
        path = _save_traceback()
        sys.stderr.write(f"himdsl: internal error ({type(exc).__name__}: {exc}). This is a bug in himdsl; "
                         f"the traceback is in {path}\n")
        sys.exit(3)


def out_of_memory(exc: BaseException) -> str | None:
    """The message for a failed allocation (a model whose sizes need more memory
    than the machine has: a user's choice, not a bug), or None."""
    import re

    text = str(exc)
    if not isinstance(exc, MemoryError) and "can't allocate memory" not in text \
            and "out of memory" not in text.lower():
        return None
    wanted = re.search(r"allocate (\d+) bytes", text)
    size = f" ({int(wanted.group(1)) / 2 ** 30:.1f} GiB at once)" if wanted else ""
    return (f"out of memory{size}: the model's sizes (its constants, shapes and layer widths, or "
            "--batch and --particles) need more memory than this machine has")


def _save_traceback() -> str:
    import tempfile
    import traceback

    handle, path = tempfile.mkstemp(prefix="himdsl-crash-", suffix=".txt")
    with open(handle, "w") as stream:
        traceback.print_exc(file=stream)
    return path


if __name__ == "__main__":  # pragma: no cover
    main()
