"""A detector's input/output signature (name, dtype, shape of every graph input and output),
kept in the metadata as "io" so that an engine's sidecar alone says what the engine takes and
returns (serving configs are generated from it without TensorRT)."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgeood.artifact.tensors import TensorSpec, dim_of


def _dtype_name(dtype) -> str:
    if dtype is None:
        return "float32"
    if isinstance(dtype, int):  # an ONNX TensorProto data type
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype)).name
    return np.dtype(dtype).name


def graph_tensors(graph: gs.Graph) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of a graph (symbolic dims by name, unknown ones None)."""
    def spec(t, mode):
        return TensorSpec(t.name, _dtype_name(t.dtype), tuple(dim_of(d) for d in t.shape or []),
                          mode)
    return ([spec(t, "input") for t in graph.inputs], [spec(t, "output") for t in graph.outputs])


def io_spec(graph: gs.Graph) -> dict[str, list[dict[str, Any]]]:
    """The metadata's "io": {"inputs": [...], "outputs": [...]}, each {"name", "dtype",
    "shape"} (symbolic dims by name, unknown ones as -1)."""
    inputs, outputs = graph_tensors(graph)
    return {"inputs": [t.to_io() for t in inputs], "outputs": [t.to_io() for t in outputs]}


def model_tensors(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) as an ONNX model declares them (weights are not inputs)."""
    weights = {t.name for t in model.graph.initializer}

    def spec(vi, mode):
        tt = vi.type.tensor_type
        dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None)
                for d in tt.shape.dim]
        return TensorSpec(vi.name, _dtype_name(tt.elem_type), tuple(dims), mode)
    return ([spec(v, "input") for v in model.graph.input if v.name not in weights],
            [spec(v, "output") for v in model.graph.output])


def io_of_model(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """io_spec read from an ONNX model's declared graph inputs and outputs."""
    inputs, outputs = model_tensors(model)
    return {"inputs": [t.to_io() for t in inputs], "outputs": [t.to_io() for t in outputs]}
