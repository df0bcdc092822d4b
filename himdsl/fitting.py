"""`himdsl fit` as a library: settings from the model and the command line, the
trainer, and the files a fit leaves behind.

    fit = himdsl.load("hier_gauss.him").fit({"x": x}, steps=2000)
    fit.posterior(1000)["beta"]     # [1000, 2]
    fit.locals()["z_mean"]          # [N, 2]
    fit.save("hier_gauss_fit/")     # posterior.npz, posterior.nc, locals.npz, summary.csv, trace.csv, fit.json, posterior.png

Output layout (one place knows it): see `OUTPUT_FILES`.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .atomic import remove_partial_files, write_text_atomically
from .infer import FitResult, FitSettings, FlowSpec, LocalGuideSpec, RatioSettings, Trainer
from .infer.checkpoint import CheckpointError, check_identity, read_checkpoint
from .infer.guide_entries import LOCAL_FAMILY_NAMES
from .infer.result import summarise
from .provenance import data_sha256, device_name, model_identity, software_versions
from .runtime.data import as_tensors, read_npz, to_numpy, validate_data, write_npz
from .runtime.support import check_observed_support
from .simulation import seed_everything

OUTPUT_FILES = {
    "posterior": "posterior.npz", "locals": "locals.npz", "summary": "summary.csv",
    "trace": "trace.csv", "settings": "fit.json", "plot": "posterior.png", "checkpoint": "checkpoint.pt",
    "weights": "weights.npz", "untrusted": "posterior_untrusted.npz", "inference_data": "posterior.nc",
}
# What a fit that failed its trust checks must not leave behind (from an earlier run).
TRUSTED_ONLY = ("posterior", "locals", "summary", "plot", "weights", "inference_data")


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
    (command-line values: steps, batch, particles, lr, samples, seed, budget, method, guide)."""
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
    unknown = sorted(set(values) - set(FitSettings.__dataclass_fields__))
    if unknown:
        raise FitError(f"unknown fit setting(s) {', '.join(unknown)}; the settings are "
                       f"{', '.join(FitSettings.__dataclass_fields__)}")
    settings = replace(settings, **values)
    method = overrides.get("method")
    if method and method != "auto":
        settings = replace(settings, method=method)
    # checked against the model with the .him entries when the trainer starts (guide_entries.py)
    settings.guide.update(overrides.get("guide") or {})
    try:
        settings.validate()
    except ValueError as exc:
        raise FitError(str(exc)) from None
    return settings


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
    identity: dict | None = None      # the model's and data's sha256 (provenance.py)
    _draws: dict | None = field(default=None, repr=False)
    notes: list = field(default_factory=list)      # what the outputs could not hold

    @property
    def plan(self):
        """The plan the fit executed (himdsl.infer.Plan)."""
        return self.result.plan

    def posterior(self, num_draws: int | None = None) -> dict[str, np.ndarray]:
        """Draws of every global from q(β), in each global's support. The `samples`
        draws are made once: the printed summary, summary.csv and posterior.npz agree."""
        if num_draws not in (None, self.settings.samples):
            return self.result.posterior(num_draws)
        if self._draws is None:
            self._draws = self.result.posterior(self.settings.samples)
        return self._draws

    def locals(self, draws: int = 256) -> dict[str, np.ndarray]:
        """Posterior mean and sd of every local latent per data row."""
        return self.result.locals(self.data, draws=draws)

    def summary(self) -> list[dict]:
        """One row per scalar of every global: name, mean, mcse, sd, 5%, 50%, 95% (of
        `posterior()`). Draws from q are independent: the Monte Carlo standard error
        of the mean is sd / sqrt(S). Resampled from weighted draws (importance.py) it
        is sd · sqrt(1 / ESS + 1 / S): the weights' error, then the resampling's."""
        posterior = self.posterior()
        draws = max(len(next(iter(posterior.values()), ())), 1)
        report = self.result.resampling if self.result is not None else None
        scale = np.sqrt(1 / draws + (1 / report.ess if report is not None and report.used else 0.0))
        return [{"name": name, "mean": stats["mean"], "mcse": stats["sd"] * scale, **stats}
                for name, stats in summarise(posterior).items()]

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
    checked = validate_data(module, arrays, source)
    check_observed_support(module, checked, source)
    return checked


