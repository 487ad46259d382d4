"""What a detector holds: metadata, outputs with shapes, and where its bytes are."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgeood.metadata import read_metadata

HEAD_SCOPES = ("score_", "pvalue_", "decision", "tap", "weiper/")


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
    method_scopes = tuple(f"{m}/" for m in meta["methods"]) + tuple(f"pvalue_{m}/" for m in
                                                                      meta["methods"])
    total = head = 0
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        total += n
        if init.name.startswith(method_scopes + HEAD_SCOPES):
            head += n
    info.update(constant_bytes=total, head_constant_bytes=head,
                outputs=[{"name": o.name, "shape": _shape(o)} for o in model.graph.output],
                opset=max(i.version for i in model.opset_import if i.domain in ("", "ai.onnx")),
                nodes=len(model.graph.node))
    return info
