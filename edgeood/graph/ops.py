"""Small graph functions for building scoring heads with onnx-graphsurgeon.

Each function is registered on ``gs.Graph`` (``graph.relu(x)``, ``graph.logsumexp(x, 1)``) so that
a scoring head reads like its formula. All head arithmetic is float32. Reductions follow the
graph's opset (axes as an attribute before opset 18 except ReduceSum, as a constant input after),
so the result stays valid for TensorRT's ONNX parser (reduction axes are always constants).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import onnx_graphsurgeon as gs

F32 = np.float32


@contextlib.contextmanager
def scope(graph: gs.Graph, name: str):
    """Name every tensor and node created inside the block '<name>/...'."""
    previous = _prefix(graph)
    graph.__dict__["_edgeood_scope"] = name
    try:
        yield
    finally:
        graph.__dict__["_edgeood_scope"] = previous


def _prefix(graph: gs.Graph) -> str:
    # not getattr: gs.Graph.__getattr__ logs an error for unknown names
    return graph.__dict__.get("_edgeood_scope", "edgeood")


def constant(graph: gs.Graph, values, name: str | None = None, dtype=F32) -> gs.Constant:
    """A constant tensor; named '<scope>/<name>' when name is given (so it can be found again)."""
    arr = np.ascontiguousarray(np.asarray(values, dtype=dtype))
    if name is not None:
        full = f"{_prefix(graph)}/{name}"
        if full in graph.tensors():
            raise ValueError(f"constant {full} exists already")
        return gs.Constant(full, arr)
    return gs.Constant(graph._generate_name(f"{_prefix(graph)}/const", set(graph.tensors())), arr)


def _as_tensor(graph: gs.Graph, value) -> gs.Tensor:
    if isinstance(value, gs.Tensor):
        return value
    arr = np.asarray(value)
    dtype = np.int64 if arr.dtype.kind in "iu" else F32
    return constant(graph, arr, dtype=dtype)


def _layer(graph: gs.Graph, op: str, inputs, attrs=None, n_out: int = 1, dtypes=None):
    prefix = _prefix(graph)
    existing = set(graph.tensors())
    outputs = []
    for i in range(n_out):
        dtype = (dtypes or [F32] * n_out)[i]
        outputs.append(gs.Variable(graph._generate_name(f"{prefix}/{op}", existing), dtype=dtype))
        existing.add(outputs[-1].name)
    node_name = graph._generate_name(f"{prefix}/{op}_node", {n.name for n in graph.nodes})
    graph.nodes.append(
        gs.Node(op=op, name=node_name, inputs=[_as_tensor(graph, x) for x in inputs],
                outputs=outputs, attrs=attrs or {})
    )
    return outputs[0] if n_out == 1 else outputs


def _unary(op):
    def fn(self, x):
        return _layer(self, op, [x])
    fn.__name__ = op.lower()
    fn.__doc__ = f"Elementwise {op}."
    return fn


def _binary(op, dtype=F32):
    def fn(self, a, b):
        return _layer(self, op, [a, b], dtypes=[dtype])
    fn.__doc__ = f"Elementwise {op} with broadcasting."
    return fn


for _name, _op in [("relu", "Relu"), ("exp", "Exp"), ("log", "Log"), ("sqrt", "Sqrt"),
                   ("neg", "Neg"), ("reciprocal", "Reciprocal"), ("abs_", "Abs"),
                   ("sign", "Sign"), ("floor", "Floor")]:
    _f = _unary(_op)
    _f.__name__ = _name
    gs.Graph.register()(_f)

for _name, _op, _dt in [("add", "Add", F32), ("sub", "Sub", F32), ("mul", "Mul", F32),
                        ("div", "Div", F32), ("minimum", "Min", F32), ("maximum", "Max", F32),
                        ("matmul", "MatMul", F32), ("pow_", "Pow", F32),
                        ("less", "Less", np.bool_), ("less_equal", "LessOrEqual", np.bool_),
                        ("greater", "Greater", np.bool_),
                        ("greater_equal", "GreaterOrEqual", np.bool_), ("equal", "Equal", np.bool_),
                        ("and_", "And", np.bool_)]:
    _f = _binary(_op, _dt)
    _f.__name__ = _name
    gs.Graph.register()(_f)


@gs.Graph.register()
def cast(self, x, to=F32):
    """Cast to a NumPy dtype (float32 by default)."""
    from onnx import helper
    onnx_type = helper.np_dtype_to_tensor_dtype(np.dtype(to))
    return _layer(self, "Cast", [x], {"to": onnx_type}, dtypes=[np.dtype(to).type])


@gs.Graph.register()
def not_(self, x):
    """Elementwise logical Not of a bool tensor."""
    return _layer(self, "Not", [x], dtypes=[np.bool_])


@gs.Graph.register()
def where(self, cond, a, b):
    """Elementwise select: a where cond else b."""
    return _layer(self, "Where", [cond, a, b])


@gs.Graph.register()
def reduce(self, op: str, x, axes: Sequence[int], keepdims: bool = False):
    """ReduceSum / ReduceMax / ReduceMean / ReduceSumSquare / ReduceMin over constant axes."""
    axes = [int(a) for a in axes]
    takes_input = self.opset >= 18 or (op == "ReduceSum" and self.opset >= 13)
    attrs = {"keepdims": int(keepdims)}
    if takes_input:
        return _layer(self, op, [x, np.asarray(axes, dtype=np.int64)], attrs)
    attrs["axes"] = axes
    return _layer(self, op, [x], attrs)


@gs.Graph.register()
def topk(self, x, k: int, axis: int = -1, largest: bool = True, sorted: bool = True):
    """(values, indices) of the k largest (or smallest) entries along axis, sorted unless
    sorted=False (any order: ONNX Runtime's CPU TopK then skips its sort; TensorRT paths set
    sorted=1, edgeood.tensorrt.rewrite)."""
    return _layer(self, "TopK", [x, np.asarray([k], dtype=np.int64)],
                  {"axis": axis, "largest": int(largest), "sorted": int(sorted)}, n_out=2,
                  dtypes=[F32, np.int64])


@gs.Graph.register()
def squeeze(self, x, axes: Sequence[int]):
    """Remove size-1 axes (axes as a constant input, opset >= 13)."""
    return _layer(self, "Squeeze", [x, np.asarray(axes, dtype=np.int64)])


@gs.Graph.register()
def unsqueeze(self, x, axes: Sequence[int]):
    """Insert size-1 axes (axes as a constant input, opset >= 13)."""
    return _layer(self, "Unsqueeze", [x, np.asarray(axes, dtype=np.int64)])


@gs.Graph.register()
def logsumexp(self, x, axis: int = 1, keepdims: bool = False):
    """log sum exp over one axis as one ReduceLogSumExp node. ONNX Runtime computes it
    max-shifted on the CPU and CUDA; TensorRT's parser does not (log(sum(exp(x)))), so every
    TensorRT path rewrites it first (edgeood.tensorrt.rewrite)."""
    return self.reduce("ReduceLogSumExp", x, [axis], keepdims=keepdims)


@gs.Graph.register()
def identity(self, x):
    """A copy of x under a new name."""
    return _layer(self, "Identity", [x])


# --- shape, indexing and linear-algebra ops used by scoring heads ----------------------------
I64 = np.int64


def _ints(values) -> np.ndarray:
    return np.asarray(values, dtype=I64).reshape(-1)


@gs.Graph.register()
def shape(self, x):
    """The int64 shape of x."""
    return _layer(self, "Shape", [x], dtypes=[I64])


@gs.Graph.register()
def reshape(self, x, shape):
    """Reshape to a constant shape (a sequence, 0 = keep, -1 = infer) or to a shape tensor."""
    target = shape if isinstance(shape, gs.Tensor) else _ints(shape)
    return _layer(self, "Reshape", [x, target], dtypes=[_dtype_of(x)])


@gs.Graph.register()
def slice_(self, x, start: int, end: int, axis: int):
    """x[..., start:end, ...] along one axis (constant bounds)."""
    return _layer(self, "Slice", [x, _ints([start]), _ints([end]), _ints([axis])],
                  dtypes=[_dtype_of(x)])


@gs.Graph.register()
def concat(self, xs, axis: int):
    """Concatenate tensors of one dtype along an axis."""
    return _layer(self, "Concat", list(xs), {"axis": int(axis)}, dtypes=[_dtype_of(xs[0])])


@gs.Graph.register()
def split(self, x, parts: int, axis: int = 0):
    """x cut into `parts` equal pieces along axis (a list of tensors)."""
    attrs = {"axis": int(axis)}
    if self.opset >= 18:
        attrs["num_outputs"] = int(parts)
    out = _layer(self, "Split", [x], attrs, n_out=parts, dtypes=[_dtype_of(x)] * parts)
    return out if parts > 1 else [out]


@gs.Graph.register()
def gather_elements(self, data, indices, axis: int = 1):
    """out[i][j] = data[i][indices[i][j]] along axis."""
    return _layer(self, "GatherElements", [data, indices], {"axis": int(axis)},
                  dtypes=[_dtype_of(data)])


@gs.Graph.register()
def gather(self, data, indices, axis: int = 0):
    """Rows (or slices along axis) of data picked by integer indices."""
    return _layer(self, "Gather", [data, indices], {"axis": int(axis)}, dtypes=[_dtype_of(data)])


@gs.Graph.register()
def scatter_elements(self, data, indices, updates, axis: int = 1, reduction: str | None = None):
    """A copy of data with updates written at indices along axis; with reduction="add",
    duplicates accumulate (opset >= 16; TensorRT 10 builds it with its ScatterElements plugin,
    TensorRT 8.6's parser ignores the reduction)."""
    attrs: dict = {"axis": int(axis)}
    if reduction is not None:
        if self.opset < 16:
            raise ValueError(f"ScatterElements with reduction needs opset >= 16 "
                             f"(graph: {self.opset})")
        attrs["reduction"] = reduction
    return _layer(self, "ScatterElements", [data, indices, updates], attrs,
                  dtypes=[_dtype_of(data)])


@gs.Graph.register()
def fill(self, shape, value: float):
    """A float32 tensor of the given int64 shape tensor, filled with value (ConstantOfShape)."""
    return _layer(self, "ConstantOfShape", [shape],
                  {"value": gs.Constant("value", np.array([value], F32))})


@gs.Graph.register()
def fill_like(self, x, value: float):
    """A float32 tensor of x's shape filled with value."""
    return self.fill(self.shape(x), value)


@gs.Graph.register()
def gemm(self, a, b, c=None, trans_b: bool = False, attrs: dict | None = None, dtype=F32):
    """a @ b (b transposed with trans_b) + c, as one Gemm node (of dtype: float16 operands
    give a float16 result)."""
    attrs = dict(attrs or {})
    if trans_b:
        attrs["transB"] = 1
    return _layer(self, "Gemm", [a, b] + ([c] if c is not None else []), attrs, dtypes=[dtype])


@gs.Graph.register()
def dequantize(self, q, scale, axis: int = 1):
    """float32 (q - 0) * scale, per tensor (scalar scale) or per channel along axis; no zero
    point (symmetric int8, the form TensorRT's explicit quantization takes)."""
    return _layer(self, "DequantizeLinear", [q, scale], {"axis": int(axis)})


@gs.Graph.register()
def tile(self, x, repeats: Sequence[int]):
    """Repeat x along each axis (constant repeats)."""
    return _layer(self, "Tile", [x, _ints(repeats)], dtypes=[_dtype_of(x)])


@gs.Graph.register()
def pad(self, x, pads: Sequence[int], mode: str = "constant"):
    """Pad with ONNX's [begin..., end...] layout (constant pads)."""
    return _layer(self, "Pad", [x, _ints(pads)], {"mode": mode})


@gs.Graph.register()
def conv(self, x, weight, **attrs):
    """Convolution with a constant kernel (kernel_shape, strides, pads ... as attributes)."""
    return _layer(self, "Conv", [x, weight], attrs)


@gs.Graph.register()
def round_(self, x):
    """Round half to even (ONNX Round, NumPy's np.round)."""
    return _layer(self, "Round", [x])


@gs.Graph.register()
def argmax(self, x, axis: int = 1, keepdims: bool = False):
    """int64 index of the (first) largest entry along axis."""
    return _layer(self, "ArgMax", [x], {"axis": int(axis), "keepdims": int(keepdims)},
                  dtypes=[I64])


@gs.Graph.register()
def softmax(self, x, axis: int = 1):
    """Softmax along one axis (opset >= 13 semantics)."""
    return _layer(self, "Softmax", [x], {"axis": int(axis)})


@gs.Graph.register()
def count_above(self, s, reference, keepdims: bool = False):
    """#{ref_j > s_i} per row i: s an N-vector, reference a 1 x R constant (Less + ReduceSum)."""
    below = self.cast(self.less(self.unsqueeze(s, [1]), reference))
    return self.reduce("ReduceSum", below, [1], keepdims=keepdims)


def _dtype_of(t) -> type:
    dtype = getattr(t, "dtype", None)
    return np.dtype(dtype).type if dtype is not None else F32


# --- in-graph preprocessing (camera frames in: edgeood/graph/preprocess.py) ------------------
@gs.Graph.register()
def transpose(self, x, perm: Sequence[int]):
    """Permute the axes of x (e.g. N x H x W x C -> N x C x H x W with perm 0, 3, 1, 2)."""
    return _layer(self, "Transpose", [x], {"perm": [int(p) for p in perm]},
                  dtypes=[_dtype_of(x)])


@gs.Graph.register()
def resize(self, x, sizes, mode: str = "linear",
           coordinate_transformation_mode: str = "half_pixel"):
    """ONNX Resize of x to `sizes` (an int64 tensor with the whole output shape), no roi or
    scales, no antialiasing (TensorRT's resize layer has none)."""
    empty = gs.Variable.empty
    return _layer(self, "Resize", [x, empty(), empty(), sizes],
                  {"mode": mode, "coordinate_transformation_mode": coordinate_transformation_mode},
                  dtypes=[_dtype_of(x)])


# --- selection (AdaSCALE's least-|g| threshold search) ----------------------------------------
@gs.Graph.register()
def cumsum(self, x, axis: int = 1):
    """Inclusive running sum along one axis (a constant axis, as TensorRT's parser needs)."""
    return _layer(self, "CumSum", [x, np.asarray(int(axis), dtype=I64)], dtypes=[_dtype_of(x)])
