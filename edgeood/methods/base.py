"""The interface every scoring method implements: the maths and what it needs.

A method never touches ONNX Runtime, files or the CLI: it declares what it needs (taps, passes
over the data, labels, jigsaw images, a linear head, a tune space), fits its statistics on
streamed batches of tap values, appends its scoring subgraph, carries a NumPy reference of the
same formula, and says what it saved (describe). How it is shown (the CLI's rows and tables,
the docs' catalogue, the demo) is its Presentation (edgeood.methods.presentation), a nested
class in the same file. Nothing outside its module knows its formula or its fitted keys.

Tap keys: "logits", "z" (the penultimate feature vector), "input" (the graph input), "labels"
(fit only: the ID labels, or the predictions where the data has none), a tensor name of the
graph (blocks), or '<method>/<name>' for tensors a method computes itself.

Adding a method = one file with a @register'ed subclass: a new module in edgeood/methods/
(found by the registry on first use), or a module of another package named in its
`edgeood.methods` entry point (edgeood.methods.registry).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.errors import EdgeoodError, did_you_mean
from edgeood.graph.head import ClassifierHead
from edgeood.graph.ops import constant



@dataclass
class ModelInfo:
    """What a method may know about the classifier: its head, its candidate blocks and the
    names of its tensors (to validate tensor-name parameters)."""

    head: ClassifierHead
    candidates: list[str] = field(default_factory=list)
    tensors: list[str] = field(default_factory=list)
    depth: dict[str, int] = field(default_factory=dict)  # tensor -> producing node's index
    precision: str = "float32"  # the backbone's: float32, float16 or int8 (taps are float32)


class Method:
    """Base class. Subclasses set the class attributes below and override what they need."""

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}     # hyperparameters (--param, recipes), all saved
    fitted_keys: ClassVar[tuple[str, ...]] = ()  # statistics fit() produces, saved as JSON
    graph_arrays: ClassVar[tuple[str, ...]] = ()  # fitted arrays saved as graph constants
    tune_space: ClassVar[dict[str, list]] = {}  # searched by calibrate's tuner with tune=true
    needs_fit: ClassVar[bool] = False
    needs_jigsaw: ClassVar[bool] = False         # fit_update also sees jigsaw images (pass 0)
    needs_labels: ClassVar[bool] = False         # fit taps carry "labels"
    needs_linear_head: ClassVar[bool] = False    # reads W, b or z
    fit_passes: ClassVar[int] = 1                # how many times fit_update sees the ID set
    # fraction of the ID images kept out of this method's fitting and used only for its
    # threshold and p-value reference: a method whose statistics memorise the fitting images
    # (a nearest-neighbour bank) would otherwise score its own calibration images too high
    calibration_holdout: ClassVar[float] = 0.0
    # where the method stands in every listing (the registry, --help, the demo, the docs);
    # ties keep the registration order
    order: ClassVar[float] = 1000.0
    by_default: ClassVar[bool] = False           # folded when no method is named

    def __init__(self, **params: Any):
        accepted = self.accepted_params()
        unknown = [k for k in params if k not in accepted]
        if unknown:
            k = unknown[0]
            known = ", ".join(accepted) or "none"
            raise EdgeoodError(f"{self.name} has no parameter '{k}'{did_you_mean(k, accepted)}; "
                               f"its parameters: {known}")
        self.params = {k: _coerce(self.name, k, v, accepted[k])
                       for k, v in {**accepted, **params}.items()}
        self.fitted: dict[str, Any] = {}    # what is saved (fitted_keys and graph_arrays)
        self.scratch: dict[str, Any] = {}   # fitting state, dropped by the calibration loop
        self.tuning: dict[str, Any] | None = None  # the tuner's record (calibrate sets it)
        self.warnings: list[str] = []       # export-time warnings, recorded in the metadata
        self.graph_outputs: dict[str, gs.Tensor] = {}  # extra detector outputs set by build()
        self.model: ModelInfo | None = None
        self.validate()

    @classmethod
    def accepted_params(cls) -> dict[str, Any]:
        """The hyperparameters with their defaults; `tune` where the method has a tune space."""
        return {**cls.defaults, **({"tune": False} if cls.tune_space else {})}

    def validate(self) -> None:
        """Check hyperparameter ranges; raise EdgeoodError."""

    def bind(self, model: ModelInfo) -> None:
        """Attach the classifier; refuse a model this method cannot score."""
        if self.needs_linear_head:
            linear_free = sorted((c for c in REGISTRY.values() if not c.needs_linear_head),
                                 key=lambda c: c.order)
            model.head.require_linear(self.name, [c.name for c in linear_free])
        self.model = model
        self.check_model(model)

    def check_model(self, model: ModelInfo) -> None:
        """Validate parameters that refer to the model (tensor names, sizes); may add warnings."""

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

    def fit_inputs(self) -> dict[str, np.ndarray]:
        """Values for graph inputs that fit_graph created (by input name), fed on every
        calibration run; called again before each pass (statistics of an earlier pass)."""
        return {}

    def fit_update(self, taps: dict[str, np.ndarray], source: str) -> None:
        """One batch of tap values; source is "id", "jigsaw" (the jigsaw of the same images)
        or "ood" (user OOD validation images)."""

    def fit_pass_end(self, index: int) -> None:
        """Called after each of the method's passes over the ID set (e.g. min/max first)."""

    def fit_end(self) -> None:
        """Finish the statistics after the last batch (scratch is cleared afterwards)."""

    def tune_taps(self) -> list[str]:
        """Tap keys reference() reads, collected on ID and pseudo-OOD data for tuning."""
        return self.taps()

    # --- scoring ---------------------------------------------------------------------------
    def taps(self) -> list[str]:
        """Tap keys the in-graph score reads."""
        return ["logits"]

    def build(self, graph: gs.Graph, t: dict[str, gs.Tensor]) -> gs.Variable:
        """Append the scoring subgraph; return the N-vector of scores (higher = more ID).
        Tensors added to `t` are kept as taps with --keep-taps; tensors put in
        self.graph_outputs become detector outputs of that name (batch axis first)."""
        raise NotImplementedError

    def reference(self, taps: dict[str, np.ndarray]) -> np.ndarray:
        """The same score in NumPy (float64), for the parity tests and the tuner."""
        raise NotImplementedError

    def array_constant(self, graph: gs.Graph, key: str) -> gs.Constant:
        """The fitted array `key` as the graph constant '<scope>/<key>' (float32, as stored),
        the form from_metadata reads back."""
        return constant(graph, self.fitted[key], key)

    # --- what is saved and shown -----------------------------------------------------------
    def derived(self) -> dict[str, Any]:
        """Values computed from params and the model, shown in the metadata, never read back."""
        return {}

    def describe(self) -> dict[str, Any]:
        """The metadata entry (JSON-serialisable): params, saved statistics, derived values."""
        saved = {k: _jsonable(self.fitted[k]) for k in self.fitted_keys if k in self.fitted}
        out: dict[str, Any] = {**self.params, **saved}
        if self.graph_arrays:
            out["graph_arrays"] = {k: f"{self.name}/{k}" for k in self.graph_arrays
                                   if k in self.fitted}
        if self.model is not None:
            out.update(_jsonable(self.derived()))
        if self.tuning is not None:
            out["tuning"] = _jsonable(self.tuning)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


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
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


# --- registration: a method module registers its class here (the registry in
# edgeood.methods.registry finds the modules and reads this table) ---------------------------
REGISTRY: dict[str, type[Method]] = {}  # in registration order; registry() sorts it


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its name."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a name")
    old = REGISTRY.get(cls.name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise EdgeoodError(f"two methods are named '{cls.name}' ({old.__module__}."
                           f"{old.__qualname__} and {cls.__module__}.{cls.__qualname__}); "
                           "rename one")
    REGISTRY[cls.name] = cls
    return cls
