"""Checkpoints: everything a fit needs to continue exactly where it stopped.

    save_checkpoint(trainer, "fit/checkpoint.pt")    # atomic: temp file + os.replace
    load_checkpoint(trainer, "fit/checkpoint.pt")    # same settings, or CheckpointError

A checkpoint is plain data (tensors, numbers, strings, lists and dicts), loaded with
`torch.load(weights_only=True)`: it never runs code. It holds every random state
the fit uses (torch's, numpy's and Python's, which externs may draw from).
"""
from __future__ import annotations

import random

import numpy as np
import torch

from ..atomic import write_atomically
from .result import TraceRow


class CheckpointError(ValueError):
    """A checkpoint that cannot continue this fit (damaged, another model, data set,
    version or settings); the message is user-facing."""


# Settings a resumed fit may change: `steps` continues a run to a new length.
RESUMABLE_CHANGES = ("steps", "samples", "log_every", "checkpoint_every", "checks")


def save_checkpoint(trainer, path: str) -> None:
    """Write the trainer's state to `path` atomically."""
    ratio = trainer.ratio
    blob = {
        "modules": {k: m.state_dict() for k, m in trainer.modules().items()},
        "q_opt": trainer.q_opt.state_dict() if trainer.q_opt else None,
        "r_opt": ratio.opt.state_dict() if ratio else None,
        "state": _state_dict(trainer.state),
        "average": trainer.average.state_dict(),
        "settings": trainer.settings.to_dict(),
        "plan": trainer.plan.to_dict(),
        "rng": _rng_states(),
        "population": trainer.covering.state_dict() if trainer.covering else None,
        "ratio_state": ratio.state_dict() if hasattr(ratio, "state_dict") else None,
        "identity": dict(trainer.identity),
        "moments": trainer.moments.state_dict(),
    }
    write_atomically(path, lambda stream: torch.save(blob, stream))


def read_checkpoint(path: str, device="cpu") -> dict:
    """The checkpoint's contents (plain data); CheckpointError when it cannot be read."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported alike
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
                              "it is damaged or was written by another version") from None


def check_identity(saved: dict, current: dict, path: str) -> None:
    """Refuse a checkpoint of another model or data set (their sha256 differ)."""
    for key, what in (("model_sha256", "model (its text or --set constants)"),
                      ("data_sha256", "data file")):
        if saved.get(key) and current.get(key) and saved[key] != current[key]:
            raise CheckpointError(f"checkpoint {path} was written for a different {what}: sha256 "
                                  f"{saved[key][:12]}.. there, {current[key][:12]}.. now; resume with "
                                  "the model and data it was written for, or fit into a new --out folder")


def load_checkpoint(trainer, path: str) -> None:
    """Restore a checkpoint written by `save_checkpoint` with the same settings."""
    blob = read_checkpoint(path, trainer.view.device)
    check_identity(blob.get("identity", {}), trainer.identity, path)
    _check_settings(trainer, blob, path)
    for key, mod in trainer.modules().items():
        try:
            mod.load_state_dict(blob["modules"][key])
        except RuntimeError as exc:     # its networks have other shapes
            raise CheckpointError(f"checkpoint {path} was written by another version of himdsl ({key}: "
                                  f"{str(exc).splitlines()[0]}); fit into a new --out folder") from None
    if trainer.q_opt is not None:
        _load_optimiser(trainer.q_opt, blob["q_opt"], path)
    if trainer.ratio is not None:
        trainer.ratio.sync_optimiser()
        _load_optimiser(trainer.ratio.opt, blob["r_opt"], path)
        if blob["ratio_state"] is not None:
            trainer.ratio.load_state_dict(blob["ratio_state"])
    _load_state(trainer.state, blob["state"])
    trainer.average.load_state_dict(blob["average"])
    if trainer.covering is not None:
        trainer.covering.load_state_dict(blob["population"])
    if "moments" in blob:       # q's trace over the final quarter, which "q settled" judges
        trainer.moments.load_state_dict(blob["moments"])
    if blob["settings"]["steps"] != trainer.settings.steps:
        # a longer run: the schedules follow the new length, and q's parameter
        # average restarts over its final fraction
        trainer.average.restart()
    _set_rng_states(blob["rng"])


def _load_optimiser(opt, state: dict, path: str) -> None:
    """An optimiser's state; a checkpoint whose optimiser has other parameter groups
    was written by another version of himdsl."""
    try:
        opt.load_state_dict(state)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} was written by another version of himdsl ({exc}); "
                              "fit into a new --out folder") from None


def _check_settings(trainer, blob: dict, path: str) -> None:
    saved, current = blob["settings"], trainer.settings.to_dict()
    changed = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if changed:
        raise CheckpointError(f"checkpoint {path} was written with different settings "
                              f"({', '.join(changed)}); resume with the same settings "
                              f"(only {', '.join(RESUMABLE_CHANGES)} may change)")
    if blob["state"]["step"] > trainer.settings.steps:
        raise CheckpointError(f"checkpoint {path} is at step {blob['state']['step']}, past the "
                              f"{trainer.settings.steps} steps asked for")


def _state_dict(state) -> dict:
    return {"step": state.step, "seconds": state.seconds,
            "trace": [list(_row_values(r)) for r in state.trace],
            "row_order": state.row_order, "row_pos": state.row_pos}


def _row_values(row: TraceRow) -> tuple:
    return (row.step, row.elbo, row.ratio_loss, row.ratio_acc, row.seconds)


def _load_state(state, saved: dict) -> None:
    state.step, state.seconds = int(saved["step"]), float(saved["seconds"])
    state.trace = [TraceRow(int(r[0]), *map(float, r[1:])) for r in saved["trace"]]
    state.row_order, state.row_pos = saved["row_order"], int(saved["row_pos"])


def _rng_states() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    states = {"torch": torch.get_rng_state(),
              "numpy": [kind, torch.as_tensor(keys.astype(np.int64)), int(pos), int(has_gauss),
                        float(cached)],
              "python": [int(version), torch.tensor(internal, dtype=torch.int64),
                         gauss if gauss is None else float(gauss)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"].cpu())
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
