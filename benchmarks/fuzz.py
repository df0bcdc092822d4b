"""Fuzz the front end, the compiler and fit's data check with mutated examples.

    python benchmarks/fuzz.py --inputs 100000 --seed 0 [--save DIR]

Each input is a model file and a data file made from one of the repository's
models (`CORPUS`: the examples, the benchmark suite's models, and the models
with errors of tests/golden/bad) and a valid data file for it, then mutated:
token swaps, deletions and insertions, extreme numbers, duplicated or dropped
lines, byte flips and truncation of the model; NaN/inf and extreme values,
random shapes, other dtypes (unsigned, complex, strings, objects, records),
renamed, dropped and extra arrays, truncated or corrupt archives, CSV and text
files in place of the data, and `--set` overrides. Every input goes through
what the command line runs, in process: `check` (parse, check, render the
diagnostics), `compile` (code generation, loading the module, one `--emit`
stage) and the validation `fit` does before it trains (settings, the data file
against the model, the trainer's data view and its plan). A user-facing error
(the exit statuses 1 and 2 of the CLI) is a pass; any other exception is a
crash, which the CLI would report as exit 3 "internal error". The address
space is capped (`--memory-gb`), so that a model too large for memory fails
as it would on a smaller machine instead of swapping this one.

The mutations are drawn by Hypothesis (installed with the dev extras): its
generator mutates earlier inputs as well as drawing fresh ones, and a fixed
`--seed` makes a run repeatable. Hypothesis stops at the first failure, so the
property here records each crash instead of failing and keeps going; crashes
are grouped by exception type and the innermost himdsl frame, and the first of
each group is minimised (`minimise`) and, with `--save`, written as a
regression case (tests/fuzz_regressions/ holds the ones found so far).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import re
import shutil
import tempfile
import time
import traceback
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ the inputs


@dataclass(frozen=True)
class Case:
    """One fuzz input: the files `himdsl check/compile/fit` would be given."""

    seed: str                  # the corpus model it was made from (repository path)
    model: bytes               # the model file's bytes
    data: bytes | None         # the data file's bytes (None: the file is missing)
    data_name: str = "data.npz"
    overrides: tuple[str, ...] = ()  # `--set NAME=VALUE` items
    emit: str = "python"       # `compile --emit`

    @property
    def model_name(self) -> str:
        return os.path.basename(self.seed)


@dataclass
class Outcome:
    """What one input did: the last stage reached and how it ended."""

    stage: str                 # check | compile | fit-data
    status: str                # ok | user | crash
    message: str = ""          # the user-facing message, or the crash's traceback
    signature: tuple = ()      # a crash's (exception type, innermost himdsl frame)


@dataclass(frozen=True)
class Seed:
    """A corpus entry: a model and data that passes fit's check (an empty archive
    for a model with errors)."""

    name: str                  # repository path; externs are read from its folder
    model: bytes
    data: bytes
    vocabulary: tuple[str, ...] = ()


CORPUS = ("examples/*/*.him", "benchmarks/hier_suite/*/model.him", "tests/golden/bad/*.him")


def corpus_paths() -> list[str]:
    """The repository's models (the examples, the benchmark suite's, and the models
    with errors that test the diagnostics), relative to the repository root."""
    paths = [p for pattern in CORPUS for p in glob.glob(str(ROOT / pattern))]
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def npz_bytes(arrays: dict) -> bytes:
    """An .npz archive in memory (object arrays are pickled, as numpy.savez does)."""
    stream = io.BytesIO()
    np.savez(stream, **arrays)
    return stream.getvalue()


EMPTY_NPZ = npz_bytes({})


def load_seed(path: str) -> Seed:
    """A corpus model with its data file (or synthetic data of the declared shapes,
    or none for a model with errors)."""
    import himdsl

    folder = (ROOT / path).parent
    source = (ROOT / path).read_bytes()
    data_file = folder / "data.npz"
    if os.path.basename(path) == "model.him" and data_file.exists():
        data = data_file.read_bytes()
    else:
        try:
            data = npz_bytes(synthetic_data(himdsl.load(str(ROOT / path)).module()))
        except himdsl.HimError:  # a model with errors: its mutations test the checker
            data = EMPTY_NPZ
    names = sorted(set(re.findall(r"[A-Za-z_][A-Za-z_0-9.]*", source.decode())))
    return Seed(path, source, data, tuple(names))


def synthetic_data(module, rows: int = 5) -> dict:
    """Valid arrays for the model's observed and covariate declarations."""
    rng = np.random.default_rng(0)
    arrays = {}
    for name in module.observed_names + module.covariate_names:
        info = module.nodes[name]
        shape = ((rows,) if info.plate is not None else ()) + tuple(info.shape)
        if info.dtype == "cat":
            arrays[name] = rng.integers(0, info.categories, size=shape)
        elif info.dtype == "int":
            arrays[name] = rng.integers(0, 5, size=shape)
        else:
            arrays[name] = rng.normal(size=shape)
    return arrays


