"""ONNX Runtime with a captured CUDA graph: every input and output bound to a fixed device
buffer (IO binding), so the CUDA provider (enable_cuda_graph=1) or the TensorRT EP
(trt_cuda_graph_enable) captures the first run and replays it afterwards.

Shapes must be fixed: batches are cut and padded to the bound batch; every other dimension of
every input and output must be static.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from edgeood.artifact.names import MONITOR_STATE
from edgeood.errors import EdgeoodError, spell
from edgeood.runtime.onnxruntime.providers import _NP_TYPES


def bound_shape(name: str, dims: list[Any], batch: int) -> list[int]:
    """The fixed shape of a bound tensor: a symbolic axis 0 becomes `batch`; any other symbolic
    dimension is an error (a captured graph replays fixed shapes only)."""
    shape = []
    for i, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            shape.append(d)
        elif i == 0:
            shape.append(batch)
        else:
            raise EdgeoodError(f"{spell('cuda_graph')} needs fixed shapes; {name} has shape "
                               f"{dims}: "
                               "export the detector with a fixed image size")
    return shape


class CudaGraphRunner:
    """Runs a session through one IO binding whose buffers never move."""

    def __init__(self, session: ort.InferenceSession, batch: int | None, device_id: int = 0):
        if not batch:
            raise EdgeoodError(f"{spell('cuda_graph')} needs a fixed batch: pass --batch N (the "
                               f"graph is "
                               "captured for that batch and smaller batches are padded)")
        self.session, self.batch = session, int(batch)
        self.io = session.io_binding()
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.batched: set[str] = set()
        for inp in session.get_inputs():
            shape = bound_shape(inp.name, list(inp.shape), self.batch)
            if not (isinstance(inp.shape[0], int) and inp.shape[0] > 0):
                self.batched.add(inp.name)
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                shape, _NP_TYPES.get(inp.type, np.float32), "cuda", device_id)
            self.io.bind_ortvalue_input(inp.name, value)
            self.inputs[inp.name] = value
        for out in session.get_outputs():
            shape = bound_shape(out.name, list(out.shape), self.batch)
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                shape, _NP_TYPES.get(out.type, np.float32), "cuda", device_id)
            self.io.bind_ortvalue_output(out.name, value)
            self.outputs[out.name] = value
        entries = self.batched - {MONITOR_STATE}
        if len(entries) > 1:
            raise EdgeoodError(f"{spell('cuda_graph')} binds one image input; this detector has "
                               f"{', '.join(sorted(entries))}: export it with one input")

    def _pad(self, a: np.ndarray) -> np.ndarray:
        if len(a) == self.batch:
            return np.ascontiguousarray(a)
        return np.ascontiguousarray(np.concatenate([a, np.repeat(a[-1:], self.batch - len(a), 0)]))

    def run(self, entry: str, x: np.ndarray, names: list[str],
            feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for start in range(0, max(len(x), 1), self.batch):
            chunk = x[start:start + self.batch]
            n = len(chunk)
            self.inputs[entry].update_inplace(self._pad(chunk))
            for name, value in feeds.items():
                if name in self.batched:
                    value = self._pad(value[start:start + n])
                self.inputs[name].update_inplace(np.ascontiguousarray(value))
            self.session.run_with_iobinding(self.io)
            for name in names:
                parts[name].append(self.outputs[name].numpy()[:n])
        return {k: np.concatenate(v) for k, v in parts.items()}
