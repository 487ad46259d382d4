"""The interface every scoring method implements, and the method registry.

A method never touches ONNX Runtime, files or the CLI: it says which tensors it needs, fits its
statistics on streamed batches of those tensors, appends its scoring subgraph, and carries a
NumPy reference of the same formula for the parity tests.

Tap keys: "logits", "z" (the penultimate feature vector), "input" (the graph input) or a tensor
name of the graph (blocks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.errors import EdgeoodError, did_you_mean
from edgeood.graph.head import ClassifierHead

REGISTRY: dict[str, type["Method"]] = {}


@dataclass
class ModelInfo:
    """What a method may know about the classifier: its head and its candidate blocks."""

    head: ClassifierHead
    candidates: list[str] = field(default_factory=list)


class Method:
    """Base class. Subclasses set name, defaults, and override what they need."""

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    needs_fit: ClassVar[bool] = False
    needs_jigsaw: ClassVar[bool] = False
    fit_passes: ClassVar[int] = 1  # how many times fit_update sees the ID set
    tunes_on_ood: bool = False  # set by the API when OOD validation images are given

    def __init__(self, **params: Any):
        unknown = [k for k in params if k not in self.defaults]
        if unknown:
            k = unknown[0]
            known = ", ".join(self.defaults) or "none"
            raise EdgeoodError(f"{self.name} has no parameter '{k}'{did_you_mean(k, self.defaults)}; "
                               f"its parameters: {known}")
        self.params = {k: _coerce(self.name, k, v, self.defaults[k])
                       for k, v in {**self.defaults, **params}.items()}
        self.fitted: dict[str, Any] = {}
        self.model: ModelInfo | None = None
        self.validate()

    def validate(self) -> None:
        """Check hyperparameter ranges; raise EdgeoodError."""

    def bind(self, model: ModelInfo) -> None:
        self.model = model

    @property
    def head(self) -> ClassifierHead:
        assert self.model is not None, "bind() the method to a model first"
        return self.model.head

    # --- calibration -----------------------------------------------------------------------
    def fit_taps(self) -> list[str]:
        """Tap keys needed by fit_update (empty when nothing is fitted)."""
        return []

    def fit_graph(self, graph: gs.Graph, t: dict[str, gs.Tensor]) -> dict[str, gs.Tensor]:
        """Extra tensors to compute in the calibration graph, by key (default: none)."""
        return {}

    def fit_update(self, taps: dict[str, np.ndarray], source: str) -> None:
        """One batch of tap values; source is "id" or "jigsaw" (the jigsaw of the same images)."""

    def fit_pass_end(self, index: int) -> None:
        """Called after each of the method's passes over the ID set (e.g. min/max first)."""

    def fit_end(self) -> None:
        """Finish the statistics after the last batch."""

    # --- scoring ---------------------------------------------------------------------------
    def taps(self) -> list[str]:
        """Tap keys the in-graph score reads."""
        return ["logits"]

    def build(self, graph: gs.Graph, t: dict[str, gs.Tensor]) -> gs.Variable:
        """Append the scoring subgraph; return the N-vector of scores (higher = more ID)."""
        raise NotImplementedError

    def reference(self, taps: dict[str, np.ndarray]) -> np.ndarray:
        """The same score in NumPy (float64), for the parity tests."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Hyperparameters and fitted choices for the metadata (JSON-serialisable)."""
        return {**self.params, **{k: _jsonable(v) for k, v in self.fitted.items()}}


def _coerce(method: str, key: str, value: Any, default: Any) -> Any:
    """Convert a CLI/recipe value to the type of the parameter's default."""
    if isinstance(default, (list, tuple)):
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return list(value)
    if default is None:
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            return {"1": True, "true": True, "yes": True, "0": False, "false": False,
                    "no": False}[str(value).lower()]
        if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return type(default)(value)
    except (TypeError, ValueError, KeyError):
        raise EdgeoodError(f"{method}.{key}={value!r} is not a {type(default).__name__}; "
                           f"pass e.g. {method}.{key}={default}") from None


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def register(cls: type[Method]) -> type[Method]:
    REGISTRY[cls.name] = cls
    return cls


def create(name: str, params: dict[str, Any] | None = None) -> Method:
    """A method instance by name, with a 'did you mean' for typos."""
    from edgeood import methods as _  # noqa: F401  (registers the built-in methods)
    if name not in REGISTRY:
        raise EdgeoodError(f"unknown method '{name}'{did_you_mean(name, REGISTRY)}; "
                           f"available: {', '.join(REGISTRY)}")
    return REGISTRY[name](**(params or {}))


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


DERIVED_KEYS = ("threshold", "reference_size")


def from_metadata(name: str, entry: dict[str, Any], model: ModelInfo) -> Method:
    """Rebuild a fitted method from its metadata entry (for host-side scoring and tests)."""
    cls = create(name).__class__
    params = {k: v for k, v in entry.items() if k in cls.defaults}
    m = create(name, params)
    m.bind(model)
    m.fitted = {k: v for k, v in entry.items()
                if k not in cls.defaults and k not in DERIVED_KEYS}
    return m
