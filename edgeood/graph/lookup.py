"""Tensor lookup by name with a one-line error that lists the nearest names (used by the head
finder, the taps and the folding code)."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from edgeood.errors import EdgeoodError, nearest


def missing_tensor_error(graph: gs.Graph, name: str, what: str = "tap") -> EdgeoodError:
    """One line naming the missing tensor and the nearest names that exist."""
    names = [t for t, v in graph.tensors().items() if isinstance(v, gs.Variable)]
    return EdgeoodError(f"{what} tensor '{name}' is not in the graph; nearest names: "
                        f"{', '.join(nearest(name, names))}")


def resolve(graph: gs.Graph, name: str, what: str = "tap") -> gs.Variable:
    """The variable tensor called name, or a one-line EdgeoodError with the nearest names."""
    tensor = graph.tensors().get(name)
    if not isinstance(tensor, gs.Variable):
        raise missing_tensor_error(graph, name, what)
    return tensor