def run_fit(model, data, overrides: dict | None = None, device: str = "auto", out: str | None = None,
            resume: bool = False, progress=None, announce=None, settings: FitSettings | None = None,
            polish_progress=None) -> Fit:
    """Fit `model` (a himdsl.Model) to `data`; checkpoints go to `out` when given.
    `settings` replaces the model's own (a replay); `overrides` then apply. With
    `resume` the checkpoint's settings continue, and only a longer run may be asked.
    `announce(plan, settings, seconds_per_simulation, resumed_at)` is called once the
    plan is made and the simulator's cost measured, before training (`resumed_at`:
    the checkpoint's step when resuming, else None);
    `progress` and `polish_progress` are Trainer.run's two callbacks. Raises
    UntrustedFit when the fit fails its trust checks (unless `checks` is off)."""
    if not model.checked.by_role("observed"):
        raise FitError(f"model `{model.name}` observes no data, so there is nothing to fit: "
                       "tie a `data` array to the model with `observe NAME = ...`")
    checkpoint = os.path.join(out, OUTPUT_FILES["checkpoint"]) if out else None
    if out:
        prepare_output_folder(out)
    identity = {"model_sha256": model_identity(model)["sha256"], "data_sha256": _data_sha256(data)}
    if resume:
        base, earlier, resumed_at = _resumed(checkpoint, identity)
    else:
        base, earlier, resumed_at = settings or settings_for(model), 0.0, None
    settings = _apply_overrides(replace(base, guide=dict(base.guide)), overrides or {}, model)
    if resumed_at is not None and resumed_at > settings.steps:      # before the plan is shown
        raise FitError(f"--resume: the checkpoint in {out} is at step {resumed_at}, past the "
                       f"{settings.steps} steps asked for; to continue it ask for more (`--steps N`, "
                       f"N above {resumed_at})")
    # externs draw from numpy's and Python's generators too (docs/language.md: `--seed`
    # seeds them); the trainer seeds only torch
    seed_everything(settings.seed)
    target = resolve_device(device)
    module = model.module(target)
    arrays = prepare_data(module, data)
    start = time.perf_counter()
    tensors = as_tensors(arrays, module, target)
    try:
        trainer = Trainer(module, tensors, settings, identity)
    except ValueError as exc:       # a setting or guide entry the model cannot take
        raise FitError(str(exc)) from None
    if announce is not None:
        announce(trainer.plan, trainer.settings, trainer.seconds_per_simulation, resumed_at)
    try:
        result = trainer.run(progress, checkpoint, resume, polish_progress)
    except CheckpointError as exc:  # anything else raised while training is himdsl's
        raise FitError(str(exc)) from None
    data_file = str(data) if isinstance(data, (str, os.PathLike)) else None
    seconds = earlier + time.perf_counter() - start      # a resumed fit counts its whole time
    trainer.record_wall_time(checkpoint, seconds)
    fit = Fit(model, module, tensors, result, settings, target, seconds, data_file, identity)
    if result.verdict is not None and not result.verdict.ok:
        raise UntrustedFit(fit)
    return fit


