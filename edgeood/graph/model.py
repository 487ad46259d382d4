"""Load an ONNX classifier and bring it into the one form the rest of edgeood works on:
constants folded, shapes inferred, opset >= 13, a single 4-D float input."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgeood.errors import EdgeoodError

MIN_OPSET = 13
UPGRADE_OPSET = 17


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file, with a clear error for a missing, corrupt or non-ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise EdgeoodError(f"{path}: no such file; pass the path of an .onnx model")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError, onnx raises its own types
        raise EdgeoodError(
            f"{path} is not a readable ONNX file ({type(exc).__name__}); re-export it with "
            "torch.onnx.export or check that the download/copy is complete") from None
    if not model.graph.node:
        raise EdgeoodError(f"{path} holds no ONNX graph nodes; pass an exported ONNX classifier")
    return model


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in chunks (models can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference is a convenience; a model it cannot handle still works
        return model


def prepare(model: onnx.ModelProto) -> gs.Graph:
    """Fold constant subgraphs (exporters leave shape arithmetic behind), infer shapes, check the
    single 4-D float input; upgrade opsets below 13 to 17."""
    if model_opset(model) < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, UPGRADE_OPSET)
        except Exception as exc:
            raise EdgeoodError(
                f"the model uses opset {model_opset(model)} and could not be upgraded to "
                f"{UPGRADE_OPSET} ({exc}); re-export it with opset >= {MIN_OPSET}") from None
    graph = gs.import_onnx(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph.fold_constants().cleanup().toposort()
    graph = gs.import_onnx(_infer(gs.export_onnx(graph)))
    if len(graph.inputs) != 1:
        names = ", ".join(t.name for t in graph.inputs)
        raise EdgeoodError(f"the model has {len(graph.inputs)} inputs ({names}); edgeood needs a "
                           "classifier with one image input")
    x = graph.inputs[0]
    if x.shape is None or len(x.shape) != 4 or np.dtype(x.dtype).kind != "f":
        raise EdgeoodError(f"the model input {x.name} has shape {x.shape} and type {x.dtype}; "
                           "edgeood needs a float N x C x H x W image input")
    return graph


def input_chw(graph: gs.Graph) -> tuple[int | None, int | None, int | None]:
    """(C, H, W) of the graph input; None where the dimension is symbolic."""
    shape = graph.inputs[0].shape
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape[1:])  # type: ignore


def batch_dim(graph: gs.Graph):
    """The input's batch dimension: an int for a fixed batch, else its symbolic name."""
    d = graph.inputs[0].shape[0]
    return d if isinstance(d, int) and d > 0 else (d or "batch")


def to_model(graph: gs.Graph) -> onnx.ModelProto:
    """Export a graphsurgeon graph after cleanup and toposort."""
    graph.cleanup().toposort()
    return gs.export_onnx(graph)
