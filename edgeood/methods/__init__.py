"""Scoring methods, one file each. The registry finds them on first use
(edgeood.methods.registry): importing this package imports no method module."""
from edgeood.methods.base import Method, ModelInfo  # noqa: F401
from edgeood.methods.registry import (REGISTRY, create, default_methods,  # noqa: F401
                                      from_metadata, method_class, parse_params, register,
                                      registry)


def __getattr__(name):
    """DEFAULT_METHODS: what `edgeood export` folds when neither --methods nor a recipe names
    any, from the classes' by_default, in listing order (PEP 562: computed on use)."""
    if name == "DEFAULT_METHODS":
        return default_methods()
    raise AttributeError(f"module 'edgeood.methods' has no attribute {name!r}")
