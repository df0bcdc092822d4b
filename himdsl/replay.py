"""A fit's record (its fit.json) read back: what `himdsl fit --replay FIT_DIR` reruns
and what `himdsl diagnose FIT_DIR` reopens.

The record holds the model's text (so a model file edited since does not change the
replay), the constants given with --set, the data file with its sha256 (a data file
changed since is refused), and every setting.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .fitting import OUTPUT_FILES, FitError
from .infer import FitSettings
from .provenance import data_sha256


class StaleModel(FitError):
    """The model text a record holds no longer checks with this himdsl."""


@dataclass
class RecordedFit:
    model_file: str
    source: str
    overrides: dict
    data_file: str
    settings: FitSettings
    record: dict          # the whole fit.json


def load_replay(folder, command: str = "--replay", data_file: str | None = None) -> RecordedFit:
    """The recorded fit in `folder`; FitError naming what is missing or changed.
    `command` starts the messages; `data_file` stands in for the recorded data file
    (it must have the recorded sha256)."""
    path = os.path.join(str(folder), OUTPUT_FILES["settings"])
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        model, data = record["model"], record["data"]
        recorded = RecordedFit(model["file"], model["source"], dict(model.get("overrides") or {}),
                               data_file or data["file"], FitSettings.from_dict(record["settings"]),
                               record)
    except FileNotFoundError:
        raise FitError(f"{command} {folder}: no {OUTPUT_FILES['settings']} there (a fit that was "
                       "interrupted writes it when resumed to the end)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FitError(f"{command}: {path} is not a fit record this himdsl can read "
                       f"({type(exc).__name__}: {exc})") from None
    # `fit --replay` reruns the record as it is; `diagnose` may be told where the data went
    hint = "" if command == "--replay" else "; give its new place with --data"
    _check_data(recorded.data_file, data.get("sha256"), path, command, hint)
    return recorded


def compile_recorded(recorded: RecordedFit):
    """The recorded model text, checked and compiled (the file may have changed since);
    FitError with the diagnostics when it no longer checks."""
    from .api import Model
    from .driver import run_frontend

    result = run_frontend(recorded.source, path=recorded.model_file, overrides=recorded.overrides)
    if not result.ok:
        raise StaleModel(result.rendered() + "\nthe model recorded in fit.json no longer checks "
                       "with this himdsl")
    return Model(result, recorded.overrides)


def _check_data(data_file: str | None, sha256: str | None, record: str, command: str,
                hint: str) -> None:
    if not data_file:
        raise FitError(f"{command}: {record} records no data file (the fit was given arrays "
                       f"from Python){hint}")
    if not os.path.exists(data_file):
        raise FitError(f"{command}: the data file {data_file} recorded in {record} is gone{hint}")
    if sha256 and data_sha256(data_file) != sha256:
        raise FitError(f"{command}: the data file {data_file} is not the one the fit used "
                       f"(sha256 {sha256[:12]}.. recorded in {record})")
