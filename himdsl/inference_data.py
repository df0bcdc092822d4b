"""`posterior.nc`: a fit as ArviZ InferenceData (its netCDF layout), so ArviZ, and
anything that reads netCDF or xarray, works on a himdsl fit with no glue.

    idata = arviz.from_netcdf("hier_gauss_fit/posterior.nc")
    arviz.summary(idata); arviz.plot_posterior(idata); arviz.plot_ppc(idata)
    to_inference_data(fit)          # the same, in memory, from a `Fit`

Groups:
- `posterior`: every global, the draws of posterior.npz as chain=1, draw=S, then
  `beta_dim_0`, ... per global. LFVI's draws are independent draws from q, not a
  Markov chain: ArviZ's R-hat (NaN for one chain) and ESS (about S) say nothing about
  the fit; the trust checks in `verdict` do.
- `observed_data`: the observed arrays; `constant_data`: the covariates. A plate's
  rows have the plate's name as their dimension (`n`), shared with
  `posterior_predictive`.
- `posterior_predictive`: one replicated data set (every row of the plate) at each
  of the first D posterior draws, D <= 100, fewer when a data set is large or the
  simulator (an extern) is slow, and none when even a few draws would not fit; the
  reason is a note of `fit` and the `posterior_predictive_note` attribute.
- attributes (of the file, `idata.attrs`): `settings`, `plan`, `verdict` (JSON text,
  as in fit.json), the model's name and sha256, the data's sha256,
  `inference_library` = himdsl and its version.
"""
from __future__ import annotations

import json
import os
import random
import time
import warnings

import numpy as np
import torch

from .atomic import write_path_atomically
from .runtime.data import to_numpy

PREDICTIVE_DRAWS = 100          # replicated data sets at most
PREDICTIVE_VALUES = 2_000_000   # replicated values at most (8 MB as float32)
PREDICTIVE_SECONDS = 20.0       # simulation time at most
PREDICTIVE_MIN_DRAWS = 10       # fewer than this is no check: none are drawn


def write_inference_data(fit, path: str) -> None:
    """Write `fit` to `path` atomically. What the user should know (a posterior
    predictive skipped or cut short, a file that could not be written) goes to
    `fit.notes`: posterior.nc never costs the fit's other results."""
    try:
        groups, attrs, notes = inference_groups(fit)
        write_path_atomically(path, lambda temp: write_netcdf(temp, groups, attrs))
    except ImportError as exc:
        fit.notes.append(f"posterior.nc not written: {exc.name or exc} is not installed "
                         "(pip install xarray h5netcdf); the draws are in posterior.npz")
        return
    except Exception as exc:  # noqa: BLE001 - xarray's and HDF5's errors are many and not the user's
        if os.path.exists(path):
            os.remove(path)
        fit.notes.append(f"posterior.nc not written ({type(exc).__name__}: {exc}); the draws are "
                         "in posterior.npz")
        return
    fit.notes.extend(notes)


def to_inference_data(fit):
    """`fit` as an arviz.InferenceData in memory (what posterior.nc holds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # arviz's notice of its 1.0 refactor
        import arviz

    groups, attrs, _ = inference_groups(fit)
    idata = arviz.InferenceData(**groups)
    idata.attrs.update(attrs)
    return idata


def write_netcdf(path: str, groups: dict, attrs: dict) -> None:
    """ArviZ's netCDF layout (`InferenceData.to_netcdf`): the attributes on the root
    group, one netCDF group per InferenceData group, zlib-compressed. Written with
    xarray alone, so a fit does not import arviz (seconds) and the file does not
    depend on arviz's Python API."""
    import xarray as xr

    xr.Dataset(attrs=attrs).to_netcdf(path, mode="w", engine="h5netcdf")
    for name, dataset in groups.items():
        encoding = {var: {"zlib": True} for var in dataset.data_vars
                    if dataset[var].dtype.kind in "biuf"}
        dataset.to_netcdf(path, mode="a", group=name, engine="h5netcdf", encoding=encoding)


def inference_groups(fit, predictive: bool = True) -> tuple[dict, dict, list[str]]:
    """({group: xarray.Dataset}, root attributes, notes); see the module docstring."""
    import xarray as xr

    from . import __version__
    from .fitting import fit_record

    module = fit.module
    posterior = fit.posterior()
    names = _taken_names(module, posterior, fit.data)
    plate_dim = _plate_dim(module, names)
    draws = len(next(iter(posterior.values()))) if posterior else 0

    groups = {"posterior": _dataset(xr, {n: v[None] for n, v in posterior.items()}, module, plate_dim,
                                    lead=("chain", "draw"), plated=False)}
    notes = []
    observed = {n: to_numpy(fit.data[n]) for n in module.observed_names if n in fit.data}
    if predictive and observed:
        try:
            replicated, note = replicated_data(fit, min(PREDICTIVE_DRAWS, draws or PREDICTIVE_DRAWS))
        except Exception as exc:  # noqa: BLE001 - an extern's error must not cost the posterior
            replicated, note = {}, (f"posterior.nc has no posterior_predictive group: simulating it "
                                    f"failed ({type(exc).__name__}: {exc})")
        if replicated:
            groups["posterior_predictive"] = _dataset(xr, {n: v[None] for n, v in replicated.items()},
                                                      module, plate_dim, lead=("chain", "draw"))
        if note:
            notes.append(note)
    groups["observed_data"] = _dataset(xr, observed, module, plate_dim)
    covariates = {n: to_numpy(fit.data[n]) for n in module.covariate_names if n in fit.data}
    if covariates:
        groups["constant_data"] = _dataset(xr, covariates, module, plate_dim)

    library = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "inference_library": "himdsl", "inference_library_version": __version__}
    for dataset in groups.values():
        dataset.attrs.update(library)
    groups["posterior"].attrs["sampling"] = (
        f"{draws} independent draws from the variational posterior q (LFVI), not a Markov chain")
    record = fit_record(fit)
    attrs = {**library,
             "settings": json.dumps(record["settings"], sort_keys=True),
             "plan": json.dumps(record["plan"], sort_keys=True),
             "verdict": json.dumps(record["verdict"], sort_keys=True),
             "model_name": record["model"]["name"],
             "model_sha256": record["model"].get("sha256") or "",
             "data_sha256": record["data"]["sha256"] or ""}
    if notes:
        attrs["posterior_predictive_note"] = " ".join(notes)
    return groups, attrs, notes


