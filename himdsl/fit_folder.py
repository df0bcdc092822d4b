"""A fit's folder reopened, as it was when `fit` finished: what `himdsl diagnose` reads.

    fit = open_fit("hier_gauss_fit")       # a `Fit`
    fit.posterior()["beta"]                # the draws of posterior.npz (the ones the user has)
    fit.result.global_guide                # q(β) as trained, from checkpoint.pt

The model is the text fit.json records (not the file, which may have changed), the
data its recorded file (or `data_file`, with the recorded sha256), and q, the
ratio and the weights come from checkpoint.pt. Without a checkpoint (deleted, or a
fit saved from Python without `out`) `fit.result` is None: the draws and weights
files still serve a posterior predictive check.
"""
from __future__ import annotations

import os

import torch

from .fitting import OUTPUT_FILES, Fit, FitError, prepare_data, resolve_device
from .infer import Trainer
from .infer.checkpoint import load_checkpoint
from .replay import compile_recorded, load_replay
from .runtime.data import DataError, as_tensors, read_npz
from .simulation import load_point_estimates


def open_fit(folder, data_file: str | None = None, device: str = "cpu") -> Fit:
    """The fit in `folder`; FitError (or DataError) naming what is missing or changed."""
    folder = str(folder)
    recorded = load_replay(folder, "diagnose", data_file)
    model = compile_recorded(recorded)
    target = resolve_device(device)
    module = model.module(target)
    data = as_tensors(prepare_data(module, recorded.data_file), module, target)
    draws, trusted = _draws(folder, module)
    identity = {"model_sha256": recorded.record["model"].get("sha256"),
                "data_sha256": recorded.record["data"].get("sha256")}
    result = _trained(folder, module, data, recorded.settings, identity)
    if result is None:
        _load_weights(folder, module)
    fit = Fit(model, module, data, result, recorded.settings, target,
              float(recorded.record.get("wall_seconds", 0.0)), recorded.data_file, identity, _draws=draws)
    fit.notes.extend([] if trusted else [
        f"{folder} holds an untrusted fit (it failed its checks): the draws are "
        f"{OUTPUT_FILES['untrusted']}'s"])
    return fit


def _draws(folder: str, module) -> tuple[dict, bool]:
    """posterior.npz's draws (or an untrusted fit's), and whether the fit was trusted."""
    for kind, trusted in (("posterior", True), ("untrusted", False)):
        path = os.path.join(folder, OUTPUT_FILES[kind])
        if os.path.exists(path):
            draws = read_npz(path)
            missing = [n for n in module.global_names if n not in draws]
            if missing:
                raise FitError(f"{path}: no draws of {', '.join(missing)}")
            return draws, trusted
    if module.global_names:
        raise FitError(f"diagnose {folder}: no {OUTPUT_FILES['posterior']} there")
    return {}, True


def _trained(folder: str, module, data: dict, settings, identity: dict):
    """q, the ratio and the weights from checkpoint.pt (None when there is none)."""
    path = os.path.join(folder, OUTPUT_FILES["checkpoint"])
    if not os.path.exists(path):
        return None
    try:
        trainer = Trainer(module, data, settings, identity)
        load_checkpoint(trainer, path)
    except ValueError as exc:
        raise FitError(f"diagnose: {exc}") from None
    with torch.no_grad():
        return trainer.result()


def _load_weights(folder: str, module) -> None:
    path = os.path.join(folder, OUTPUT_FILES["weights"])
    if os.path.exists(path):
        try:
            load_point_estimates(module, read_npz(path))
        except DataError as exc:
            raise FitError(f"{path}: {exc}") from None
