"""The graph decides: an .onnx detector's primary threshold and p-value reference tables are
graph constants, and the metadata's copies of them must say the same.

is_ood = Not(GreaterOrEqual(score_<primary>, threshold)) (edgeood.graph.fold.build_decision):
the threshold is found by following is_ood back to its comparison, whatever the constant's
name. The reference tables are the constants the metadata's "pvalue_references" names, one
row per method, n + 1 wide (a -inf column, then the n sorted ID scores). A metadata copy that
disagrees (an edited threshold, a swapped table) is refused in one line naming the field and
the fix, so that `inspect`, `load` and `deploy` never show or serve a threshold the graph does
not apply. Only the primary method's threshold is in the graph; the others live in the
metadata alone. Engines have no graph to compare with: their sidecar is their metadata.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgeood.artifact.names import IS_OOD, SCORE_PREFIX, method_of
from edgeood.errors import EdgeoodError

COMPARISONS = ("GreaterOrEqual", "Greater", "Less", "LessOrEqual")
PASS_THROUGH = ("Cast", "Identity", "Not", "Squeeze", "Reshape", "Unsqueeze", "Flatten")


def _constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers and Constant-node values by tensor name (weights not loaded)."""
    out = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = a.t
    return out


def _value(tensor: onnx.TensorProto, folder: Path) -> np.ndarray:
    return numpy_helper.to_array(tensor, base_dir=str(folder))


def decision(model: onnx.ModelProto, folder: Path = Path(".")) -> tuple[str, np.ndarray] | None:
    """(method, threshold constant) that is_ood compares against, or None without is_ood."""
    if IS_OOD not in {o.name for o in model.graph.output}:
        return None
    producer = {o: n for n in model.graph.node for o in n.output}
    constants = _constants(model)
    todo, seen = [IS_OOD], set()
    while todo:
        name = todo.pop(0)
        node = producer.get(name)
        if node is None or name in seen:
            continue
        seen.add(name)
        if node.op_type in COMPARISONS:
            const = [i for i in node.input if i in constants]
            other = [i for i in node.input if i not in constants]
            if len(const) == 1 and len(other) == 1:
                method = _score_of(other[0], producer)
                if method is not None:
                    return method, _value(constants[const[0]], folder)
        if node.op_type in PASS_THROUGH or node.op_type in COMPARISONS:
            todo.extend(i for i in node.input if i and i not in constants)
    return None


def _score_of(name: str, producer: dict[str, onnx.NodeProto]) -> str | None:
    """The method whose score_<method> tensor feeds `name` through casts and reshapes."""
    for _ in range(8):
        method = method_of(name, SCORE_PREFIX)
        if method is not None:
            return method
        node = producer.get(name)
        if node is None or node.op_type not in PASS_THROUGH or not node.input:
            return None
        name = node.input[0]
    return None


def _same(meta_value: float, graph_value: np.ndarray) -> bool:
    """The metadata's float64 threshold as the graph stores it (its dtype) equals the graph's."""
    g = graph_value.ravel()
    if g.size != 1:
        return False
    stored = np.asarray(meta_value).astype(g.dtype)
    return bool(stored == g[0]) or (math.isnan(float(meta_value)) and bool(np.isnan(g[0])))


def check_graph(path: str | Path, meta: dict[str, Any],
                model: onnx.ModelProto | None = None) -> None:
    """Refuse, in one line, metadata whose primary method, primary threshold or reference
    tables differ from the graph's."""
    path = Path(path)
    if model is None:
        model = onnx.load(str(path), load_external_data=False)
    fix = (f"recalibrate with 'edgeood calibrate {path} --data ID_DIR' (or re-export)")
    methods = meta.get("methods") or {}
    found = decision(model, path.parent)
    if found is not None:
        method, value = found
        primary = meta.get("primary")
        if primary != method:
            raise EdgeoodError(f"{path}: the metadata's primary method is {primary} but the "
                               f"graph decides on score_{method}; {fix}")
        threshold = (methods.get(method) or {}).get("threshold")
        graph_value = float(value.ravel()[0]) if value.size == 1 else value.tolist()
        if threshold is None:
            raise EdgeoodError(f"{path}: the metadata has no threshold for {method} but the "
                               f"graph decides at {graph_value:.7g}; {fix}")
        if not isinstance(threshold, (int, float)) or not _same(float(threshold), value):
            shown = f"{threshold:.7g}" if isinstance(threshold, (int, float)) else repr(threshold)
            decides = f"{graph_value:.7g}" if isinstance(graph_value, float) else graph_value
            raise EdgeoodError(f"{path}: the metadata's threshold for {method} is {shown} but "
                               f"the graph decides at {decides}; {fix}")
    _check_references(path, meta, model, fix)


def _check_references(path: Path, meta: dict[str, Any], model: onnx.ModelProto,
                      fix: str) -> None:
    tables = _constants(model)
    methods = meta.get("methods") or {}
    for method, where in (meta.get("pvalue_references") or {}).items():
        name, row = (where or {}).get("constant"), (where or {}).get("row", 0)
        table = tables.get(str(name))
        if table is None:
            raise EdgeoodError(f"{path}: the metadata's p-value reference for {method} names the "
                               f"constant {name}, which the graph does not have; {fix}")
        dims = list(table.dims)
        rows = dims[0] if len(dims) == 3 else 1
        if not isinstance(row, int) or not 0 <= row < rows:
            raise EdgeoodError(f"{path}: the metadata's p-value reference for {method} is row "
                               f"{row} of {name}, which has {rows}; {fix}")
        size = (methods.get(method) or {}).get("reference_size")
        held = dims[-1] - 1 if dims else 0
        if size is not None and size != held:
            raise EdgeoodError(f"{path}: the metadata's reference_size for {method} is {size} "
                               f"but the graph's reference ({name}) holds {held} scores; {fix}")


def check_methods(path: str | Path, meta: dict[str, Any], model: onnx.ModelProto) -> None:
    """Refuse, in one line, a detector whose metadata and graph name different methods (the
    graph's score_<method> outputs against the metadata's "methods"): calibration would fit
    thresholds for scores the graph does not have, or leave graph scores without one."""
    from edgeood.artifact.names import SCORE_PREFIX
    graph = [o.name[len(SCORE_PREFIX):] for o in model.graph.output
             if o.name.startswith(SCORE_PREFIX)]
    listed = list((meta.get("methods") or {}))
    lost = [m for m in graph if m not in listed]
    extra = [m for m in listed if m not in graph]
    if not lost and not extra:
        return
    what = (f"the graph scores {', '.join(lost)} but its metadata has no entry for "
            f"{'it' if len(lost) == 1 else 'them'}" if lost else
            f"its metadata lists {', '.join(extra)} but the graph has no "
            f"{', '.join(SCORE_PREFIX + m for m in extra)} output")
    raise EdgeoodError(f"{path}: {what}; the metadata does not describe this graph: restore the "
                       "detector's metadata (its .json sidecar, if intact) or re-export it from "
                       "its classifier")
