"""`himdsl fit --log tensorboard|mlflow`: the trace sent, as it is logged, to the
experiment tracker users already watch. Neither tracker is a dependency of
himdsl: the one asked for is imported when the fit starts, and a missing package,
or a tracker that will not start a run, is an error before any training.

    log = open_trace_log("tensorboard", "hier_gauss_fit", settings, plan_text)
    log.row(trace_row)          # every trace row: ELBO, ratio loss and accuracy, steps/s
    log.finish(verdict_lines, files, "FINISHED")

* tensorboard: event files in FIT_DIR/tensorboard (torch.utils.tensorboard, which
  needs `pip install tensorboard`); `tensorboard --logdir FIT_DIR` shows them.
* mlflow: a run in the experiment `himdsl` (or $MLFLOW_EXPERIMENT_NAME) of the
  tracking server mlflow is configured for ($MLFLOW_TRACKING_URI), with the fit's
  settings as parameters, the trace as metrics, the plan and verdict as text, and
  the fit's output files as artifacts (`pip install mlflow`).

A tracker that fails during the fit (a server gone away) is dropped with a note:
the fit and its files matter more than the log.
"""
from __future__ import annotations

import math
import os

import numpy as np

TRACKERS = ("tensorboard", "mlflow")
MLFLOW_PARAM_CHARS = 500       # MLflow's limit on a parameter's value (older servers: 250)


class TrackerError(Exception):
    """A tracker that cannot start; the message is user-facing."""


class TraceLog:
    """Forwards trace rows to a tracker; a tracker that raises is dropped with a note."""

    def __init__(self, name: str):
        self.name = name
        self.notes: list[str] = []
        self.broken = False

    def row(self, row) -> None:
        self._guarded(self._row, row)

    def finish(self, verdict: list[str], files: dict[str, str], status: str = "FINISHED") -> None:
        self._guarded(self._finish, verdict, files, status)

    def _guarded(self, method, *args) -> None:
        if self.broken:
            return
        try:
            method(*args)
        except Exception as exc:  # noqa: BLE001 - a tracker's errors never cost the fit
            self.broken = True
            self.notes.append(f"--log {self.name} stopped logging ({type(exc).__name__}: {exc}); "
                              "the trace is in trace.csv")

    def _row(self, row) -> None:
        raise NotImplementedError

    def _finish(self, verdict: list[str], files: dict[str, str], status: str) -> None:
        raise NotImplementedError


def open_trace_log(kind: str, folder: str, settings: dict, plan: str) -> TraceLog:
    """The tracker `kind` for a fit writing to `folder`; TrackerError when it cannot start."""
    if kind not in TRACKERS:
        raise TrackerError(f"--log must be {' or '.join(TRACKERS)}, got `{kind}`")
    return (TensorBoardLog if kind == "tensorboard" else MLflowLog)(folder, settings, plan)


def _metrics(row) -> dict[str, float]:
    """A trace row's values by metric name; the ELBO is left out while it is NaN (warm-up)."""
    values = {"elbo": row.elbo, "ratio/loss": row.ratio_loss, "ratio/accuracy": row.ratio_acc,
              "steps_per_second": row.step / max(row.seconds, 1e-9)}
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}


class TensorBoardLog(TraceLog):
    def __init__(self, folder: str, settings: dict, plan: str):
        super().__init__("tensorboard")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrackerError("--log tensorboard needs the tensorboard package: "
                               "pip install tensorboard") from None
        self.log_dir = os.path.join(folder, "tensorboard")
        self.writer = SummaryWriter(log_dir=self.log_dir)
        self.writer.add_text("plan", _as_markdown(plan), 0)
        self.writer.add_text("settings", _as_markdown(_settings_text(settings)), 0)

    def _row(self, row) -> None:
        for name, value in _metrics(row).items():
            self.writer.add_scalar(name, value, row.step)

    def _finish(self, verdict: list[str], files: dict[str, str], status: str) -> None:
        self.writer.add_text("verdict", _as_markdown("\n".join(verdict + [f"status: {status}"])))
        self.writer.close()


class MLflowLog(TraceLog):
    def __init__(self, folder: str, settings: dict, plan: str):
        super().__init__("mlflow")
        try:
            import mlflow
        except ImportError:
            raise TrackerError("--log mlflow needs the mlflow package: pip install mlflow") from None
        self.mlflow = mlflow
        try:
            mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or "himdsl")
            self.run = mlflow.start_run(run_name=os.path.basename(os.path.abspath(folder)))
            mlflow.log_params(_flat_params(settings))
            mlflow.log_text(plan, "plan.txt")
        except Exception as exc:  # noqa: BLE001 - mlflow's errors are many: a server, a store, a URI
            self._end("FAILED")
            raise TrackerError(f"--log mlflow: MLflow cannot start a run at "
                               f"{mlflow.get_tracking_uri()} ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}); set "
                               "MLFLOW_TRACKING_URI to a tracking server") from None

    def _row(self, row) -> None:
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in _metrics(row).items()}, step=row.step)

    def _finish(self, verdict: list[str], files: dict[str, str], status: str) -> None:
        self.mlflow.log_text("\n".join(verdict) + "\n", "verdict.txt")
        for path in files.values():
            if os.path.isfile(path) and not path.endswith(".pt"):
                self.mlflow.log_artifact(path)
        self._end(status)

    def _end(self, status: str) -> None:
        if self.mlflow.active_run() is not None:
            self.mlflow.end_run(status=status)


def _flat_params(settings: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow parameters: `ratio.hidden` = "[128, 128]"."""
    out = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat_params(value, name + "."))
        else:
            out[name] = str(value.tolist() if isinstance(value, np.ndarray) else value)[:MLFLOW_PARAM_CHARS]
    return out


def _settings_text(settings: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in _flat_params(settings).items())


def _as_markdown(text: str) -> str:
    """Preformatted text for TensorBoard's text tab (it renders markdown)."""
    return "\n".join("    " + line for line in text.splitlines())