def prepare_output_folder(out: str) -> None:
    """The output folder exists and can be written, before any training time is
    spent; temporary files a killed fit left there are removed."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise FitError(f"--out {out}: a file of that name exists; the output is a folder")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".himdsl-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise FitError(f"--out {out}: the folder cannot be written ({exc.strerror or exc})") from None
    remove_partial_files(out)


def _data_sha256(data) -> str | None:
    try:
        return data_sha256(data)
    except OSError:
        return None     # prepare_data reports the unreadable file


def _resumed(checkpoint: str | None, identity: dict) -> tuple[FitSettings, float, int]:
    """The checkpoint's settings, the seconds it has trained and its step; FitError when there is
    none, it is damaged, or it belongs to another model or data set."""
    if checkpoint is None or not os.path.exists(checkpoint):
        raise FitError(f"--resume: no checkpoint in {os.path.dirname(checkpoint) if checkpoint else 'the output folder'}")
    try:
        blob = read_checkpoint(checkpoint)
        check_identity(blob.get("identity", {}), identity, checkpoint)
    except ValueError as exc:
        raise FitError(str(exc)) from None
    state = blob["state"]
    return FitSettings.from_dict(blob["settings"]), float(state["seconds"]), int(state["step"])


# ------------------------------------------------------------------ outputs
def write_outputs(fit: Fit, folder: str) -> dict[str, str]:
    """posterior.npz, posterior.nc, locals.npz, weights.npz, summary.csv, trace.csv,
    fit.json, posterior.png; for a fit that failed its checks only trace.csv, fit.json (with
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
    _write_text(paths["summary"], summary_csv(fit.summary(), verdict))
    from .inference_data import write_inference_data
    write_inference_data(fit, paths["inference_data"])
    if posterior:
        _plot(fit, posterior, paths["plot"])
    return {k: p for k, p in paths.items() if os.path.exists(p)}


def _plot(fit: Fit, posterior: dict, path: str) -> None:
    """posterior.png; a picture that cannot be drawn never costs the fit's results."""
    from .plots import plot_posterior

    try:
        plot_posterior(posterior, path)
    except Exception as exc:  # noqa: BLE001 - matplotlib's errors are many and not the user's
        if os.path.exists(path):
            os.remove(path)
        fit.notes.append(f"posterior.png not drawn ({type(exc).__name__}: {exc}); the draws are "
                         "in posterior.npz")


# CmdStan's `stansummary` columns that apply to independent draws from q (N_Eff and
# R_hat are MCMC diagnostics): {column: key of a `Fit.summary()` row}
SUMMARY_COLUMNS = {"Mean": "mean", "MCSE": "mcse", "StdDev": "sd", "5%": "5%", "50%": "50%", "95%": "95%"}


def summary_csv(rows: list[dict], verdict=None) -> str:
    """The summary table as CSV text: name, then SUMMARY_COLUMNS; below it, as
    stansummary does, the verdict as `#` comment lines (`pandas.read_csv(path,
    comment="#")` skips them)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", *SUMMARY_COLUMNS])
    for row in rows:
        writer.writerow([row["name"], *(f"{float(row[k]):.6g}" for k in SUMMARY_COLUMNS.values())])
    for line in verdict.lines() if verdict is not None else ():
        buffer.write(f"# {line.strip()}\n")
    return buffer.getvalue()


def summary_table(rows: list[dict], limit: int = 40) -> str:
    """The summary as an aligned text table (the first `limit` rows), with summary.csv's columns."""
    lines = [f"{'':<16} " + " ".join(f"{column:>10}" for column in SUMMARY_COLUMNS)]
    for row in rows[:limit]:
        lines.append(f"{row['name']:<16} " + " ".join(f"{row[k]:>10.4g}" for k in SUMMARY_COLUMNS.values()))
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows in summary.csv")
    return "\n".join(lines)


def trace_csv(trace) -> str:
    """step, surrogate ELBO, ratio loss, ratio accuracy, seconds."""
    lines = ["step,elbo,ratio_loss,ratio_accuracy,seconds"]
    lines += [f"{r.step},{r.elbo:.6g},{r.ratio_loss:.6g},{r.ratio_acc:.6g},{r.seconds:.3f}" for r in trace]
    return "\n".join(lines) + "\n"


def fit_record(fit: Fit) -> dict:
    """Everything needed to reproduce the fit from its folder alone (`fit --replay`):
    the model's text, the data file and its sha256, the settings, the plan, the
    versions and the device."""
    identity = fit.identity or {}
    return {
        "model": {"name": fit.model.name, **model_identity(fit.model)},
        "data": {"file": os.path.abspath(fit.data_file) if fit.data_file else None,
                 "sha256": identity.get("data_sha256")},
        "settings": fit.settings.to_dict(),
        "plan": fit.result.plan.to_dict() if fit.result.plan is not None else None,
        "verdict": fit.result.verdict.to_dict() if fit.result.verdict is not None else None,
        "device": device_name(fit.device),
        "wall_seconds": round(fit.seconds, 3),
        "steps_per_second": round(fit.settings.steps / max(fit.seconds, 1e-9), 2),
        "versions": software_versions(),
    }


def _write_text(path: str, text: str) -> None:
    write_text_atomically(path, text)


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
