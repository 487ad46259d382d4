"""A detector's input/output signature (name, dtype, shape of every graph input and output),
kept in the metadata as "io" so that an engine's sidecar alone says what the engine takes and
returns (serving configs are generated from it without TensorRT)."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs


def _dtype_name(dtype) -> str:
    if dtype is None:
        return "float32"
    if isinstance(dtype, int):  # an ONNX TensorProto data type
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype)).name
    return np.dtype(dtype).name


def _dims(shape) -> list:
    return [d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) and d else -1)
            for d in (shape or [])]


def io_spec(graph: gs.Graph) -> dict[str, list[dict[str, Any]]]:
    """{"inputs": [...], "outputs": [...]}, each {"name", "dtype", "shape"} (symbolic dims by
    name, unknown ones as -1)."""
    def spec(t):
        return {"name": t.name, "dtype": _dtype_name(t.dtype), "shape": _dims(t.shape)}
    return {"inputs": [spec(t) for t in graph.inputs], "outputs": [spec(t) for t in graph.outputs]}


def io_of_model(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """io_spec read from an ONNX model's declared graph inputs and outputs."""
    weights = {t.name for t in model.graph.initializer}

    def spec(vi):
        tt = vi.type.tensor_type
        dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else -1)
                for d in tt.shape.dim]
        return {"name": vi.name, "dtype": _dtype_name(tt.elem_type), "shape": dims}
    return {"inputs": [spec(v) for v in model.graph.input if v.name not in weights],
            "outputs": [spec(v) for v in model.graph.output]}
