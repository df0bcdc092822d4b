"""What a fit was made from: the model's text, the data's bytes, the software.

    model_identity(model)   # {"file", "source", "overrides", "sha256"}
    data_sha256("x.npz")    # of the file's bytes (or of the arrays, for a dict)

A checkpoint and fit.json carry these, so `--resume` refuses another model or data
set and `--replay` can rerun a fit from its folder alone.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform

import numpy as np
import torch

from . import __version__


def model_identity(model) -> dict:
    """The model as compiled: its source text and constant overrides, and their hash."""
    source = model.frontend.source
    overrides = {k: v for k, v in sorted((model.overrides or {}).items())}
    digest = hashlib.sha256(source.encode("utf-8"))
    digest.update(json.dumps(overrides, sort_keys=True, default=str).encode("utf-8"))
    return {"file": model.path, "source": source, "overrides": overrides, "sha256": digest.hexdigest()}


def data_sha256(data) -> str:
    """sha256 of a data file's bytes, or of a dict's arrays (names, dtypes, shapes, values)."""
    digest = hashlib.sha256()
    if isinstance(data, (str, os.PathLike)):
        with open(data, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    for name in sorted(data):
        value = np.ascontiguousarray(data[name].detach().cpu().numpy() if torch.is_tensor(data[name])
                                     else np.asarray(data[name]))
        digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def software_versions() -> dict:
    """The versions that decide a fit's numbers."""
    return {"himdsl": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform(terse=True)}


def device_name(device: torch.device) -> str:
    return str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
