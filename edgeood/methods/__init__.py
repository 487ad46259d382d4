"""Scoring methods, one module each; importing this package registers them."""
from edgeood.methods import (adascale, energy, featurenorm, grood, layer_energy,  # noqa: F401
                             maxlogit, msp, react, scale, weiper)
from edgeood.methods.base import (REGISTRY, Method, ModelInfo, create, from_metadata,  # noqa: F401
                                   method_class, parse_params, register)

# what `edgeood export` folds when neither --methods nor a recipe names any
DEFAULT_METHODS = ["energy", "msp", "maxlogit", "react", "scale", "featurenorm"]