# ------------------------------------------------------------------ posterior predictive
def replicated_data(fit, draws: int = PREDICTIVE_DRAWS,
                    seconds: float | None = None) -> tuple[dict[str, np.ndarray], str | None]:
    """Replicated observed arrays {name: [D, *data shape]} simulated at the first D
    draws of `fit.posterior()` (with the fit's covariates and rows, and its trained
    weights), and a note when D is smaller than `draws` or nothing was drawn.

    D is cut to keep at most PREDICTIVE_VALUES values, and to `seconds` of simulation
    (default PREDICTIVE_SECONDS) as timed on one draw (an extern simulator may loop
    over draws). The random state is the fit's seed and is restored afterwards, so
    the fit's other outputs and posterior.nc repeat with `--seed`."""
    module, data, posterior = fit.module, fit.data, fit.posterior()
    seconds = PREDICTIVE_SECONDS if seconds is None else seconds
    if posterior:
        draws = min(draws, len(next(iter(posterior.values()))))
    per_draw = sum(int(np.prod(tuple(data[n].shape))) for n in module.observed_names if n in data)
    affordable = PREDICTIVE_VALUES // max(per_draw, 1)
    enough = min(draws, PREDICTIVE_MIN_DRAWS)
    if affordable < enough:
        return {}, (f"posterior.nc has no posterior_predictive group: one replicated data set has "
                    f"{per_draw} values, too many to keep {enough} of them "
                    f"(`himdsl simulate --posterior` draws them)")
    covariates = {n: data[n] for n in module.covariate_names if n in data}
    rows = module._rows_of(data)
    with _own_random_state(fit):
        start = time.perf_counter()
        _simulate(module, posterior, 1, covariates, rows)
        one = time.perf_counter() - start
        timely = int(seconds // one) if one > 0 else draws
        count = min(draws, affordable, timely)
        if count < enough:
            return {}, (f"posterior.nc has no posterior_predictive group: one replicated data set "
                        f"took {one:.2g} s to simulate (`himdsl simulate --posterior` draws them)")
        replicated = _simulate(module, posterior, count, covariates, rows)
    note = None
    if count < draws:
        why = "to keep the file small" if count == affordable else f"to simulate within {seconds:.0f} s"
        note = f"posterior.nc holds {count} replicated data sets, not {draws}, {why}"
    return replicated, note


def _simulate(module, posterior: dict, count: int, covariates: dict, rows) -> dict[str, np.ndarray]:
    from .simulation import _as_data

    dtype = module._anchor.dtype
    globals_ = {n: torch.as_tensor(posterior[n][:count], dtype=dtype, device=module.device)
                for n in module.global_names if n in posterior}
    with torch.no_grad():
        sim = module.simulate(globals_, covariates, rows, count)
    return {n: _as_data(module, n, to_numpy(sim[n])) for n in module.observed_names}


class _own_random_state:
    """Seed torch, numpy and random with the fit's seed, and restore their states after."""

    def __init__(self, fit):
        self.seed = fit.settings.seed
        self.devices = [fit.device] if fit.device.type == "cuda" else []

    def __enter__(self):
        self.fork = torch.random.fork_rng(devices=self.devices)
        self.fork.__enter__()
        self.states = np.random.get_state(), random.getstate()
        if self.seed is not None:
            from .simulation import seed_everything

            seed_everything(self.seed + 1)    # not the training's stream
        return self

    def __exit__(self, *exc):
        np.random.set_state(self.states[0])
        random.setstate(self.states[1])
        return self.fork.__exit__(*exc)


# ------------------------------------------------------------------ datasets
def _dataset(xr, arrays: dict, module, plate_dim: str | None, lead: tuple = (), plated: bool = True):
    """An xarray Dataset; dims `lead`, then the plate's rows (for a node in the plate),
    then NAME_dim_0, ... for each node's own axes; integer coordinates throughout."""
    variables, coords = {}, {}
    for name, value in arrays.items():
        value = np.asarray(value)
        info = module.nodes.get(name)
        rows = 1 if plated and plate_dim and info is not None and info.plate else 0
        own = value.ndim - len(lead) - rows
        dims = list(lead) + ([plate_dim] if rows else []) + [f"{name}_dim_{i}" for i in range(own)]
        variables[name] = (dims, value)
        for dim, size in zip(dims, value.shape):
            coords.setdefault(dim, np.arange(size))
    return xr.Dataset(variables, coords=coords)


def _taken_names(module, *arrays: dict) -> set:
    names = set(module.nodes)
    for group in arrays:
        names |= set(group)
    return names


def _plate_dim(module, names: set) -> str | None:
    """The plate's name as the rows' dimension, unless a variable has that name."""
    if module.plate is None:
        return None
    dim = module.plate
    while dim in names:
        dim += "_row"
    return dim

