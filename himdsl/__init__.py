"""himdsl: a modelling language and compiler for hierarchical implicit models.

    import himdsl
    model = himdsl.load("examples/hier_gauss/model.him")
    module = model.module()             # torch.nn.Module
"""
__version__ = "0.1.0"

from .api import ExternError, HimError, Model, check, load, parse  # noqa: E402

__all__ = ["parse", "check", "load", "Model", "HimError", "ExternError", "__version__"]
