"""`himdsl fit --replay FIT_DIR`: rerun a fit from what its fit.json records.

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


@dataclass
class RecordedFit:
    model_file: str
    source: str
    overrides: dict
    data_file: str
    settings: FitSettings


def load_replay(folder) -> RecordedFit:
    """The recorded fit in `folder`; FitError naming what is missing or changed."""
    path = os.path.join(str(folder), OUTPUT_FILES["settings"])
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        model, data = record["model"], record["data"]
        recorded = RecordedFit(model["file"], model["source"], dict(model.get("overrides") or {}),
                               data["file"], FitSettings.from_dict(record["settings"]))
    except FileNotFoundError:
        raise FitError(f"--replay {folder}: no {OUTPUT_FILES['settings']} there") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FitError(f"--replay: {path} is not a fit record this himdsl can replay "
                       f"({type(exc).__name__}: {exc})") from None
    _check_data(recorded.data_file, data.get("sha256"), path)
    return recorded


def _check_data(data_file: str | None, sha256: str | None, record: str) -> None:
    if not data_file:
        raise FitError(f"--replay: {record} records no data file (the fit was given arrays "
                       "from Python), so it cannot be replayed from the folder alone")
    if not os.path.exists(data_file):
        raise FitError(f"--replay: the data file {data_file} recorded in {record} is gone")
    if sha256 and data_sha256(data_file) != sha256:
        raise FitError(f"--replay: the data file {data_file} has changed since the fit "
                       f"(sha256 {sha256[:12]}.. recorded)")