# ------------------------------------------------------------------ mutations

TOKEN = re.compile(r'#[^\n]*|"[^"\n]*"?|[A-Za-z_][A-Za-z_0-9.]*|\d+\.?\d*(?:[eE][-+]?\d+)?'
                   r"|->|<=|>=|==|!=|\n|[ \t]+|.", re.S)

# tokens inserted into models, besides the seed's own names
VOCABULARY = (
    "model", "const", "data", "param", "extern", "plate", "over", "guide", "latent", "noise", "let",
    "observe", "ratio", "fit", "from", "real", "int", "cat", "Normal", "Uniform", "Gamma", "Beta",
    "Bernoulli", "Poisson", "Categorical", "LogNormal", "StudentT", "Exponential", "dense", "mlp",
    "layernorm", "concat", "stack", "sum", "mean", "argmax", "onehot", "reshape", "softmax", "exp",
    "log", "sqrt", "where", "clamp", "relu", "tanh", "sigmoid", "identity", "pi", "prior", "hidden",
    "steps", "batch", "lr", "mode", "loss", "point", "flow", "mvnormal", "implicit", "auto", "h.weight",
    "0", "1", "2", "-1", "0.5", "1e400", "1e-400", "99999999999999999999", "3.", "1e9", "nan", "inf",
    "(", ")", "[", "]", "{", "}", ",", ":", ";", "=", "~", "->", "+", "-", "*", "/", "@", "^", "<",
    ">=", "==", "!=", "\n", " ", "#", "'", '"', '"lv.py"', '"missing.py"', '""', "\t", "\x00", "é",
    "\r", "\u2028", "x", "y", "n", "_", "__init__", "self", "torch", "None", "import",
)

SPECIAL_VALUES = (np.nan, np.inf, -np.inf, 1e308, -1e308, 1e-320, -1.0, 0.5, 2.0 ** 63, -(2.0 ** 63),
                  1e20, 0.0, 255.0, 7.0)

DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32",
          "float64", "longdouble", "complex64", "bool", "str", "bytes", "object", "datetime64[s]",
          "timedelta64[s]", "record")

ARRAY_NAMES = ("x", "y", "z", "theta", "", "x.npy", "a/b", "y ", "é", "__proto__", "data", "X", "n",
               "sigma", "obs", "1")

FILE_KINDS = ("csv", "csv_no_header", "text", "empty", "npy", "random", "zip_text", "pickle", "gzip",
              "missing", "binary_text", "json", "npz_empty", "zip_dir", "directory")


def significant(tokens: list[str]) -> list[int]:
    """Indices of the tokens a mutation may touch (not spaces or comments)."""
    return [i for i, t in enumerate(tokens) if not t.isspace() or t == "\n"] or [0]


def mutate_model(seed: Seed, ops) -> bytes:
    """Apply token, line and byte mutations to the seed's model text."""
    tokens = TOKEN.findall(seed.model.decode("utf-8")) or [""]
    vocabulary = VOCABULARY + seed.vocabulary
    for op in (o for o in ops if o[0] in TOKEN_OPS):
        tokens = TOKEN_OPS[op[0]](tokens, op[1:], vocabulary) or [""]
    data = "".join(tokens).encode("utf-8", "surrogatepass")
    for op in (o for o in ops if o[0] in BYTE_OPS):
        data = BYTE_OPS[op[0]](data, op[1:])
    return data


def _swap(tokens, args, _):
    keep = significant(tokens)
    i, j = keep[args[0] % len(keep)], keep[args[1] % len(keep)]
    tokens[i], tokens[j] = tokens[j], tokens[i]
    return tokens


