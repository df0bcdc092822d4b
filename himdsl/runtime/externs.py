"""Black-box simulators declared with `extern`: loading, calling, error reporting.

    extern lotka_volterra(theta : real[4]) -> real[2, 151] from "lv.py"

`load_extern` imports the function from the file (relative to the model);
`call_extern` broadcasts the arguments to the batch, hands CPU tensors to the
function, checks the shape it returns and moves the result to the model's device.
Every failure is an `ExternError` naming the extern and its declaration line.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch


class ExternError(Exception):
    """A problem with an extern simulator; the message is user-facing."""


@dataclass(frozen=True)
class ExternSpec:
    name: str
    path: str  # as written in the model, relative to it
    params: tuple[tuple[str, tuple[int, ...]], ...]
    shape: tuple[int, ...]
    dtype: str
    line: int


def load_extern(spec: ExternSpec, folder: str):
    """The Python function `spec.name` from `folder/spec.path`."""
    where = f"extern `{spec.name}` (line {spec.line})"
    path = os.path.join(folder, spec.path)
    if not os.path.isfile(path):
        raise ExternError(f"{where}: file `{spec.path}` not found (looked for {path})")
    module_name = f"himdsl_extern_{abs(hash(os.path.abspath(path)))}"
    module = sys.modules.get(module_name)
    if module is None:
        module = _import(path, module_name, where)
    function = getattr(module, spec.name, None)
    if not callable(function):
        raise ExternError(f"{where}: `{spec.path}` defines no function `{spec.name}`")
    if isinstance(function, _RankAware):
        function = function.bind([len(shape) for _, shape in spec.params])
    return function


def _import(path: str, module_name: str, where: str):
    try:
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file failed to import: report, don't crash
        raise ExternError(f"{where}: importing `{path}` failed: {type(exc).__name__}: {exc}") from exc
    sys.modules[module_name] = module
    return module


def call_extern(function, spec: ExternSpec, args: list, batch: tuple[int, ...], like: torch.Tensor,
                failures: "ExternFailures | None" = None):
    """Call an extern on a batch; returns a tensor [*batch, *spec.shape] like `like`.

    A row whose arguments are not all finite is not simulated: it comes back NaN, a
    failed simulation (as a built-in sampler's invalid parameter does). With
    `failures` (training), an exception fails only the rows that raise it, found by
    halving the batch, and `failures` keeps their count and the first message; a
    call whose every row raises still raises. An int result holding NaN comes back
    in `like`'s float dtype (an integer cannot hold NaN)."""
    where = f"extern `{spec.name}` (line {spec.line})"
    inputs = [_argument(value, batch, shape, like) for value, (_, shape) in zip(args, spec.params)]
    finite = _finite_rows(inputs, batch)
    if bool(finite.all()):
        try:
            return _result(_call(function, inputs, where), spec, batch, like, where)
        except ExternError:
            if failures is None:
                raise
    count = finite.numel()
    flat = [x.reshape((count,) + tuple(x.shape[len(batch):])) for x in inputs]
    rows = finite.reshape(-1).nonzero().reshape(-1)
    # the whole batch already raised: start by halving it
    out = _rows_or_nan(function, spec, flat, rows, like, where, failures, halve=bool(finite.all()))
    return out.reshape(tuple(batch) + tuple(spec.shape))


def _call(function, inputs: list[torch.Tensor], where: str):
    try:
        with torch.no_grad():
            return function(*inputs)
    except Exception as exc:  # the simulator is the user's code
        raise ExternError(f"{where} raised {type(exc).__name__}: {exc}") from exc


def _finite_rows(inputs: list[torch.Tensor], batch: tuple[int, ...]) -> torch.Tensor:
    """Per row of the batch, whether every floating argument is finite [*batch]."""
    finite = torch.ones(batch, dtype=torch.bool)
    for x in inputs:
        if x.is_floating_point():
            finite &= torch.isfinite(x).reshape(tuple(batch) + (-1,)).all(-1)
    return finite


def _rows_or_nan(function, spec, flat, rows, like, where, failures, halve: bool) -> torch.Tensor:
    """The results of the flat batch's `rows` [count, *shape], NaN elsewhere and
    where a row raised (when `failures` is given). A call whose every row raises is
    a bug in the simulator, not a region of its parameters: it raises."""
    count = flat[0].shape[0] if flat else 0
    results = _simulate_rows(function, spec, flat, rows, like, where, failures, halve)
    done = sum(len(r) for r, _ in results)
    if len(rows) and not done:
        raise ExternError(failures.first)
    if done == count:
        order = torch.cat([r for r, _ in results])
        return torch.cat([v for _, v in results])[torch.argsort(order)]
    out = torch.full((count,) + tuple(spec.shape), float("nan"), dtype=like.dtype, device=like.device)
    for r, v in results:
        out[r.to(like.device)] = v.to(out.dtype)
    return out


def _simulate_rows(function, spec, flat, rows, like, where, failures,
                   halve: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(rows, results) pairs for the rows that simulate; with `failures`, a batch
    that raises is halved until the rows that raise alone are found (`halve`: these
    rows raised together already)."""
    if not len(rows):
        return []
    if not halve:
        try:
            result = _call(function, [x[rows] for x in flat], where)
        except ExternError as exc:
            if failures is None:
                raise
            if len(rows) == 1:
                failures.record(str(exc))
                return []
        else:       # a result of the wrong shape is the simulator's bug: it raises at once
            return [(rows, _result(result, spec, (len(rows),), like, where))]
    half = len(rows) // 2
    return (_simulate_rows(function, spec, flat, rows[:half], like, where, failures)
            + _simulate_rows(function, spec, flat, rows[half:], like, where, failures))


class ExternFailures:
    """The rows an extern raised on while a fit trained: their count and the first
    message, for the fit's verdict."""

    def __init__(self):
        self.count = 0
        self.first: str | None = None

    def record(self, message: str) -> None:
        self.count += 1
        self.first = self.first or message


def _argument(value, batch, shape, like) -> torch.Tensor:
    tensor = value if torch.is_tensor(value) else torch.as_tensor(value, dtype=like.dtype)
    return tensor.detach().expand(tuple(batch) + tuple(shape)).cpu()


def _result(result, spec: ExternSpec, batch, like, where) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(np.asarray(result) if not torch.is_tensor(result) else result)
    except (TypeError, ValueError) as exc:
        raise ExternError(f"{where} returned {type(result).__name__}, not an array: {exc}") from None
    expected = tuple(batch) + tuple(spec.shape)
    if tuple(tensor.shape) != expected:
        raise ExternError(f"{where} returned shape {list(tensor.shape)}; expected {list(expected)} "
                          f"(batch {list(batch)} + declared {list(spec.shape)})")
    dtype = torch.long if spec.dtype == "int" else like.dtype
    return tensor.to(device=like.device, dtype=dtype)


def vectorize(function):
    """Wrap a simulator written for one draw so that it accepts batches.

        @vectorize
        def simulate(theta):   # theta: [4] → returns [2, 151]
            ...
    The wrapped function loops over the leading batch axes in Python."""

    def batched(*args):
        batch = _common_batch(args, batched.ranks)
        flat = [a.expand(batch + a.shape[a.dim() - r:]).reshape((-1,) + a.shape[a.dim() - r:])
                for a, r in zip(args, batched.ranks)]
        count = int(np.prod(batch)) if batch else 1
        outputs = [torch.as_tensor(np.asarray(function(*[f[i] for f in flat]))) for i in range(count)]
        stacked = torch.stack(outputs)
        return stacked.reshape(tuple(batch) + tuple(stacked.shape[1:]))

    batched.ranks = None
    batched.__wrapped__ = function
    batched.__name__ = getattr(function, "__name__", "vectorized")
    return _RankAware(batched)


class _RankAware:
    """A vectorised extern learns its argument ranks from the runtime's spec."""

    def __init__(self, batched):
        self.batched = batched
        self.__name__ = batched.__name__

    def bind(self, ranks: list[int]) -> "_RankAware":
        self.batched.ranks = ranks
        return self

    def __call__(self, *args):
        if self.batched.ranks is None:
            self.batched.ranks = [0] * len(args)
        return self.batched(*args)


def _common_batch(args, ranks) -> tuple[int, ...]:
    return tuple(torch.broadcast_shapes(*[a.shape[: a.dim() - r] for a, r in zip(args, ranks)]))
