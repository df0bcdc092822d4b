"""Data files: reading `.npz` archives and checking them against a model.

    arrays = read_npz("data.npz")                      # {name: np.ndarray}
    arrays = validate_data(module, arrays)             # DataError on any mismatch
    write_npz("out.npz", {"x": ...})                   # atomic

Every error names the array and says what was expected, e.g.
`data.npz: array `x` has rows of shape [3]; model declares `data x : real[2]``.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np
import torch

from ..atomic import write_atomically
from .model import HimModule, NodeInfo


class DataError(Exception):
    """A data file that does not fit the model; the message is user-facing."""


def read_npz(path) -> dict[str, np.ndarray]:
    """Every array of an `.npz` archive (loaded eagerly; no pickles)."""
    path = str(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise DataError(f"{path}: expected an .npz archive of named arrays, got a single .npy array")
            return {name: archive[name] for name in archive.files}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from None


def write_npz(path, arrays: dict) -> None:
    """Write arrays to `path` atomically (a crash never leaves half a file)."""
    write_atomically(path, lambda stream: np.savez(stream, **{k: to_numpy(v) for k, v in arrays.items()}))


def to_numpy(value) -> np.ndarray:
    if torch.is_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def describe_type(info: NodeInfo) -> str:
    """How a data array is declared: `real[2]`, `cat(3)`, `int`."""
    if info.dtype == "cat":
        return f"cat({info.categories})"
    dims = f"[{', '.join(map(str, info.shape))}]" if info.shape else ""
    return info.dtype + dims


def validate_data(module: HimModule, arrays: dict, source: str = "data",
                  names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Check arrays against the model's `data` declarations; return them as numpy.

    `names` restricts the check (e.g. covariates only); default: observed + covariates."""
    names = names if names is not None else module.observed_names + module.covariate_names
    checked = {}
    for name in names:
        if name not in arrays:
            raise DataError(_missing(source, name, module.nodes[name], arrays))
        checked[name] = _check_array(source, name, module.nodes[name], to_numpy(arrays[name]))
    _check_rows(source, module, checked)
    return checked


def _missing(source: str, name: str, info: NodeInfo, arrays: dict) -> str:
    found = ", ".join(f"`{k}`" for k in arrays) or "no arrays"
    return f"{source}: missing array `{name}` (model declares `data {name} : {describe_type(info)}`); found {found}"


def _check_array(source: str, name: str, info: NodeInfo, array: np.ndarray) -> np.ndarray:
    where = f"{source}: array `{name}`"
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where} has dtype {array.dtype}; expected numbers")
    shape = tuple(info.shape)
    if info.plate is not None:
        if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != shape:
            raise DataError(f"{where} has shape {list(array.shape)}; expected [N, {', '.join(map(str, shape))}]"
                            .replace(", ]", "]") + f" (one row of `{describe_type(info)}` per element of "
                            f"plate `{info.plate}`)")
    elif tuple(array.shape) not in (shape, (1,) + shape):
        raise DataError(f"{where} has shape {list(array.shape)}; expected {list(shape)} "
                        f"(`data {name} : {describe_type(info)}`)")
    elif array.shape != shape:
        array = array.reshape(shape)
    _check_values(where, info, array)
    return array


def _check_values(where: str, info: NodeInfo, array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise DataError(f"{where} contains {array[tuple(bad)]} at index {list(map(int, bad))}; "
                        "values must be finite")
    if info.dtype in ("int", "cat") and np.any(array != np.round(array)):
        bad = np.argwhere(array != np.round(array))[0]
        raise DataError(f"{where} holds {array[tuple(bad)]} at index {list(map(int, bad))}; "
                        f"`{describe_type(info)}` needs whole numbers")
    if info.dtype == "cat" and array.size and (array.min() < 0 or array.max() >= info.categories):
        bad = array.min() if array.min() < 0 else array.max()
        raise DataError(f"{where} holds label {bad:g}; `cat({info.categories})` labels must lie in "
                        f"0..{info.categories - 1}")


def _check_rows(source: str, module: HimModule, arrays: dict) -> None:
    lengths = {name: len(a) for name, a in arrays.items() if module.nodes[name].plate is not None}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"`{n}` has {k}" for n, k in lengths.items())
        raise DataError(f"{source}: arrays read by plate `{module.plate}` must have the same number of rows; "
                        f"{listing}")
    if any(k == 0 for k in lengths.values()):
        raise DataError(f"{source}: the data arrays have no rows")


def as_tensors(arrays: dict, module: HimModule, device=None) -> dict[str, torch.Tensor]:
    """Arrays as tensors: labels and ints as int64, reals in the model's dtype."""
    device = device or module.device
    dtype = module._anchor.dtype
    tensors = {}
    for name, array in arrays.items():
        info = module.nodes.get(name)
        as_int = info is not None and info.dtype in ("int", "cat")
        tensors[name] = torch.as_tensor(np.asarray(array), dtype=torch.long if as_int else dtype, device=device)
    return tensors
