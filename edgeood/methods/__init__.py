"""Scoring methods, one module each; importing this package registers them."""
from edgeood.methods import (adascale, energy, featurenorm, maxlogit, msp, react,  # noqa: F401
                             scale, weiper)
from edgeood.methods.base import (REGISTRY, Method, ModelInfo, create, from_metadata,  # noqa: F401
                                   parse_params)
