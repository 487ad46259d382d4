"""Scoring methods, one module each; importing this package registers them."""
from edgeood.methods import energy, featurenorm, maxlogit, msp, react, scale  # noqa: F401
from edgeood.methods.base import (REGISTRY, Method, ModelInfo, create, from_metadata,  # noqa: F401
                                   parse_params)
