"""Find the classifier head and re-apply it to a shaped feature vector, reusing the head's own
constants (no copy of W).

Linear heads: the last Gemm, MatMul(+Add), or a 1x1 Conv over a pooled N x D x 1 x 1 feature
(rewritten in place into Flatten + Gemm computing the same logits). A conv (or any map) pooled
straight into the class scores (SqueezeNet style) has no linear head: its ClassifierHead has
linear False, z / weight / bias None, and methods that need W, b, z refuse it in one line.
Softmax / LogSoftmax / Reshape / Flatten / Squeeze / Unsqueeze / Dropout / Identity after the
logits are looked through: the head's logits are the raw N x C scores before them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.errors import EdgeoodError
from edgeood.graph.lookup import missing_tensor_error
from edgeood.graph.ops import constant  # noqa: F401  (also registers graph.gemm / matmul / add / mul / sub)

_SHAPE_OPS = ("Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze")
_PASS_THROUGH = _SHAPE_OPS + ("Softmax", "LogSoftmax")
_POOLS = ("GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "ReduceMean",
          "ReduceMax")
_GLOBAL_POOLS = ("GlobalAveragePool", "GlobalMaxPool")
# elementwise ops that may sit between a final conv and the pool (SqueezeNet: conv10 -> Relu)
_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish",
                "BatchNormalization", "Identity", "Dropout")


@dataclass
class ClassifierHead:
    """logits = z @ weight.T + bias, with weight C x D (a linear head).

    Without a linear head (linear False) z, weight and bias are None, `classes` holds C and
    `feature_map` the 4-D map the head's conv / pool reads. `pattern` describes the head in
    words for messages ("Gemm 'fc'", "1x1 Conv 'conv10' on the 13x13 map before ...").
    """

    z: str | None
    logits: str
    weight: np.ndarray | None
    bias: np.ndarray | None
    kind: str  # "Gemm", "MatMul" or "none"
    constants: list[str] = field(default_factory=list)  # Gemm: B(, C); MatMul: B(, bias)
    attrs: dict = field(default_factory=dict)  # the Gemm's attributes
    pattern: str = ""
    linear: bool = True
    classes: int | None = None
    feature_map: str | None = None

    def __post_init__(self):
        if self.weight is None:
            self.linear = False
        if not self.pattern:
            self.pattern = self.kind if self.linear else "no linear classifier head"

    @property
    def num_classes(self) -> int:
        if self.weight is not None:
            return int(self.weight.shape[0])
        return int(self.classes or 0)

    @property
    def feature_dim(self) -> int | None:
        return int(self.weight.shape[1]) if self.linear and self.weight is not None else None

    def require_linear(self, method: str, alternatives: list[str] | None = None) -> None:
        """Raise a one-line EdgeoodError unless the head is linear (W, b, z exist);
        alternatives: the methods that need no linear head (the caller knows them)."""
        if not self.linear:
            names = list(alternatives or [])
            use = (", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else
                   names[0] if names else "a method that reads only the logits")
            raise EdgeoodError(f"{method} needs a linear classifier head (W, b, z); this model "
                               f"has {self.pattern}; use {use}")


def _producer(t: gs.Tensor):
    return t.inputs[0] if t.inputs else None


def _const(t: gs.Tensor):
    return t.values if isinstance(t, gs.Constant) else None


def _rank(t: gs.Tensor) -> int | None:
    return len(t.shape) if t.shape is not None else None


def _unique(graph: gs.Graph, base: str) -> str:
    names = set(graph.tensors()) | {n.name for n in graph.nodes}
    name, i = base, 1
    while name in names:
        name, i = f"{base}_{i}", i + 1
    return name


def _bias_vector(values, classes: int, where: str, fix: str) -> np.ndarray:
    b = np.asarray(values, np.float32).reshape(-1)
    if b.size not in (1, classes):
        raise EdgeoodError(f"{where} has a bias of {b.size} values for {classes} classes; {fix}")
    return np.array(np.broadcast_to(b, (classes,)), np.float32)


def _batch(graph: gs.Graph, t: gs.Tensor):
    if t.shape and t.shape[0] not in (None, 0, -1, ""):
        return t.shape[0]
    from edgeood.graph.model import batch_dim
    return batch_dim(graph)


def _name(node: gs.Node) -> str:
    return node.name or node.outputs[0].name


def find_head(graph: gs.Graph, logits_name: str | None = None) -> ClassifierHead:
    """Walk back from the logits (the first graph output unless named) through Softmax,
    LogSoftmax and shape-only ops to the node that computes the class scores.

    A 1x1 Conv over a pooled feature is rewritten in the graph into Flatten + Gemm (the conv's
    output tensor is kept, now an Unsqueeze of the Gemm), so the head is an ordinary Gemm.
    """
    tensors = graph.tensors()
    if logits_name is not None:
        if logits_name not in tensors:
            raise missing_tensor_error(graph, logits_name, "logits")
        start = tensors[logits_name]
    else:
        start = graph.outputs[0]
    chain: list[gs.Node] = []  # from the head outwards, filled backwards
    out = start
    node = _producer(out)
    while node is not None and node.op in _PASS_THROUGH and node.inputs \
            and isinstance(node.inputs[0], gs.Variable):
        chain.insert(0, node)
        out = node.inputs[0]
        node = _producer(out)
    where = f"the logits tensor '{start.name}'"
    fix = ("edgeood needs a final Gemm or MatMul(+Add) with constant weights (or a 1x1 Conv "
           "over a pooled feature, or a conv pooled into the class scores); name the logits "
           "tensor with --logits or in the recipe's [taps]")
    if node is None:
        raise EdgeoodError(f"{where} is not computed by any node; {fix}")

    if node.op == "Gemm":
        return _gemm_head(node, out, where, fix)
    if node.op in ("Add", "MatMul"):
        return _matmul_head(node, out, where, fix)
    if node.op == "Conv":
        if _pooled_1x1(node):
            return _conv_as_gemm(graph, node, where, fix)
        raise EdgeoodError(f"{where} is computed by a Conv '{_name(node)}' over a spatial map "
                           f"with no pooling after it; {fix}")
    if node.op in _POOLS:
        return _pooled_head(graph, node, out, chain, where, fix)
    raise EdgeoodError(f"{where} is computed by {node.op} node '{_name(node)}'; {fix}")


def _gemm_head(node: gs.Node, out: gs.Tensor, where: str, fix: str) -> ClassifierHead:
    a, b = node.inputs[0], node.inputs[1]
    bv = _const(b)
    if bv is None or node.attrs.get("transA", 0) or bv.ndim != 2:
        raise EdgeoodError(f"{where} comes from Gemm '{_name(node)}' without constant "
                           f"weights; {fix}")
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    weight = alpha * (bv if node.attrs.get("transB", 0) else bv.T)
    bias = np.zeros(weight.shape[0], np.float32)
    if len(node.inputs) > 2 and node.inputs[2].name:
        c = _const(node.inputs[2])
        if c is None:
            raise EdgeoodError(f"{where} comes from Gemm '{_name(node)}' whose bias is not "
                               f"constant; {fix}")
        bias = beta * _bias_vector(c, weight.shape[0], where, fix)
    return ClassifierHead(a.name, out.name, weight.astype(np.float32),
                          np.asarray(bias, np.float32), "Gemm",
                          [t.name for t in node.inputs[1:] if t.name], dict(node.attrs),
                          pattern=f"Gemm '{_name(node)}'")


def _matmul_head(node: gs.Node, out: gs.Tensor, where: str, fix: str) -> ClassifierHead:
    bias = None
    bias_name = []
    if node.op == "Add":
        c0, c1 = _const(node.inputs[0]), _const(node.inputs[1])
        var, bias = (node.inputs[1], c0) if c0 is not None else (node.inputs[0], c1)
        bias_name = [node.inputs[0].name if c0 is not None else node.inputs[1].name]
        node = _producer(var)
        if bias is None or node is None:
            raise EdgeoodError(f"{where} comes from an Add that is not a bias; {fix}")
        if node.op == "Gemm" and (len(node.inputs) < 3 or not node.inputs[2].name):
            return _gemm_plus_bias(node, var, out, bias, bias_name[0], where, fix)
    if node.op != "MatMul" or _const(node.inputs[1]) is None:
        raise EdgeoodError(f"{where} is computed by {node.op} node '{_name(node)}'; {fix}")
    w = _const(node.inputs[1])
    if w.ndim != 2:
        raise EdgeoodError(f"{where} comes from a MatMul with a {w.ndim}-D weight; {fix}")
    weight = w.T.astype(np.float32)
    bias = np.zeros(weight.shape[0], np.float32) if bias is None else \
        _bias_vector(bias, weight.shape[0], where, fix)
    return ClassifierHead(node.inputs[0].name, out.name, weight, bias, "MatMul",
                          [node.inputs[1].name] + bias_name,
                          pattern=f"MatMul '{_name(node)}'" + ("+Add" if bias_name else ""))


def _gemm_plus_bias(node: gs.Node, var: gs.Tensor, out: gs.Tensor, bias, bias_name: str,
                    where: str, fix: str) -> ClassifierHead:
    """Gemm(z, W) (no C) then Add(b): the Gemm head with C = b (beta 1)."""
    head = _gemm_head(node, var, where, fix)
    head.bias = _bias_vector(bias, head.num_classes, where, fix)
    head.logits = out.name
    head.constants = [head.constants[0], bias_name]
    head.attrs = {k: v for k, v in head.attrs.items() if k != "beta"}
    head.pattern += "+Add"
    return head


def _pooled_1x1(conv: gs.Node) -> bool:
    """A 1x1, ungrouped, unpadded Conv with constant weights over an N x D x 1 x 1 feature."""
    w = _const(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if w is None or w.ndim != 4 or tuple(w.shape[2:]) != (1, 1):
        return False
    if int(conv.attrs.get("group", 1)) != 1 or any(conv.attrs.get("pads", [0]) or [0]):
        return False
    if len(conv.inputs) > 2 and conv.inputs[2].name and _const(conv.inputs[2]) is None:
        return False
    f = conv.inputs[0]
    if f.shape is not None and len(f.shape) == 4 and list(f.shape[2:]) == [1, 1]:
        return True
    src = _producer(f)
    if src is None:
        return False
    return src.op in _GLOBAL_POOLS or (src.op in ("ReduceMean", "ReduceMax")
                                       and src.attrs.get("keepdims", 1)
                                       and _reduce_axes(src) == {2, 3})


def _reduce_axes(node: gs.Node) -> set[int]:
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and _const(node.inputs[1]) is not None:
        axes = _const(node.inputs[1]).tolist()
    return {int(a) % 4 for a in (axes or [])}


def _conv_as_gemm(graph: gs.Graph, conv: gs.Node, where: str, fix: str) -> ClassifierHead:
    """Rewrite y = Conv1x1(f) (f: N x D x 1 x 1) as y = Unsqueeze(Gemm(Flatten(f), W, b))."""
    f, w = conv.inputs[0], _const(conv.inputs[1])
    c, d = int(w.shape[0]), int(w.shape[1])
    n = _batch(graph, f)
    name = _name(conv)
    flat = gs.Variable(_unique(graph, f"{f.name}_flat"), np.float32, [n, d])
    graph.nodes.append(gs.Node("Flatten", _unique(graph, f"{name}/Flatten"), {"axis": 1},
                               [f], [flat]))
    weight = np.ascontiguousarray(w.reshape(c, d).astype(np.float32))
    w2 = gs.Constant(_unique(graph, f"{conv.inputs[1].name}_2d"), weight)
    inputs = [flat, w2]
    bias = np.zeros(c, np.float32)
    if len(conv.inputs) > 2 and conv.inputs[2].name:
        bias = _bias_vector(_const(conv.inputs[2]), c, where, fix)
        inputs.append(conv.inputs[2])
    logits = gs.Variable(_unique(graph, f"{name}_logits"), np.float32, [n, c])
    graph.nodes.append(gs.Node("Gemm", _unique(graph, f"{name}/Gemm"), {"transB": 1},
                               inputs, [logits]))
    y = conv.outputs[0]
    conv.inputs.clear()
    conv.outputs.clear()
    _unsqueeze_hw(graph, logits, y, name)
    graph.cleanup().toposort()
    return ClassifierHead(flat.name, logits.name, weight, bias, "Gemm",
                          [t.name for t in inputs[1:]], {"transB": 1},
                          pattern=f"1x1 Conv '{name}' over a pooled feature")


def _unsqueeze_hw(graph: gs.Graph, x: gs.Variable, y: gs.Variable, base: str) -> None:
    """y = x (N x C) unsqueezed to N x C x 1 x 1."""
    if graph.opset >= 13:
        axes = gs.Constant(_unique(graph, f"{base}_unsqueeze_axes"), np.array([2, 3], np.int64))
        graph.nodes.append(gs.Node("Unsqueeze", _unique(graph, f"{base}/Unsqueeze"), {},
                                   [x, axes], [y]))
    else:
        graph.nodes.append(gs.Node("Unsqueeze", _unique(graph, f"{base}/Unsqueeze"),
                                   {"axes": [2, 3]}, [x], [y]))


def _pooled_head(graph: gs.Graph, pool: gs.Node, out: gs.Variable, chain: list[gs.Node],
                 where: str, fix: str) -> ClassifierHead:
    """Class scores pooled from a map (SqueezeNet: conv10 -> Relu -> GlobalAveragePool)."""
    src = pool.inputs[0]
    shape = out.shape
    pooled = (shape is not None and len(shape) == 2) or (
        shape is not None and len(shape) == 4 and list(shape[2:]) == [1, 1])
    if not pooled and not (shape is None and pool.op in _GLOBAL_POOLS):
        raise EdgeoodError(f"{where} is computed by {pool.op} '{_name(pool)}' whose output "
                           f"{shape} is not one score per class; {fix}")
    node = _producer(src)
    while node is not None and node.op in _ACTIVATIONS:
        node = _producer(node.inputs[0])
    if node is None or node.op != "Conv":
        what = f"{node.op} '{_name(node)}'" if node is not None else f"the input '{src.name}'"
        raise EdgeoodError(f"{where} is computed by {pool.op} '{_name(pool)}' over {what}, "
                           f"not over a conv; {fix}")
    fmap = node.inputs[0]
    w = _const(node.inputs[1]) if len(node.inputs) > 1 else None
    k = "x".join(str(int(v)) for v in w.shape[2:]) if w is not None else "?"
    spatial = fmap.shape[2:] if fmap.shape is not None and len(fmap.shape) == 4 else None
    size = f"the {'x'.join(str(v) for v in spatial)} map" \
        if spatial and all(isinstance(v, int) for v in spatial) else "the feature map"
    style = " (SqueezeNet style)" if pool.op in ("GlobalAveragePool", "ReduceMean",
                                                 "AveragePool") else ""
    pattern = f"{k} Conv '{_name(node)}' on {size} before {pool.op}{style}: no linear head"
    classes = int(w.shape[0]) if w is not None else None
    logits = _raw_logits(graph, pool, out, chain)
    if logits.shape is not None and len(logits.shape) == 2 and isinstance(logits.shape[1], int):
        classes = int(logits.shape[1])
    if not classes:
        raise EdgeoodError(f"{where}: cannot tell the number of classes of {pattern}; {fix}")
    return ClassifierHead(None, logits.name, None, None, "none", pattern=pattern, linear=False,
                          classes=classes, feature_map=fmap.name)


def _raw_logits(graph: gs.Graph, pool: gs.Node, out: gs.Variable,
                chain: list[gs.Node]) -> gs.Variable:
    """An N x C tensor of the raw scores: the pool output if 2-D, else the first 2-D output of
    the shape-only ops after it (before any Softmax), else (Caffe2: Softmax on the
    N x C x 1 x 1 map) the pool is rewritten into pool -> Flatten -> Unsqueeze, keeping its
    output tensor, so the Flatten's N x C output lies on the graph's own path."""
    if _rank(out) == 2:
        return out
    for node in chain:
        if node.op not in _SHAPE_OPS:
            break
        if _rank(node.outputs[0]) == 2:
            return node.outputs[0]
    n = _batch(graph, out)
    c = out.shape[1] if out.shape is not None and len(out.shape) > 1 else None
    base = _name(pool)
    pooled = gs.Variable(_unique(graph, f"{out.name}_pooled"), out.dtype or np.float32,
                         out.shape)
    pool.outputs[0] = pooled
    flat = gs.Variable(_unique(graph, f"{base}_logits"), np.float32, [n, c])
    graph.nodes.append(gs.Node("Flatten", _unique(graph, f"{base}/Flatten"), {"axis": 1},
                               [pooled], [flat]))
    _unsqueeze_hw(graph, flat, out, base)
    graph.cleanup().toposort()
    return flat


def apply_head(graph: gs.Graph, head: ClassifierHead, z: gs.Tensor) -> gs.Variable:
    """The classifier applied to a new feature tensor z (N x D), with the head's own constants
    and attributes, so the new logits are computed exactly as the original ones."""
    tensors = graph.tensors()
    consts = [tensors[name] for name in head.constants]
    if head.kind == "Gemm":
        return graph.gemm(z, *consts, attrs=head.attrs)
    y = graph.matmul(z, consts[0])
    return graph.add(y, consts[1]) if len(consts) > 1 else y