def _delete(tokens, args, _):
    keep = significant(tokens)
    i = keep[args[0] % len(keep)]
    return tokens[:i] + tokens[i + args[1]:]


def _insert(tokens, args, vocabulary):
    i = args[0] % (len(tokens) + 1)
    return tokens[:i] + [vocabulary[args[1] % len(vocabulary)]] + tokens[i:]


def _replace(tokens, args, vocabulary):
    keep = significant(tokens)
    tokens[keep[args[0] % len(keep)]] = vocabulary[args[1] % len(vocabulary)]
    return tokens


NUMBERS = ("0", "1", "-1", "2", "0.5", "-0", "3.", "65536", "1e9", "1e400", "1e-400", "99999999999999999999")


def _number(tokens, args, _):
    """A number of the model (a size, a constant, a setting) made extreme."""
    numbers = [i for i, t in enumerate(tokens) if t[:1].isdigit()] or [0]
    tokens[numbers[args[0] % len(numbers)]] = NUMBERS[args[1] % len(NUMBERS)]
    return tokens


def _lines(tokens) -> list[list[str]]:
    lines, current = [], []
    for token in tokens:
        current.append(token)
        if token == "\n":
            lines.append(current)
            current = []
    return lines + [current]


def _dup_line(tokens, args, _):
    lines = _lines(tokens)
    i = args[0] % len(lines)
    lines.insert(i, list(lines[i]))
    return [t for line in lines for t in line]


def _drop_line(tokens, args, _):
    lines = _lines(tokens)
    del lines[args[0] % len(lines)]
    return [t for line in lines for t in line]


def _flip(data: bytes, args) -> bytes:
    if not data:
        return data
    i = args[0] % len(data)
    return data[:i] + bytes([data[i] ^ (1 << args[1])]) + data[i + 1:]


def _truncate(data: bytes, args) -> bytes:
    return data[:args[0] % (len(data) + 1)]


TOKEN_OPS = {"swap": _swap, "delete": _delete, "insert": _insert, "replace": _replace, "number": _number,
             "dup_line": _dup_line, "drop_line": _drop_line}
BYTE_OPS = {"flip": _flip, "truncate": _truncate}


def mutate_data(seed: Seed, array_ops, file_ops) -> tuple[bytes | None, str]:
    """Apply array mutations, write the archive, then corrupt or replace the file."""
    data, name = seed.data, "data.npz"
    if array_ops:
        with np.load(io.BytesIO(seed.data)) as archive:
            arrays = {k: archive[k] for k in archive.files}
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            for op in array_ops:
                try:
                    arrays = ARRAY_OPS[op[0]](dict(arrays), op[1:])
                except (TypeError, ValueError, OverflowError):  # e.g. no such cast: skip the op
                    pass
            data = npz_bytes(arrays)
    for op in file_ops:
        if op[0] == "kind":
            data, name = file_of_kind(op[1], data)
        elif data is not None:
            data = BYTE_OPS[op[0]](data, op[1:])
    return data, name


def _pick(arrays: dict, index: int) -> str | None:
    names = sorted(arrays)
    return names[index % len(names)] if names else None


def _set_value(arrays, args):
    name = _pick(arrays, args[0])
    if name is not None and arrays[name].size:
        value = np.array(arrays[name], dtype=np.float64 if arrays[name].dtype.kind in "biu" else None)
        value.flat[args[1] % value.size] = args[2]
        arrays[name] = value
    return arrays


def _reshape(arrays, args):
    name = _pick(arrays, args[0])
    if name is not None:
        shape = tuple(args[1])
        arrays[name] = np.resize(arrays[name], shape) if arrays[name].size else np.zeros(shape)
    return arrays


def _rows(arrays, args):
    name = _pick(arrays, args[0])
    if name is not None and arrays[name].ndim:
        arrays[name] = np.resize(arrays[name], (args[1],) + arrays[name].shape[1:])
    return arrays


def as_dtype(array: np.ndarray, dtype: str) -> np.ndarray:
    """`array` converted to one of DTYPES (records and objects built by hand)."""
    if dtype == "record":
        out = np.zeros(array.shape, dtype=[("a", "f8"), ("b", "i4")])
        out["a"] = array
        return out
    if dtype == "object":
        return np.array(array.tolist() if array.ndim else [array.item()], dtype=object)
    return array.astype(dtype)


