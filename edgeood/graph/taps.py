"""Expose intermediate tensors as graph outputs, and find the candidate blocks of the methods
that read feature maps."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.graph.head import ClassifierHead
from edgeood.graph.lookup import missing_tensor_error, resolve

__all__ = ["find_block_candidates", "missing_tensor_error", "resolve", "tapped"]

_FLATTENERS = ("Flatten", "Reshape", "Squeeze", "Identity")
_POOLS = ("GlobalAveragePool", "ReduceMean", "AveragePool", "GlobalMaxPool")


def _spatial(t: gs.Tensor):
    shape = t.shape
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
        return None
    return int(shape[2]) * int(shape[3])


def _through_pad(t: gs.Tensor) -> gs.Tensor:
    while t.inputs and t.inputs[0].op == "Pad":
        t = t.inputs[0].inputs[0]
    return t


def _feature_map_before_pool(graph: gs.Graph, head: ClassifierHead) -> gs.Tensor | None:
    """The 4-D map the head reads: pooled into z for a linear head, the input of the final
    conv / pool for a head without a penultimate vector (SqueezeNet style)."""
    if head.z is None:
        t = graph.tensors().get(head.feature_map or "")
        return t if isinstance(t, gs.Variable) else None
    t = graph.tensors().get(head.z)
    while t is not None and t.inputs and t.inputs[0].op in _FLATTENERS:
        t = t.inputs[0].inputs[0]
    if t is not None and t.inputs and t.inputs[0].op in _POOLS:
        return t.inputs[0].inputs[0]
    return None


def find_block_candidates(graph: gs.Graph, head: ClassifierHead) -> list[str]:
    """Candidate blocks for the methods that read feature maps: outputs of residual Add nodes
    (through a following Relu), the last tensor before each spatial down-sampling (looking
    through Pad), and the final feature map that is pooled into z (or, without a linear head,
    that goes into the head's conv / pool)."""
    found: list[str] = []
    inputs = {t.name for t in graph.inputs}
    for node in graph.nodes:
        outs = [o for o in node.outputs if _spatial(o) is not None]
        if not outs:
            continue
        out = outs[0]
        if node.op in ("Add", "Sum") and len(node.inputs) > 1 and all(
                isinstance(i, gs.Variable) and _spatial(i) is not None for i in node.inputs):
            consumers = out.outputs
            if len(consumers) == 1 and consumers[0].op in ("Relu", "Clip"):
                out = consumers[0].outputs[0]
            found.append(out.name)
            continue
        if node.op == "Pad":
            continue
        for i in node.inputs:
            if not isinstance(i, gs.Variable):
                continue
            src = _through_pad(i)  # "same" padding enlarges the map before a strided conv
            if _spatial(src) is not None and _spatial(out) < _spatial(src) \
                    and src.name not in inputs:
                found.append(src.name)
    last = _feature_map_before_pool(graph, head)
    if last is not None:
        found.append(last.name)
    seen, ordered = set(), []
    for name in found:
        if name not in seen:
            seen.add(name)
            ordered.append(name)
    return ordered


def tapped(graph: gs.Graph, names: Iterable[str]) -> gs.Graph:
    """A copy of the graph whose outputs are exactly the named tensors (for calibration runs)."""
    g = graph.copy()
    tensors = g.tensors()
    outs = []
    for name in dict.fromkeys(names):
        t = tensors.get(name)
        if not isinstance(t, gs.Variable):
            raise missing_tensor_error(g, name)
        if t.dtype is None:
            t.dtype = np.float32
        outs.append(t)
    g.outputs = outs
    g.cleanup().toposort()
    return g
