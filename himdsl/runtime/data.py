"""Data files: reading `.npz` archives and checking them against a model.

    arrays = read_npz("data.npz")                      # {name: np.ndarray}
    arrays = validate_data(module, arrays)             # DataError on any mismatch
    write_npz("out.npz", {"x": ...})                   # atomic

Every error names the array and says what was expected, e.g.
`data.npz: array `x` has rows of shape [3]; model declares `data x : real[2]``.
"""
from __future__ import annotations

import csv
import math
import os
import re
import tokenize
import zipfile
import zlib

import numpy as np
import torch

from ..atomic import write_atomically
from .model import HimModule, NodeInfo


class DataError(Exception):
    """A data file that does not fit the model; the message is user-facing."""


EXPECTED = ("expected an .npz archive of named arrays, one per `data` declaration "
            "(numpy.savez(\"data.npz\", x=x, y=y)), or a CSV file whose first line names "
            "the columns (`x[0],x[1],y`)")
# what a file that is not an .npz archive starts with, and what to call it
MAGIC = ((b"\x93NUMPY", "a single .npy array (numpy.save), not an archive of named arrays"),
         (b"\x1f\x8b", "gzip-compressed"), (b"\x80", "a Python pickle"), (b"\x89HDF", "an HDF5 file"))
# what numpy and zipfile raise on a corrupt archive (numpy parses an .npy header with tokenize)
UNREADABLE = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError,
              tokenize.TokenError)


def read_npz(path) -> dict[str, np.ndarray]:
    """Every array of an `.npz` archive, loaded eagerly; never unpickles. A CSV
    file with a header row is read as columns (`read_csv`).

    Anything else (a text file, a single .npy array, a truncated archive) is a
    DataError that says what the file is and what is expected."""
    path = str(path)
    head = _head(path)
    if _is_csv(head):
        return read_csv(path)
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise DataError(f"{path}: not a readable .npz archive: {_what_is(head)}; {EXPECTED}")
    try:
        with zipfile.ZipFile(path) as archive:
            return {_array_name(path, m): _read_member(path, archive, m)
                    for m in archive.infolist() if not m.is_dir()}
    except DataError:
        raise
    except UNREADABLE as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc}); is it truncated or corrupt?") from None


def _head(path: str) -> bytes:
    """The first bytes of a data file (DataError when it cannot be read)."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder; {EXPECTED}")
    try:
        with open(path, "rb") as stream:
            return stream.read(4096)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def _what_is(head: bytes) -> str:
    """What a file that is not an .npz archive looks like, in words."""
    if not head:
        return "the file is empty"
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return f"it is {kind}"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or not all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"it starts with the bytes {head[:8].hex(' ')}"
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    shown = first if len(first) <= 60 else first[:57] + "..."
    if not first:
        return "it is a text file of white space"
    if re.search(r"[,;\t]", first):
        return f"it is a CSV file whose first line (`{shown}`) does not name the columns"
    return f"it is a text file (first line `{shown}`)"


CSV_COLUMN = re.compile(r"([A-Za-z_][A-Za-z_0-9]*)(?:\[(\d+)\])?")


def _is_csv(head: bytes) -> bool:
    """A text file whose first line names columns: `x,y` or `x[0],x[1],y`."""
    try:
        first = head.decode("utf-8-sig").lstrip().split("\n", 1)[0]
    except UnicodeDecodeError:
        return False
    return all(CSV_COLUMN.fullmatch(f.strip().strip('"')) for f in first.split(","))


def read_csv(path: str) -> dict[str, np.ndarray]:
    """A CSV file with a header row as arrays: column `y` is an array [N], columns
    `x[0]`, `x[1]`, ... one array [N, D]. Whole-number columns are int64."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            rows = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the CSV file ({exc})") from None
    header = [h.strip() for h in rows[0][1]]
    if len(rows) == 1:
        raise DataError(f"{path}: read as a CSV file, its first line (`{','.join(header)}`) names "
                        "columns and no line of values follows; an .npz archive or a CSV file "
                        "with rows was expected")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise DataError(f"{path}: the header names column `{twice[0]}` more than once")
    columns = {name: _csv_column(path, header, rows, k) for k, name in enumerate(header)}
    return _group_columns(path, columns)


def _csv_column(path: str, header: list, rows: list, k: int) -> np.ndarray:
    """Column k as numbers; DataError naming the line and column otherwise."""
    values = []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} value(s); the header names {len(header)} columns")
        cell = row[k].strip()
        try:
            values.append(int(cell) if re.fullmatch(r"[-+]?\d+", cell) else float(cell))
        except ValueError:
            raise DataError(f"{path}: line {line}, column `{header[k]}`: `{cell}` is not a number") from None
    if all(isinstance(v, int) for v in values) and all(abs(v) < 2 ** 63 for v in values):
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=np.float64)


def _group_columns(path: str, columns: dict) -> dict[str, np.ndarray]:
    """`x[0]`, `x[1]`, ... into one array [N, D]; plain names stay [N]."""
    plain, parts = {}, {}
    for column, values in columns.items():
        name, index = CSV_COLUMN.fullmatch(column).groups()
        if index is None:
            plain[name] = values
        else:
            parts.setdefault(name, {})[int(index)] = values
    for name, numbered in parts.items():
        if name in plain:
            raise DataError(f"{path}: the header has both `{name}` and `{name}[...]` columns")
        if sorted(numbered) != list(range(len(numbered))):
            raise DataError(f"{path}: columns `{name}[...]` must be numbered 0 to {len(numbered) - 1}, "
                            f"got {', '.join(map(str, sorted(numbered)))}")
        plain[name] = np.stack([numbered[i] for i in range(len(numbered))], axis=1)
    return plain


def _array_name(path: str, member: zipfile.ZipInfo) -> str:
    if not member.filename.endswith(".npy"):
        raise DataError(f"{path}: not a readable .npz archive: it holds `{member.filename}`, "
                        f"which is not a numpy array (.npy); {EXPECTED}")
    return member.filename[:-4]


def _read_member(path: str, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> np.ndarray:
    """One array, after checking its header against the bytes the archive holds
    (a corrupt header must not allocate gigabytes or unpickle objects)."""
    where = f"{path}: array `{member.filename[:-4]}`"
    with archive.open(member) as stream:
        try:
            version = np.lib.format.read_magic(stream)
            shape, _, dtype = _read_header(stream, version)
        except UNREADABLE:
            raise DataError(f"{where} is not a readable numpy array: its .npy header is corrupt") from None
        if dtype.hasobject:
            raise DataError(f"{where} holds Python objects (dtype {dtype}), which are never unpickled; "
                            "save arrays of numbers")
        expected = math.prod(shape) * dtype.itemsize
        if expected != member.file_size - stream.tell():
            raise DataError(f"{where} is truncated or corrupt: its header declares shape {list(shape)} of "
                            f"{dtype} ({expected} bytes) but the archive holds "
                            f"{member.file_size - stream.tell()} bytes")
    with archive.open(member) as stream:
        try:
            return np.lib.format.read_array(stream, allow_pickle=False)
        except UNREADABLE as exc:
            raise DataError(f"{where} is not a readable numpy array ({exc})") from None


def _read_header(stream, version):
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")


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
    if array.dtype.kind == "f" and array.dtype.itemsize > 8:  # torch has no long double
        array = array.astype(np.float64)
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