def _dtype(arrays, args):
    name = _pick(arrays, args[0])
    if name is not None:
        arrays[name] = as_dtype(arrays[name], args[1])
    return arrays


def _rename(arrays, args):
    name = _pick(arrays, args[0])
    if name is not None:
        arrays[args[1]] = arrays.pop(name)
    return arrays


def _drop(arrays, args):
    name = _pick(arrays, args[0])
    if name is not None:
        del arrays[name]
    return arrays


def _extra(arrays, args):
    arrays[args[0]] = np.zeros(tuple(args[1]))
    return arrays


ARRAY_OPS = {"value": _set_value, "shape": _reshape, "rows": _rows, "dtype": _dtype, "rename": _rename,
             "drop": _drop, "extra": _extra}


def file_of_kind(kind: str, npz: bytes) -> tuple[bytes | None, str]:
    """A data file that is not a good .npz archive: (bytes or None if missing, name)."""
    files = {
        "csv": (b"x,y\n1.0,2\n3.5,0\n", "data.csv"),
        "csv_no_header": (b"1.0,2\n3.5,0\n", "data.csv"),
        "text": (b"these are my observations\n1 2 3\n", "data.txt"),
        "empty": (b"", "data.npz"),
        "npy": (_npy(np.arange(6.0)), "data.npz"),
        "random": (bytes(range(7, 250, 3)), "data.npz"),
        "zip_text": (_zip({"readme.txt": b"hello", "x.npy": b"not an array"}), "data.npz"),
        "pickle": (b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", "data.npz"),
        "gzip": (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", "data.npz"),
        "missing": (None, "data.npz"),
        "binary_text": ("x,y\n\u00e9\u00e8,1\n".encode("latin-1"), "data.csv"),
        "json": (b'{"x": [1, 2, 3]}', "data.json"),
        "npz_empty": (npz_bytes({}), "data.npz"),
        "zip_dir": (_zip({"x/": b"", "x/y.npy": _npy(np.zeros(2))}), "data.npz"),
        "directory": (b"", "data.npz/"),
    }
    return files[kind]


def _npy(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def _zip(members: dict) -> bytes:
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return stream.getvalue()


# ------------------------------------------------------------------ the strategy


def case_strategy(seeds: list[Seed]):
    """Hypothesis strategy of fuzz inputs over the corpus."""
    from hypothesis import strategies as st

    idx = st.integers(0, 2 ** 16)
    shape = st.lists(st.integers(0, 4), max_size=3)
    model_op = st.one_of(
        st.tuples(st.just("swap"), idx, idx), st.tuples(st.just("delete"), idx, st.integers(1, 4)),
        st.tuples(st.just("insert"), idx, idx), st.tuples(st.just("replace"), idx, idx),
        st.tuples(st.just("number"), idx, idx),
        st.tuples(st.just("dup_line"), idx), st.tuples(st.just("drop_line"), idx),
        st.tuples(st.just("flip"), idx, st.integers(0, 7)), st.tuples(st.just("truncate"), idx))
    array_op = st.one_of(
        st.tuples(st.just("value"), idx, idx, st.sampled_from(SPECIAL_VALUES)),
        st.tuples(st.just("shape"), idx, shape), st.tuples(st.just("rows"), idx, st.integers(0, 7)),
        st.tuples(st.just("dtype"), idx, st.sampled_from(DTYPES)),
        st.tuples(st.just("rename"), idx, st.sampled_from(ARRAY_NAMES)), st.tuples(st.just("drop"), idx),
        st.tuples(st.just("extra"), st.sampled_from(ARRAY_NAMES), shape))
    file_op = st.one_of(st.tuples(st.just("kind"), st.sampled_from(FILE_KINDS)),
                        st.tuples(st.just("flip"), idx, st.integers(0, 7)), st.tuples(st.just("truncate"), idx))
    override = st.tuples(st.sampled_from(("D", "K", "H", "E", "N", "s", "J", "x", "steps", "")),
                         st.sampled_from(("0", "1", "-3", "2.5", "[1, 2]", "1e400", "abc", "", "[[1]]",
                                          "[]", "nan", "true", "64")))

    # the models that compile count twice, and half the inputs keep the model intact,
    # so that a quarter of them reach fit's data check
    weighted = [s for s in seeds if s.data != EMPTY_NPZ] * 2 + [s for s in seeds if s.data == EMPTY_NPZ]

    @st.composite
    def cases(draw):
        seed = draw(st.sampled_from(weighted))
        target = draw(st.sampled_from(("model", "data", "data", "both")))
        model_ops = draw(st.lists(model_op, min_size=1, max_size=4)) if target != "data" else []
        array_ops = draw(st.lists(array_op, max_size=3)) if target != "model" else []
        file_ops = draw(st.lists(file_op, min_size=not array_ops, max_size=2)) if target != "model" else []
        model = mutate_model(seed, model_ops)
        data, name = mutate_data(seed, array_ops, file_ops)
        items = tuple(f"{k}={v}" for k, v in draw(st.lists(override, max_size=1)))
        return Case(seed.name, model, data, name, items, draw(st.sampled_from(("python", "ast", "graph"))))

    return cases()


# ------------------------------------------------------------------ running one input


class Workspace:
    """A folder per corpus model (with its extern files) where inputs are written."""

    def __init__(self, root: str):
        self.root = Path(root)

    def folder(self, seed: str) -> Path:
        folder = self.root / seed.replace("/", "_").replace(".him", "")
        if not folder.exists():
            folder.mkdir(parents=True)
            for extern in (ROOT / seed).parent.glob("*.py"):
                shutil.copy(extern, folder)
        return folder

    def write(self, case: Case) -> tuple[Path, Path]:
        """Write the case's files; returns (model path, data path)."""
        folder = self.folder(case.seed)
        model = folder / case.model_name
        model.write_bytes(case.model)
        data = folder / case.data_name.rstrip("/")
        _remove(data)
        if case.data_name.endswith("/"):
            data.mkdir()
        elif case.data is not None:
            data.write_bytes(case.data)
        return model, data


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def run_case(case: Case, workspace: Workspace) -> Outcome:
    """Run check, compile and fit's data check on one input, as the CLI would."""
    import typer

    model_path, data_path = workspace.write(case)
    outcome = Outcome("check", "ok")
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for stage, run in STAGES:
                outcome.stage = stage
                run(model_path, data_path, case)
    except typer.Exit as exc:
        outcome.status = "user" if exc.exit_code in (1, 2) else "crash"
        outcome.message = stderr.getvalue()
        if outcome.status == "crash":
            outcome.signature = ("Exit", exc.exit_code)
    except Exception as exc:  # anything else would be the CLI's exit 3 (cli.main)
        from himdsl import cli

        if cli.out_of_memory(exc):
            outcome.status, outcome.message = "user", cli.out_of_memory(exc)
        else:
            outcome.status, outcome.message = "crash", traceback.format_exc()
            outcome.signature = crash_signature(exc)
    return outcome


def crash_signature(exc: BaseException) -> tuple:
    """(exception type, innermost frame in himdsl): one per distinct bug."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if f"{os.sep}himdsl{os.sep}" in f.filename] or frames
    where = f"{os.path.relpath(own[-1].filename, ROOT)}:{own[-1].lineno}" if own else "?"
    return (type(exc).__name__, where)


def stage_check(model_path: Path, data_path: Path, case: Case) -> None:
    """`himdsl check MODEL [--set ...]`."""
    from himdsl import cli

    cli.load_frontend(model_path, cli.parse_overrides(list(case.overrides)))


def stage_compile(model_path: Path, data_path: Path, case: Case) -> None:
    """`himdsl compile MODEL --emit E [--set ...]`."""
    from himdsl import cli

    compiled = cli.load_model(model_path, cli.parse_overrides(list(case.overrides)))
    if case.emit == "python":
        cli.instantiate(compiled)
    cli._stage_text(compiled, case.emit)


def stage_fit_data(model_path: Path, data_path: Path, case: Case) -> None:
    """What `himdsl fit MODEL DATA` validates before training (fitting.run_fit up to
    the trainer's first step: settings, data file, data view, plan)."""
    from himdsl import cli
    from himdsl.fitting import FitError
    from himdsl.infer import NonFiniteLossError
    from himdsl.runtime.data import DataError
    from himdsl.runtime.externs import ExternError
    from himdsl.runtime.model import SimulationError

    compiled = cli.load_model(model_path, cli.parse_overrides(list(case.overrides)))
    try:
        fit_data_check(compiled, str(data_path))
    except (DataError, FitError) as exc:
        cli.fail(str(exc))
    except (NonFiniteLossError, ExternError, SimulationError) as exc:
        cli.fail(str(exc), cli.EXIT_MODEL_ERROR)


def fit_data_check(model, data: str) -> None:
    """fitting.run_fit before `Trainer.run`, without building the networks."""
    import torch

    from himdsl.fitting import FitError, prepare_data, settings_for
    from himdsl.infer.data import ModelView
    from himdsl.infer.plan import make_plan
    from himdsl.runtime.data import as_tensors

    if not model.checked.by_role("observed"):
        raise FitError("observes no data")
    settings = settings_for(model, {})
    module = model.module(torch.device("cpu"))
    tensors = as_tensors(prepare_data(module, data), module, torch.device("cpu"))
    try:
        settings.validate()
        view = ModelView(module, tensors)
        make_plan(view, settings, any(p.requires_grad for p in module.parameters()))
    except ValueError as exc:
        raise FitError(str(exc)) from None


STAGES = (("check", stage_check), ("compile", stage_compile), ("fit-data", stage_fit_data))


# ------------------------------------------------------------------ minimising


def minimise(case: Case, workspace: Workspace, seeds: dict[str, Seed], budget: int = 400) -> Case:
    """A smaller input with the same crash: the seed's own model or data where the
    crash does not need the mutated one, then fewer lines and tokens of the model."""
    target = run_case(case, workspace).signature
    if not target:  # not reproducible on its own (it needed an earlier input's state)
        return case
    tries = [0]

    def same(candidate: Case) -> bool:
        tries[0] += 1
        return tries[0] <= budget and run_case(candidate, workspace).signature == target

    seed = seeds[case.seed]
    for change in ({"overrides": ()}, {"emit": "python"}, {"model": seed.model},
                   {"data": seed.data, "data_name": "data.npz"}):
        simpler = replace(case, **change)
        if simpler != case and same(simpler):
            case = simpler
    splits = (_lines,) if case.model == seed.model else (_lines, _tokens)
    for split in splits:
        parts = split(TOKEN.findall(case.model.decode("utf-8", "surrogateescape")))
        parts = _ddmin(parts, lambda p: same(replace(case, model=_join(p))))
        case = replace(case, model=_join(parts))
    return case


def _tokens(tokens: list[str]) -> list[list[str]]:
    """Tokens with the spaces after them (dropping a space alone would glue names)."""
    parts: list[list[str]] = []
    for token in tokens:
        if parts and token.isspace() and token != "\n":
            parts[-1].append(token)
        else:
            parts.append([token])
    return parts


def _join(parts) -> bytes:
    return "".join(t for part in parts for t in part).encode("utf-8", "surrogateescape")


def _ddmin(parts: list, keeps) -> list:
    """Delta debugging: drop chunks of `parts` while `keeps(parts)` stays true."""
    chunk = max(1, len(parts) // 2)
    while chunk >= 1:
        i, changed = 0, False
        while i < len(parts):
            candidate = parts[:i] + parts[i + chunk:]
            if candidate and keeps(candidate):
                parts, changed = candidate, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return parts


def save_case(case: Case, outcome: Outcome, folder: Path) -> None:
    """Write a case as a regression folder: the model, the data file and case.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / case.model_name).write_bytes(case.model)
    if case.data is not None and not case.data_name.endswith("/"):
        (folder / case.data_name).write_bytes(case.data)
    meta = {"seed": case.seed, "data_name": case.data_name, "data_missing": case.data is None,
            "overrides": list(case.overrides), "emit": case.emit, "crash": list(outcome.signature),
            "status": "user", "expect": ""}  # what the fixed CLI should do: edit when saving a regression
    (folder / "case.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_case(folder: Path) -> Case:
    """A regression folder written by `save_case`, as a Case."""
    meta = json.loads((folder / "case.json").read_text())
    model = (folder / os.path.basename(meta["seed"])).read_bytes()
    data_file = folder / meta["data_name"]
    data = None if meta["data_missing"] else (b"" if meta["data_name"].endswith("/") else data_file.read_bytes())
    return Case(meta["seed"], model, data, meta["data_name"], tuple(meta["overrides"]), meta["emit"])


# ------------------------------------------------------------------ the run


@dataclass
class Report:
    """Counts of a fuzz run."""

    inputs: int = 0
    seconds: float = 0.0
    outcomes: dict = field(default_factory=dict)       # "stage/status" -> count
    crashes: dict = field(default_factory=dict)        # signature -> (count, first case, outcome)

    def add(self, case: Case, outcome: Outcome) -> None:
        self.inputs += 1
        key = f"{outcome.stage}/{outcome.status}"
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        if outcome.status == "crash":
            count, first, seen = self.crashes.get(outcome.signature, (0, case, outcome))
            self.crashes[outcome.signature] = (count + 1, first, seen)

    def summary(self) -> dict:
        return {"inputs": self.inputs, "seconds": round(self.seconds, 1),
                "inputs_per_second": round(self.inputs / max(self.seconds, 1e-9), 1),
                "outcomes": dict(sorted(self.outcomes.items())),
                "crashes": {" ".join(map(str, s)): c for s, (c, _, _) in self.crashes.items()}}


@contextlib.contextmanager
def memory_cap(gigabytes: float):
    """Let the process map at most `gigabytes` more, so that a model with huge
    layers fails to allocate (as on a smaller machine) instead of taking this
    machine's memory."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as stream:  # what the process has mapped already
        mapped = int(stream.read().split()[0]) * resource.getpagesize()
    cap = mapped + int(gigabytes * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def fuzz(inputs: int, seed: int = 0, time_limit: float | None = None, chunk: int = 1000,
         progress=None, workdir: str | None = None, memory_gb: float = 4.0) -> Report:
    """Run `inputs` fuzz inputs (fewer if `time_limit` seconds pass first)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    seeds = [load_seed(p) for p in corpus_paths()]
    strategy = case_strategy(seeds)
    report = Report()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="himdsl-fuzz-", dir=workdir) as root, memory_cap(memory_gb):
        workspace = Workspace(root)
        round_ = 0
        while report.inputs < inputs and (time_limit is None or time.perf_counter() - start < time_limit):
            size = min(chunk, inputs - report.inputs)

            @hypothesis_seed(seed * 100_003 + round_)
            @settings(max_examples=size, database=None, deadline=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck), print_blob=False)
            @given(strategy)
            def property_(case):
                if report.inputs < inputs and (time_limit is None or time.perf_counter() - start < time_limit):
                    report.add(case, run_case(case, workspace))

            property_()
            round_ += 1
            report.seconds = time.perf_counter() - start
            if progress:
                progress(report)
        report.seconds = time.perf_counter() - start
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=1000, help="inputs per Hypothesis run (each has its own seed)")
    parser.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--save", type=Path, default=None, help="write each crash, minimised, here")
    parser.add_argument("--memory-gb", type=float, default=4.0,
                        help="address space allowed beyond what is mapped at the start: a larger "
                             "allocation fails, as on a smaller machine")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report = fuzz(args.inputs, args.seed, args.time_limit, args.chunk, progress=_progress,
                  memory_gb=args.memory_gb)
    print(json.dumps(report.summary(), indent=2))
    seeds = {s.name: s for s in map(load_seed, corpus_paths())}
    with tempfile.TemporaryDirectory(prefix="himdsl-fuzz-min-") as root, memory_cap(args.memory_gb):
        workspace = Workspace(root)
        for number, (signature, (count, case, outcome)) in enumerate(report.crashes.items()):
            print(f"\ncrash {' '.join(map(str, signature))} ({count} inputs); first seen:\n{outcome.message}")
            small = minimise(case, workspace, seeds)
            print(f"minimised model ({small.seed}, data {small.data_name}):\n"
                  + small.model.decode("utf-8", "replace"))
            if args.save:
                save_case(small, run_case(small, workspace), args.save / f"crash_{number:03d}")


def _progress(report: Report) -> None:
    print(f"{report.inputs} inputs, {report.seconds:.0f} s, {len(report.crashes)} distinct crashes",
          flush=True)


if __name__ == "__main__":
    main()
