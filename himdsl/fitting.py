"""`himdsl fit` as a library: settings from the model and the command line, the
trainer, and the files a fit leaves behind.

    fit = himdsl.load("hier_gauss.him").fit({"x": x}, steps=2000)
    fit.posterior(1000)["beta"]     # [1000, 2]
    fit.locals()["z_mean"]          # [N, 2]
    fit.save("hier_gauss_fit/")     # posterior.npz, locals.npz, summary.csv, trace.csv, fit.json, posterior.png

Output layout (one place knows it): see `OUTPUT_FILES`.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from . import __version__
from .infer import FitResult, FitSettings, FlowSpec, LocalGuideSpec, RatioSettings, Trainer
from .runtime.data import as_tensors, read_npz, to_numpy, validate_data, write_npz
from .simulation import seed_everything

OUTPUT_FILES = {
    "posterior": "posterior.npz", "locals": "locals.npz", "summary": "summary.csv",
    "trace": "trace.csv", "settings": "fit.json", "plot": "posterior.png", "checkpoint": "checkpoint.pt",
    "weights": "weights.npz", "untrusted": "posterior_untrusted.npz",
}
# What a fit that failed its trust checks must not leave behind (from an earlier run).
TRUSTED_ONLY = ("posterior", "locals", "summary", "plot", "weights")
LOCAL_FAMILY_NAMES = {"implicit": "implicit", "normal": "gaussian"}


class FitError(Exception):
    """A fit that cannot start or went wrong; the message is user-facing."""


class UntrustedFit(FitError):
    """A fit that ran but failed its trust checks (infer/checks.py): `fit` holds it,
    so its diagnostics can still be written; the message lists the reasons."""

    def __init__(self, fit: "Fit"):
        self.fit = fit
        reasons = "; ".join(fit.result.verdict.failures())
        super().__init__(f"the fit failed its checks, so its posterior is not trustworthy: {reasons}")


# ------------------------------------------------------------------ settings
def settings_for(model, overrides: dict | None = None) -> FitSettings:
    """FitSettings from the model's `guide`/`ratio`/`fit` blocks, then `overrides`
    (command-line values: steps, batch, particles, lr, samples, seed, method, guide)."""
    checked = model.checked
    fit_block = {k: v for k, v in checked.fit.items()}
    ratio = RatioSettings(**{k: tuple(v) if k == "hidden" else v for k, v in checked.ratio.items()})
    guide = {name: _guide_entry(spec.family, spec.options, name in checked.symbols
                                and checked.symbols[name].role == "local")
             for name, spec in checked.guide.items()}
    settings = FitSettings(**fit_block, ratio=ratio, guide=guide)
    return _apply_overrides(settings, overrides or {}, model)


def _guide_entry(family: str, options: dict, local: bool):
    options = {k: tuple(v) if k == "hidden" else v for k, v in options.items()}
    if local:
        return LocalGuideSpec(LOCAL_FAMILY_NAMES[family], **options)
    return FlowSpec(**options) if family == "flow" and options else family


def _apply_overrides(settings: FitSettings, overrides: dict, model) -> FitSettings:
    values = {k: v for k, v in overrides.items() if v is not None and k not in ("guide", "method")}
    settings = replace(settings, **values)
    method = overrides.get("method")
    if method and method != "auto":
        settings = replace(settings, method=method)
    for name, family in (overrides.get("guide") or {}).items():
        settings.guide[name] = _guide_override(model, name, family)
    try:
        settings.validate()
    except ValueError as exc:
        raise FitError(str(exc)) from None
    return settings


def _guide_override(model, name: str, family: str):
    """The guide entry for `--guide NAME=FAMILY` (a global, a local, or a Bayesian
    layer's weight such as `h.weight`)."""
    globals_ = [s.name for s in model.checked.by_role("global")]
    globals_ += [w for layer in model.checked.layers if layer.bayesian
                 for w in (layer.weight_name, layer.bias_name)]
    locals_ = [s.name for s in model.checked.by_role("local")]
    if name not in globals_ + locals_:
        latents = ", ".join(globals_ + locals_) or "none"
        raise FitError(f"--guide {name}={family}: `{name}` is not a latent variable (latents: {latents})")
    local = name in locals_
    allowed = tuple(LOCAL_FAMILY_NAMES) if local else ("auto", "flow", "mvnormal", "normal", "point")
    if family not in allowed:
        raise FitError(f"--guide {name}={family}: expected one of {', '.join(allowed)}")
    return _guide_entry(family, {}, local)


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda when available, else cpu; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FitError("--device cuda: no CUDA device is available (torch "
                       f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise FitError(f"--device must be auto, cpu or cuda, got `{name}`")
    return torch.device(name)


# ------------------------------------------------------------------ the fit
@dataclass
class Fit:
    """A finished (or resumed) fit of a model to data."""

    model: object  # himdsl.Model
    module: object  # its HimModule, trained
    data: dict
    result: FitResult
    settings: FitSettings
    device: torch.device
    seconds: float
    data_file: str | None = None

    @property
    def plan(self):
        """The plan the fit executed (himdsl.infer.Plan)."""
        return self.result.plan

    def posterior(self, num_draws: int | None = None) -> dict[str, np.ndarray]:
        """Draws of every global from q(β), in each global's support."""
        return self.result.posterior(num_draws or self.settings.samples)

    def locals(self, draws: int = 256) -> dict[str, np.ndarray]:
        """Posterior mean and sd of every local latent per data row."""
        return self.result.locals(self.data, draws=draws)

    def summary(self) -> list[dict]:
        """One row per scalar of every global: name, mean, sd, 5%, 50%, 95%."""
        return [{"name": name, **stats} for name, stats in self.result.summary().items()]

    def weights(self) -> dict[str, np.ndarray]:
        """Point-estimated parameters and layer weights by their stable names."""
        return {name: to_numpy(p) for name, p in self.module.named_parameters()}

    def save(self, folder: str) -> dict[str, str]:
        """Write every output file; returns {kind: path}."""
        return write_outputs(self, folder)


def prepare_data(module, data) -> dict:
    """Data (a path, or a dict of arrays/tensors) checked against the model."""
    arrays = read_npz(data) if isinstance(data, (str, os.PathLike)) else dict(data)
    source = str(data) if isinstance(data, (str, os.PathLike)) else "data"
    return validate_data(module, arrays, source)


def run_fit(model, data, overrides: dict | None = None, device: str = "auto", out: str | None = None,
            resume: bool = False, progress=None, announce=None) -> Fit:
    """Fit `model` (a himdsl.Model) to `data`; checkpoints go to `out` when given.
    `announce(plan)` is called once the plan is made, before training. Raises
    UntrustedFit when the fit fails its trust checks (unless `checks` is off)."""
    if not model.checked.by_role("observed"):
        raise FitError(f"model `{model.name}` observes no data, so there is nothing to fit: "
                       "tie a `data` array to the model with `observe NAME = ...`")
    settings = settings_for(model, overrides)
    # externs draw from numpy's and Python's generators too (LANGUAGE.md: `--seed`
    # seeds them); the trainer seeds only torch
    seed_everything(settings.seed)
    target = resolve_device(device)
    module = model.module(target)
    arrays = prepare_data(module, data)
    checkpoint = os.path.join(out, OUTPUT_FILES["checkpoint"]) if out else None
    if out:
        os.makedirs(out, exist_ok=True)
    if resume and (checkpoint is None or not os.path.exists(checkpoint)):
        raise FitError(f"--resume: no checkpoint in {out or 'the output folder'}")
    start = time.perf_counter()
    tensors = as_tensors(arrays, module, target)
    try:
        trainer = Trainer(module, tensors, settings)
        if announce is not None:
            announce(trainer.plan)
        result = trainer.run(progress, checkpoint, resume)
    except ValueError as exc:
        raise FitError(str(exc)) from None
    data_file = str(data) if isinstance(data, (str, os.PathLike)) else None
    fit = Fit(model, module, tensors, result, settings, target, time.perf_counter() - start, data_file)
    if result.verdict is not None and not result.verdict.ok:
        raise UntrustedFit(fit)
    return fit


# ------------------------------------------------------------------ outputs
def write_outputs(fit: Fit, folder: str) -> dict[str, str]:
    """posterior.npz, locals.npz, weights.npz, summary.csv, trace.csv, fit.json,
    posterior.png; for a fit that failed its checks only trace.csv, fit.json (with
    the reasons) and posterior_untrusted.npz, and no posterior of an earlier run."""
    os.makedirs(folder, exist_ok=True)
    paths = {kind: os.path.join(folder, name) for kind, name in OUTPUT_FILES.items()}
    _write_text(paths["trace"], trace_csv(fit.result.trace))
    _write_text(paths["settings"], json.dumps(fit_record(fit), indent=2, sort_keys=True) + "\n")
    verdict = fit.result.verdict
    if verdict is not None and not verdict.ok:
        for kind in TRUSTED_ONLY:
            if os.path.exists(paths[kind]):
                os.remove(paths[kind])
        write_npz(paths["untrusted"], fit.posterior())
        return {k: p for k, p in paths.items() if os.path.exists(p) and k not in TRUSTED_ONLY}
    if os.path.exists(paths["untrusted"]):
        os.remove(paths["untrusted"])
    posterior = fit.posterior()
    write_npz(paths["posterior"], posterior)
    local_summaries = fit.locals()
    if local_summaries:
        write_npz(paths["locals"], local_summaries)
    if fit.weights():
        write_npz(paths["weights"], fit.weights())
    _write_text(paths["summary"], summary_csv(fit.summary()))
    if posterior:
        from .plots import plot_posterior

        plot_posterior(posterior, paths["plot"])
    return {k: p for k, p in paths.items() if os.path.exists(p)}


def summary_csv(rows: list[dict]) -> str:
    """The summary table as CSV text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["name", "mean", "sd", "5%", "50%", "95%"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def summary_table(rows: list[dict], limit: int = 40) -> str:
    """The summary as an aligned text table (the first `limit` rows)."""
    header = f"{'':<16} {'mean':>10} {'sd':>10} {'5%':>10} {'50%':>10} {'95%':>10}"
    lines = [header]
    for row in rows[:limit]:
        lines.append(f"{row['name']:<16} " + " ".join(f"{row[k]:>10.4g}" for k in ("mean", "sd", "5%", "50%", "95%")))
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows in summary.csv")
    return "\n".join(lines)


def trace_csv(trace) -> str:
    """step, surrogate ELBO, ratio loss, ratio accuracy, seconds."""
    lines = ["step,elbo,ratio_loss,ratio_accuracy,seconds"]
    lines += [f"{r.step},{r.elbo:.6g},{r.ratio_loss:.6g},{r.ratio_acc:.6g},{r.seconds:.3f}" for r in trace]
    return "\n".join(lines) + "\n"


def fit_record(fit: Fit) -> dict:
    """Everything needed to reproduce the fit: settings, seed, versions, device, time."""
    return {
        "model": {"name": fit.model.name, "file": fit.model.path,
                  "overrides": fit.model.overrides},
        "data": fit.data_file,
        "settings": fit.settings.to_dict(),
        "plan": fit.result.plan.to_dict() if fit.result.plan is not None else None,
        "verdict": fit.result.verdict.to_dict() if fit.result.verdict is not None else None,
        "device": str(fit.device) + (f" ({torch.cuda.get_device_name(fit.device)})"
                                     if fit.device.type == "cuda" else ""),
        "wall_seconds": round(fit.seconds, 3),
        "steps_per_second": round(fit.settings.steps / max(fit.seconds, 1e-9), 2),
        "versions": {"himdsl": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }


def _write_text(path: str, text: str) -> None:
    temp = f"{path}.tmp{os.getpid()}"
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, path)


# ------------------------------------------------------------------ posterior predictive
def posterior_sampler(module, folder, weights: dict | None = None):
    """(globals_from(draws), weights) for `simulate --posterior DIR`."""
    posterior_path = os.path.join(str(folder), OUTPUT_FILES["posterior"])
    draws_all = read_npz(posterior_path) if module.global_names else {}
    missing = [n for n in module.global_names if n not in draws_all]
    if missing:
        raise FitError(f"{posterior_path}: no draws of {', '.join(missing)}")
    weights_path = os.path.join(str(folder), OUTPUT_FILES["weights"])
    if weights is None and os.path.exists(weights_path):
        weights = read_npz(weights_path)

    def globals_from(draws: int) -> dict[str, torch.Tensor]:
        total = len(next(iter(draws_all.values()))) if draws_all else 0
        pick = torch.randint(total, (draws,)) if total else None
        return {name: torch.as_tensor(value[pick.numpy()], dtype=module._anchor.dtype)
                for name, value in draws_all.items() if name in module.global_names}

    return globals_from, weights
