"""The `guide` setting checked against the model, before any network is built.

    guide = resolve_guide(module, {"z": "normal", "beta": "flow"})
    # {"z": LocalGuideSpec("gaussian"), "beta": "flow"}

The same rules hold for a `guide { }` block, `--guide NAME=FAMILY` and
`FitSettings(guide=...)` from Python: every entry names a latent of the model and a
family that latent can take, or the fit stops with a message naming the entry. The
locals of a plate share one amortised guide q(z_1, z_2, ... | x_n, β), so entries for
several locals must agree.
"""
from __future__ import annotations

from .families import FAMILIES, FlowSpec
from .settings import LocalGuideSpec

GLOBAL_FAMILY_NAMES = ("auto",) + tuple(FAMILIES)
# the language's names of the local guides (`normal` is the amortised Gaussian)
LOCAL_FAMILY_NAMES = {"auto": "auto", "normal": "gaussian", "gaussian": "gaussian",
                      "implicit": "implicit"}


def resolve_guide(model, guide: dict) -> dict:
    """`guide` with every local entry a LocalGuideSpec in the trainer's family names;
    ValueError naming the first entry the model cannot honour."""
    globals_, locals_ = tuple(model.global_names), tuple(model.local_names)
    resolved = {}
    for name, spec in guide.items():
        if name in locals_:
            resolved[name] = _local_entry(name, spec)
        elif name in globals_:
            resolved[name] = _global_entry(name, spec)
        else:
            latents = ", ".join(globals_ + locals_) or "none"
            raise ValueError(f"guide entry `{name}`: the model has no latent of that name "
                             f"(latents: {latents})")
    _check_locals_agree({n: s for n, s in resolved.items() if n in locals_})
    return resolved


def _family_name(spec) -> str:
    return spec if isinstance(spec, str) else spec.family


def _global_entry(name: str, spec):
    family = _family_name(spec)
    if isinstance(spec, LocalGuideSpec) or family not in GLOBAL_FAMILY_NAMES:
        raise ValueError(f"guide entry `{name}` = {family!r}: `{name}` is a global latent; its "
                         f"family must be one of {', '.join(GLOBAL_FAMILY_NAMES)}")
    return spec if isinstance(spec, (str, FlowSpec)) else family


def _local_entry(name: str, spec) -> LocalGuideSpec:
    family = _family_name(spec)
    if isinstance(spec, FlowSpec) or family not in LOCAL_FAMILY_NAMES:
        raise ValueError(f"guide entry `{name}` = {family!r}: `{name}` is a local latent; its "
                         "family must be normal (an amortised Gaussian) or implicit")
    if isinstance(spec, LocalGuideSpec):
        return LocalGuideSpec(LOCAL_FAMILY_NAMES[family], tuple(spec.hidden), spec.noise)
    return LocalGuideSpec(LOCAL_FAMILY_NAMES[family])


def _check_locals_agree(entries: dict[str, LocalGuideSpec]) -> None:
    """One amortised guide covers every local of a row, so one family and one size."""
    named = list(entries.items())
    for name, spec in named[1:]:
        first, first_spec = named[0]
        if spec != first_spec:
            raise ValueError(
                f"guide entries `{first}` and `{name}` differ ({_shown(first_spec)} vs "
                f"{_shown(spec)}): the locals of a row share one amortised guide "
                f"q({', '.join(entries)} | x, β); give them the same family and options")


def _shown(spec: LocalGuideSpec) -> str:
    family = "normal" if spec.family == "gaussian" else spec.family
    options = f"hidden = {list(spec.hidden)}" + (f", noise = {spec.noise}" if spec.family == "implicit"
                                                  else "")
    return f"{family}({options})"
