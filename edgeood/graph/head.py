"""Find the classifier head (the last Gemm, or MatMul(+Add), with constant weights) and re-apply
it to a shaped feature vector, reusing the head's own constants (no copy of W)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.errors import EdgeoodError

_PASS_THROUGH = ("Identity", "Softmax", "LogSoftmax")


@dataclass
class ClassifierHead:
    """logits = z @ weight.T + bias, with weight C x D."""

    z: str
    logits: str
    weight: np.ndarray
    bias: np.ndarray
    kind: str  # "Gemm" or "MatMul"
    constants: list[str] = field(default_factory=list)  # Gemm: B(, C); MatMul: B(, bias)
    attrs: dict = field(default_factory=dict)  # the Gemm's attributes

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.weight.shape[1])


def _producer(t: gs.Tensor):
    return t.inputs[0] if t.inputs else None


def _const(t: gs.Tensor):
    return t.values if isinstance(t, gs.Constant) else None


def find_head(graph: gs.Graph, logits_name: str | None = None) -> ClassifierHead:
    """Walk back from the logits (the first graph output unless named) through Identity/Softmax to
    the Gemm or MatMul(+Add) that computes them."""
    tensors = graph.tensors()
    if logits_name is not None:
        if logits_name not in tensors:
            from edgeood.graph.taps import missing_tensor_error
            raise missing_tensor_error(graph, logits_name, "logits")
        out = tensors[logits_name]
    else:
        out = graph.outputs[0]
    node = _producer(out)
    while node is not None and node.op in _PASS_THROUGH:
        out = node.inputs[0]
        node = _producer(out)
    where = f"the graph output {graph.outputs[0].name}"
    fix = ("edgeood needs a final Gemm or MatMul(+Add) with constant weights; "
           "name the logits tensor with --logits or in the recipe's [taps]")
    if node is None:
        raise EdgeoodError(f"{where} is not computed by any node; {fix}")

    if node.op == "Gemm":
        a, b = node.inputs[0], node.inputs[1]
        bv = _const(b)
        if bv is None or node.attrs.get("transA", 0):
            raise EdgeoodError(f"{where} comes from a Gemm without constant weights; {fix}")
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        weight = alpha * (bv if node.attrs.get("transB", 0) else bv.T)
        bias = np.zeros(weight.shape[0], np.float32)
        if len(node.inputs) > 2 and _const(node.inputs[2]) is not None:
            bias = beta * np.broadcast_to(_const(node.inputs[2]), (weight.shape[0],))
        return ClassifierHead(a.name, out.name, weight.astype(np.float32),
                              np.asarray(bias, np.float32), "Gemm",
                              [t.name for t in node.inputs[1:]], dict(node.attrs))

    bias = None
    bias_name = []
    if node.op == "Add":
        c0, c1 = _const(node.inputs[0]), _const(node.inputs[1])
        var, bias = (node.inputs[1], c0) if c0 is not None else (node.inputs[0], c1)
        bias_name = [node.inputs[0].name if c0 is not None else node.inputs[1].name]
        node = _producer(var)
        if bias is None or node is None:
            raise EdgeoodError(f"{where} comes from an Add that is not a bias; {fix}")
    if node.op != "MatMul" or _const(node.inputs[1]) is None:
        raise EdgeoodError(f"{where} is computed by {node.op} node '{node.name}'; {fix}")
    w = _const(node.inputs[1])
    if w.ndim != 2:
        raise EdgeoodError(f"{where} comes from a MatMul with a {w.ndim}-D weight; {fix}")
    weight = w.T.astype(np.float32)
    bias = np.zeros(weight.shape[0], np.float32) if bias is None else \
        np.broadcast_to(np.asarray(bias, np.float32).reshape(-1), (weight.shape[0],))
    return ClassifierHead(node.inputs[0].name, out.name, weight, np.array(bias, np.float32),
                          "MatMul", [node.inputs[1].name] + bias_name)


def apply_head(graph: gs.Graph, head: ClassifierHead, z: gs.Tensor) -> gs.Variable:
    """The classifier applied to a new feature tensor z (N x D), with the head's own constants
    and attributes, so the new logits are computed exactly as the original ones."""
    from edgeood.graph.ops import _layer
    tensors = graph.tensors()
    consts = [tensors[name] for name in head.constants]
    if head.kind == "Gemm":
        return _layer(graph, "Gemm", [z, *consts], dict(head.attrs))
    y = _layer(graph, "MatMul", [z, consts[0]])
    return _layer(graph, "Add", [y, consts[1]]) if len(consts) > 1 else y


def rescale_logits(graph: gs.Graph, head: ClassifierHead, logits: gs.Tensor,
                   s: gs.Tensor) -> gs.Variable:
    """W (z * s) + b for a per-sample scalar s (N x 1), as s * (logits - b) + b: the same
    value without a second C x D product."""
    if not np.any(head.bias):
        return graph.mul(logits, s)
    b = graph_bias(graph, head)
    return graph.add(graph.mul(graph.sub(logits, b), s), b)


def graph_bias(graph: gs.Graph, head: ClassifierHead) -> gs.Tensor:
    """The head's bias as a C-vector constant (the graph's own when it already is one)."""
    tensors = graph.tensors()
    if len(head.constants) > 1:
        t = tensors[head.constants[-1]]
        if isinstance(t, gs.Constant) and t.values.shape == (head.num_classes,) and \
                np.array_equal(t.values, head.bias):
            return t
    from edgeood.graph.ops import constant
    return constant(graph, head.bias, "bias")
