"""Prior (and posterior) predictive simulation of a model: what `himdsl simulate` does.

    data, truth = simulate_dataset(himdsl.load("hier_gauss.him"), rows=1000, seed=0)
    data["x"].shape == (1000, 2);  truth["beta"].shape == (2,);  truth["z"].shape == (1000, 2)

With `draws=D > 1` every array gains a leading axis of D independent data sets.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from .runtime.data import DataError, as_tensors, to_numpy, validate_data
from .runtime.model import HimModule


def seed_everything(seed: int | None) -> None:
    """Seed torch, numpy and random (externs draw from their global generators)."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def simulate_dataset(model, rows: int | None = None, draws: int = 1, given: dict | None = None,
                     covariates: dict | None = None, params: dict | None = None, seed: int | None = None,
                     module: HimModule | None = None, globals_from=None) -> tuple[dict, dict]:
    """(data arrays, truth arrays) as numpy; see the module docstring.

    `given` fixes globals ({name: number or nested list}); `params` sets point
    estimates by name (`z2.weight`); `globals_from(draws)` supplies globals
    (posterior predictive). Raises DataError for inputs that do not fit."""
    seed_everything(seed)
    module = module if module is not None else model.module()
    fixed = _given(module, given)
    if params:
        load_point_estimates(module, params)
    given_covariates = _covariates(module, covariates)
    cov = as_tensors(given_covariates, module)
    rows = _rows(module, rows, cov)
    with torch.no_grad():
        globals_ = globals_from(draws) if globals_from else module.sample_globals(draws, fixed)
        _check_support(module, globals_, fixed)
        sim = module.simulate(globals_, cov, rows, draws)
    _check_shapes(module, sim, draws, rows)
    return _outputs(module, sim, globals_, given_covariates, draws)


def _given(module: HimModule, given: dict | None) -> dict:
    values = {}
    for name, value in (given or {}).items():
        if name not in module.global_names:
            known = ", ".join(module.global_names) or "none"
            raise DataError(f"--given {name}: `{name}` is not a global latent of `{module.model_name}` "
                            f"(globals: {known})")
        tensor = torch.as_tensor(value, dtype=module._anchor.dtype)
        expected = tuple(module.nodes[name].shape)
        if tuple(tensor.shape) != expected:
            raise DataError(f"--given {name}: got shape {list(tensor.shape)}, expected {list(expected)}")
        values[name] = tensor
    return values


def _check_support(module: HimModule, globals_: dict, fixed: dict) -> None:
    """A fixed global must be a value its prior can take (a Beta's in (0, 1), a scale's
    positive): the model's simulation is meaningless outside it."""
    for name, value in fixed.items():
        prior = module.prior(name, globals_)
        if not bool(prior.support.check(globals_[name]).all()):
            shown = value.tolist()
            raise DataError(f"--given {name}={shown}: outside the support of its prior "
                            f"{type(prior).__name__} ({_describe(prior.support)})")
        # a boundary torch counts as support can still have zero density (a Gamma(2, 1) at 0)
        if not bool(torch.isfinite(prior.log_prob(globals_[name])).all()):
            raise DataError(f"--given {name}={value.tolist()}: its prior {type(prior).__name__} has zero "
                            "density there (a boundary of its support); give a value inside it")


def _describe(support) -> str:
    """A constraint in words: 'values in (0, 1)', 'values at or above 0'."""
    low, high = getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)
    base = getattr(support, "base_constraint", None)     # an Independent constraint
    if base is not None:
        return _describe(base)
    if low is not None and high is not None:
        return f"values in ({low:g}, {high:g})"
    if low is not None:
        return f"values {'at or ' if 'Eq' in type(support).__name__ else ''}above {low:g}"
    if high is not None:
        return f"values below {high:g}"
    return str(support)


def _covariates(module: HimModule, covariates: dict | None) -> dict[str, np.ndarray]:
    """The covariates as the user gave them (checked): the simulated data set carries
    them unchanged, in their own dtype, and the simulator reads them as tensors."""
    if not module.covariate_names:
        return {}
    if not covariates:
        names = ", ".join(f"`{n}`" for n in module.covariate_names)
        raise DataError(f"model `{module.model_name}` conditions on covariates {names}: "
                        "pass them with --data FILE.npz")
    return validate_data(module, covariates, "--data", names=module.covariate_names)


def _rows(module: HimModule, rows: int | None, cov: dict) -> int | None:
    if module.plate is None:
        return None
    from_data = module._covariate_rows(cov)
    if from_data is not None and rows is not None and rows != from_data:
        raise DataError(f"--rows {rows} disagrees with the covariates, which have {from_data} rows")
    rows = rows if rows is not None else from_data
    if rows is None:
        raise DataError(f"model `{module.model_name}` has plate `{module.plate}`: say how many rows to "
                        "simulate with --rows N")
    if rows <= 0:
        raise DataError(f"--rows must be positive, got {rows}")
    return rows


def load_point_estimates(module: HimModule, params: dict) -> None:
    """Set `param`s and layer weights by their stable names (`z2.weight`)."""
    own = dict(module.named_parameters())
    for name, value in params.items():
        if name not in own:
            known = ", ".join(own) or "none"
            raise DataError(f"--params: the model has no weight `{name}` (weights: {known})")
        tensor = torch.as_tensor(np.asarray(value), dtype=own[name].dtype)
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise DataError(f"--params: `{name}` has shape {list(tensor.shape)}, expected {list(own[name].shape)}")
        with torch.no_grad():
            own[name].copy_(tensor)


def _check_shapes(module: HimModule, sim: dict, draws: int, rows: int | None) -> None:
    """Every simulated observation and local has its declared shape, [draws, rows,
    *shape] in the plate: a compiled expression that broadcast wrongly is a bug to
    report, never a data set to write."""
    for name in module.observed_names + module.local_names:
        info = module.nodes[name]
        expected = (draws,) + ((rows,) if info.plate else ()) + tuple(info.shape)
        if tuple(sim[name].shape) != expected:
            raise RuntimeError(f"the compiled simulator gave `{name}` the shape {list(sim[name].shape)} "
                               f"for the declared {list(expected)} (draws, rows, element): a himdsl bug")


def _outputs(module: HimModule, sim: dict, globals_: dict, cov: dict, draws: int) -> tuple[dict, dict]:
    squeeze = (lambda a: a[0]) if draws == 1 else (lambda a: a)
    data = {name: _as_data(module, name, squeeze(to_numpy(sim[name]))) for name in module.observed_names}
    data.update(cov)
    truth = {name: squeeze(to_numpy(value)) for name, value in globals_.items()}
    truth.update({name: squeeze(to_numpy(sim[name])) for name in module.local_names})
    truth.update({name: to_numpy(p) for name, p in module.named_parameters()})
    return data, truth


def _as_data(module: HimModule, name: str, array: np.ndarray) -> np.ndarray:
    info = module.nodes[name]
    if info.dtype in ("int", "cat"):
        return np.rint(array).astype(np.int64)
    return array.astype(np.float32)
