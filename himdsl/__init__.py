"""himdsl: a modelling language and compiler for hierarchical implicit models."""
__version__ = "0.1.0"
