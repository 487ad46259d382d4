"""The method registry: a method is one file that @register's its class.

Built-in methods are found by importing every module of this package (pkgutil; subpackages
such as blocks/ and modules starting with '_' are skipped): the classes a module @register's
are the methods, so helper modules (base, numeric, presentation, the blocks) register nothing
and are never taken for methods. Methods of other packages are found through the entry-point
group `edgeood.methods` (a value 'module' or 'module:Class'; loading it registers the class).
Nothing is imported before the first use (registry(), method_class(), create()), so that
`import edgeood` stays cheap.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from edgeood.errors import EdgeoodError, did_you_mean

from edgeood.methods.base import REGISTRY, Method, ModelInfo, register  # noqa: F401

ENTRY_POINT_GROUP = "edgeood.methods"
_loaded = False


def load() -> None:
    """Import the built-in method modules and the entry-point plugins, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # first: a method module that asks the registry while loading sees it
    package = __name__.rpartition(".")[0]  # edgeood.methods, without importing it here
    try:
        for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
            if not info.ispkg and not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
    except BaseException:
        _loaded = False
        raise
    for ep in _entry_points():
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the built-in methods down
            from edgeood.progress import warn
            warn(f"method plugin '{ep.name}' ({ep.value}) failed to load and is skipped: "
                 f"{type(exc).__name__}: {exc}; fix or uninstall its package")
            continue
        if isinstance(obj, type) and issubclass(obj, Method) and obj.name not in REGISTRY:
            register(obj)


def _entry_points() -> list:
    from importlib.metadata import entry_points
    return list(entry_points(group=ENTRY_POINT_GROUP))


def registry() -> dict[str, type["Method"]]:
    """Every method by name, in listing order (each class's `order`, then registration)."""
    load()
    return dict(sorted(REGISTRY.items(), key=lambda kv: kv[1].order))


def default_methods() -> list[str]:
    """What `edgeood export` folds when neither --methods nor a recipe names any."""
    return [n for n, cls in registry().items() if cls.by_default]


def logit_only_methods() -> list[str]:
    """The methods that need no linear head (they read the logits or feature maps)."""
    return [n for n, cls in registry().items() if not cls.needs_linear_head]


def method_class(name: str) -> type["Method"]:
    """The registered class of a method, with a 'did you mean' for typos."""
    known = registry()
    if name not in known:
        raise EdgeoodError(f"unknown method '{name}'{did_you_mean(name, known)}; "
                           f"available: {', '.join(known)}")
    return known[name]


def create(name: str, params: dict[str, Any] | None = None) -> "Method":
    """A method instance by name."""
    return method_class(name)(**(params or {}))


def parse_params(items: list[str] | None) -> dict[str, dict[str, str]]:
    """['react.percentile=95', ...] -> {'react': {'percentile': '95'}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        method, dot, param = key.strip().partition(".")
        if not sep or not dot or not method or not param:
            raise EdgeoodError(f"--param '{item}' is not METHOD.NAME=VALUE; "
                               "write e.g. --param react.percentile=95")
        out.setdefault(method, {})[param] = value.strip()
    return out


def from_metadata(name: str, entry: dict[str, Any], model: "ModelInfo",
                  constants: dict | None = None) -> "Method":
    """Rebuild a fitted method from its metadata entry and, for the statistics it keeps in the
    graph, the detector's constants (edgeood.artifact.metadata.read_constants): it then scores
    exactly like the folded graph."""
    import numpy as np
    cls = method_class(name)
    m = cls(**{k: v for k, v in entry.items() if k in cls.accepted_params()})
    m.bind(model)
    m.fitted = {k: _array_or_value(entry[k]) for k in cls.fitted_keys if k in entry}
    for key, const_name in entry.get("graph_arrays", {}).items():
        if constants is None or const_name not in constants:
            raise EdgeoodError(f"{name}: its fitted '{key}' lives in the detector graph as "
                               f"'{const_name}'; pass the detector's constants")
        m.fitted[key] = np.asarray(constants[const_name])
    m.tuning = entry.get("tuning")
    m.warnings = list(entry.get("warnings", []))
    return m


def _array_or_value(v: Any) -> Any:
    import numpy as np
    return np.asarray(v) if isinstance(v, list) and v and not isinstance(v[0], str) else v
