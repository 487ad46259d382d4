"""What a detector holds: metadata, outputs with shapes, and where its bytes are."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgeood.conventions import PVALUE_PREFIX, SCORE_PREFIX, TAP_PREFIX
from edgeood.graph.model import model_opset
from edgeood.metadata import read_metadata
from edgeood.methods.base import method_class

HEAD_SCOPES = (SCORE_PREFIX, PVALUE_PREFIX, "decision", TAP_PREFIX.rstrip("_"))


def _shape(vi) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def describe(path) -> dict:
    path = Path(path)
    meta = read_metadata(path)
    data = Path(str(path) + ".data")
    info = {"path": str(path), "file_bytes": path.stat().st_size + (data.stat().st_size
                                                                     if data.is_file() else 0),
            "metadata": meta}
    if path.suffix.lower() != ".onnx":
        return info
    model = onnx.load(str(path), load_external_data=False)
    scopes = tuple(s for m, entry in meta["methods"].items()
                   for s in method_class(m).constant_scopes(entry)) + HEAD_SCOPES
    total = head = 0
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        total += n
        if init.name.startswith(scopes):
            head += n
    info.update(constant_bytes=total, head_constant_bytes=head,
                outputs=[{"name": o.name, "shape": _shape(o)} for o in model.graph.output],
                opset=model_opset(model), nodes=len(model.graph.node))
    return info
