"""Paths through a graph: the nodes between two tensors, and a clone of them fed by a new input
(the perturbed second forward pass of AdaSCALE). Constants are shared, not copied."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.graph.ops import _prefix


def nodes_between(graph: gs.Graph, x: gs.Tensor, y: gs.Tensor) -> list[gs.Node]:
    """Nodes that depend on x (not through Shape) and that y depends on, in graph order."""
    depends = {x.name}
    forward = []
    for node in graph.nodes:
        if node.op != "Shape" and any(t.name in depends for t in node.inputs):
            forward.append(node)
            depends.update(o.name for o in node.outputs)
    needed = {y.name}
    path = []
    for node in reversed(forward):
        if any(o.name in needed for o in node.outputs):
            path.append(node)
            needed.update(t.name for t in node.inputs if t.name in depends)
    return path[::-1]


def clone_between(graph: gs.Graph, x: gs.Tensor, y: gs.Tensor, x_new: gs.Tensor) -> gs.Variable:
    """y computed again from x_new by copies of the nodes between x and y. Tensors derived from
    Shape(x) are reused: x_new must have x's shape. A float32 tap that is a Cast of a float16
    tensor (edgeood.graph.precision.to_half) starts the copy at that tensor, x_new cast to it."""
    x, x_new = _through_float32_tap(graph, x, y, x_new)
    mapping = {x.name: x_new}
    existing = set(graph.tensors())
    prefix = _prefix(graph)
    for node in nodes_between(graph, x, y):
        outs = []
        for o in node.outputs:
            v = gs.Variable(graph._generate_name(f"{prefix}/{o.name.strip('/')}", existing),
                            dtype=o.dtype, shape=o.shape)
            existing.add(v.name)
            mapping[o.name] = v
            outs.append(v)
        graph.nodes.append(gs.Node(op=node.op, name=f"{prefix}/{node.name}", attrs=dict(node.attrs),
                                   inputs=[mapping.get(t.name, t) for t in node.inputs],
                                   outputs=outs, domain=node.domain))
    return mapping[y.name]


def _through_float32_tap(graph: gs.Graph, x: gs.Tensor, y: gs.Tensor, x_new: gs.Tensor):
    cast = x.inputs[0] if x.inputs else None
    if cast is None or cast.op != "Cast" or nodes_between(graph, x, y):
        return x, x_new
    src = cast.inputs[0]
    if src.dtype is None or np.dtype(src.dtype) != np.float16:
        return x, x_new
    return src, graph.cast(x_new, np.float16)
