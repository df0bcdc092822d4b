"""himdsl: a modelling language and compiler for hierarchical implicit models.

    import himdsl
    model = himdsl.load("examples/hier_gauss/model.him")
    module = model.module()             # torch.nn.Module

The API is imported lazily, so that `himdsl check` and `himdsl graph` start
without loading PyTorch.
"""
__version__ = "0.1.0"

__all__ = ["parse", "check", "load", "Model", "HimError", "ExternError", "__version__"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'himdsl' has no attribute {name!r}")
