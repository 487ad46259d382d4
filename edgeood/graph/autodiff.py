"""Input gradient as graph nodes: d y[n, c*_n] / d x with c*_n = argmax_c y[n, c].

Reverse mode over the graph's own nodes (constants reused, no second copy of the weights), so
it works for any ONNX CNN. Samples are independent in inference graphs, so the gradient of
sum_n y[n, c*_n] is each sample's own gradient and the batch axis stays dynamic.

Each op's rule gets the node and the gradients of its outputs and returns the gradients of its
inputs. An op without a rule is a one-line error naming the op and the node.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from edgeood.errors import EdgeoodError
from edgeood.graph.ops import _layer, constant, scope
from edgeood.graph.subgraph import nodes_between

F32 = np.float32
FLT_LOWEST = np.finfo(np.float32).min
Rule = Callable[["_Backward", gs.Node, list], list]
RULES: dict[str, Rule] = {}


def rule(*ops: str):
    def register(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn
    return register


def _static(shape, what: str, node: gs.Node) -> list[int]:
    if shape is None or not all(isinstance(d, int) for d in shape[1:]):
        raise EdgeoodError(f"the gradient through {node.op} node '{node.name}' needs static "
                           f"{what} shapes (got {shape}); export the model with a fixed image size")
    return list(shape)


class _Backward:
    """Holds the graph and the accumulated gradients while the rules run."""

    def __init__(self, graph: gs.Graph, on_path: set[str] | None = None):
        self.g = graph
        self.on_path = on_path or set()
        self.forward = {id(n) for n in graph.nodes}  # nodes that are not the backward pass's

    def fresh(self, t) -> gs.Node | None:
        """The backward-pass node that made t, when nothing reads t yet (so it may be changed)."""
        if not isinstance(t, gs.Variable) or t.outputs or len(t.inputs) != 1:
            return None
        node = t.inputs[0]
        return None if id(node) in self.forward or len(node.outputs) != 1 else node

    def c(self, values, dtype=F32) -> gs.Constant:
        return constant(self.g, values, dtype=dtype)

    def op(self, op: str, inputs, attrs=None, dtype=F32):
        return _layer(self.g, op, inputs, attrs or {}, dtypes=[dtype])

    def shape_of(self, t: gs.Tensor):
        return self.op("Shape", [t], dtype=np.int64)

    def unbroadcast(self, grad, target: gs.Tensor, out: gs.Tensor):
        """Sum grad over the axes along which `target` was broadcast to `out`'s shape."""
        ts, os_ = target.shape, out.shape
        if ts is None or os_ is None:
            raise EdgeoodError(f"cannot infer the shape of {target.name} for its gradient; "
                               "export the model with a fixed image size")
        lead = len(os_) - len(ts)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(ts)
                                    if d == 1 and os_[lead + i] != 1]
        if not axes:
            return grad
        grad = self.g.reduce("ReduceSum", grad, axes, keepdims=True)
        if lead:
            grad = self.op("Reshape", [grad, self.shape_of(target)])
        return grad


# --- elementwise ------------------------------------------------------------------------------
@rule("Identity")
def _identity(b, node, g):
    return [g[0]]


@rule("Relu")
def _relu(b, node, g):
    """relu'(x) = [x > 0] = [y > 0] exactly (y = max(x, 0)), as a float mask times g (ORT's
    Where is ~10x slower than Cast+Mul, Sign ~2x slower than Greater+Cast). The mask reads the
    OUTPUT: the pre-activation then need not exist, so ONNX Runtime keeps its Conv+Relu fusion."""
    return [b.g.mul(g[0], b.g.cast(b.g.greater(node.outputs[0], F32(0))))]


@rule("LeakyRelu")
def _leaky(b, node, g):
    x, alpha = node.inputs[0], F32(node.attrs.get("alpha", 0.01))
    return [b.g.where(b.g.greater(x, F32(0)), g[0], b.g.mul(g[0], alpha))]


def _clip_bounds(node):
    lo = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1].name else None
    hi = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    if node.attrs.get("min") is not None:
        lo = F32(node.attrs["min"])
    if node.attrs.get("max") is not None:
        hi = F32(node.attrs["max"])
    return lo, hi


@rule("Clip")
def _clip(b, node, g):
    """[lo < x < hi] (strict, as torch's hardtanh backward), as a float mask times g. For
    y = Clip(x, lo, hi) the mask equals [lo < y < hi] exactly (x <= lo gives y = lo, x >= hi
    gives y = hi, else y = x; NaN fails both ways), so it reads the OUTPUT, which keeps ONNX
    Runtime's Conv+Clip fusion (ReLU6): a rule reading x would force the pre-activation to
    exist."""
    x = node.outputs[0]
    lo, hi = _clip_bounds(node)
    mask = None
    if lo is not None:
        mask = b.g.greater(x, lo)
    if hi is not None:
        upper = b.g.less(x, hi)
        mask = upper if mask is None else b.g.and_(mask, upper)
    return [g[0] if mask is None else b.g.mul(g[0], b.g.cast(mask))] + \
        [None] * (len(node.inputs) - 1)


@rule("Sigmoid")
def _sigmoid(b, node, g):
    y = node.outputs[0]
    return [b.g.mul(g[0], b.g.mul(y, b.g.sub(F32(1), y)))]


@rule("HardSigmoid")
def _hardsigmoid(b, node, g):
    x = node.inputs[0]
    alpha, beta = F32(node.attrs.get("alpha", 0.2)), F32(node.attrs.get("beta", 0.5))
    v = b.g.add(b.g.mul(x, alpha), beta)
    inside = b.g.and_(b.g.greater(v, F32(0)), b.g.less(v, F32(1)))
    return [b.g.where(inside, b.g.mul(g[0], alpha), F32(0))]


@rule("HardSwish")
def _hardswish(b, node, g):
    x = node.inputs[0]
    inner = b.g.add(b.g.div(x, F32(3)), F32(0.5))
    d = b.g.where(b.g.less(x, F32(-3)), F32(0), b.g.where(b.g.greater(x, F32(3)), F32(1), inner))
    return [b.g.mul(g[0], d)]


@rule("Add", "Sub")
def _add(b, node, g):
    a, c = node.inputs
    out = node.outputs[0]
    gc = b.g.neg(g[0]) if node.op == "Sub" else g[0]
    return [b.unbroadcast(g[0], a, out), b.unbroadcast(gc, c, out)]


@rule("Mul")
def _mul(b, node, g):
    a, c = node.inputs
    out = node.outputs[0]
    return [b.unbroadcast(b.g.mul(g[0], c), a, out), b.unbroadcast(b.g.mul(g[0], a), c, out)]


@rule("Div")
def _div(b, node, g):
    a, c = node.inputs
    if not isinstance(c, gs.Constant):
        raise EdgeoodError(f"the gradient through Div node '{node.name}' supports a constant "
                           "divisor only")
    return [b.unbroadcast(b.g.div(g[0], c), a, node.outputs[0]), None]


@rule("Sum", "Mean")
def _sum_mean(b, node, g):
    """Variadic Add (Sum) and its average (Mean): g (or g / n) to every input, summed over
    the axes it was broadcast along."""
    out = node.outputs[0]
    gi = g[0] if node.op == "Sum" or len(node.inputs) == 1 else \
        b.g.mul(g[0], F32(1.0 / len(node.inputs)))
    return [b.unbroadcast(gi, t, out) for t in node.inputs]


@rule("Max", "Min")
def _max_min(b, node, g):
    """Variadic element-wise Max / Min. Tie rule: where several arguments attain the max (min),
    the whole gradient goes to the FIRST of them in input order (others get 0), like MaxPool's
    first-max-in-window rule; torch instead splits it evenly between the tied arguments."""
    out = node.outputs[0]
    grads, taken = [], None
    for i, t in enumerate(node.inputs):
        hit = b.g.cast(b.g.equal(t, out))
        first = hit if taken is None else b.g.mul(hit, b.g.sub(F32(1), taken))
        if i < len(node.inputs) - 1:
            taken = first if taken is None else b.g.add(taken, first)
        grads.append(None if isinstance(t, gs.Constant) else
                     b.unbroadcast(b.g.mul(g[0], first), t, out))
    return grads


@rule("Neg")
def _neg(b, node, g):
    return [b.g.neg(g[0])]


@rule("Abs")
def _abs(b, node, g):
    """sign(x) g (0 at x = 0)."""
    return [b.g.mul(g[0], b.g.sign(node.inputs[0]))]


@rule("Sqrt")
def _sqrt(b, node, g):
    return [b.g.div(b.g.mul(g[0], F32(0.5)), node.outputs[0])]


@rule("Exp")
def _exp(b, node, g):
    return [b.g.mul(g[0], node.outputs[0])]


@rule("Log")
def _log(b, node, g):
    return [b.g.div(g[0], node.inputs[0])]


@rule("Tanh")
def _tanh(b, node, g):
    y = node.outputs[0]
    return [b.g.mul(g[0], b.g.sub(F32(1), b.g.mul(y, y)))]


@rule("Erf")
def _erf(b, node, g):
    x = node.inputs[0]
    d = b.g.mul(b.g.exp(b.g.neg(b.g.mul(x, x))), F32(2 / np.sqrt(np.pi)))
    return [b.g.mul(g[0], d)]


@rule("Elu")
def _elu(b, node, g):
    """1 for x > 0, else alpha e^x = y + alpha."""
    x, y = node.inputs[0], node.outputs[0]
    alpha = F32(node.attrs.get("alpha", 1.0))
    return [b.g.where(b.g.greater(x, F32(0)), g[0], b.g.mul(g[0], b.g.add(y, alpha)))]


@rule("Selu")
def _selu(b, node, g):
    """gamma for x > 0, else gamma alpha e^x = y + gamma alpha."""
    x, y = node.inputs[0], node.outputs[0]
    alpha = float(node.attrs.get("alpha", 1.67326319217681884765625))
    gamma = float(node.attrs.get("gamma", 1.05070102214813232421875))
    return [b.g.where(b.g.greater(x, F32(0)), b.g.mul(g[0], F32(gamma)),
                      b.g.mul(g[0], b.g.add(y, F32(gamma * alpha))))]


@rule("Softplus")
def _softplus(b, node, g):
    return [b.g.mul(g[0], b.op("Sigmoid", [node.inputs[0]]))]


@rule("Mish")
def _mish(b, node, g):
    """mish(x) = x tanh(softplus(x)): tanh(sp) + x (1 - tanh(sp)^2) sigmoid(x)."""
    x = node.inputs[0]
    t = b.op("Tanh", [b.op("Softplus", [x])])
    d = b.g.add(t, b.g.mul(b.g.mul(x, b.g.sub(F32(1), b.g.mul(t, t))), b.op("Sigmoid", [x])))
    return [b.g.mul(g[0], d)]


@rule("PRelu")
def _prelu(b, node, g):
    """g where x > 0, else slope g (the slope is broadcast to x, e.g. per channel [C, 1, 1])."""
    x, slope = node.inputs
    return [b.g.where(b.g.greater(x, F32(0)), g[0], b.g.mul(g[0], slope)),
            _no_grad(b, node, slope, "slope")]


@rule("Dropout")
def _dropout(b, node, g):
    """Inference Dropout is the identity (the optional mask output carries no gradient; ratio
    is unused); a constant training_mode = True, or a computed one, has no rule."""
    if len(node.inputs) > 2 and node.inputs[2].name:
        mode = node.inputs[2]
        if not isinstance(mode, gs.Constant) or bool(np.asarray(mode.values).ravel()[0]):
            raise EdgeoodError(f"Dropout node '{node.name}' runs in training mode; re-export the "
                               "model in eval mode")
    return [g[0]] + [None] * (len(node.inputs) - 1)


@rule("Cast")
def _cast(b, node, g):
    """Float to float: the gradient is cast back to the input's dtype. Casts to (or from) an
    integer or bool type stop the gradient."""
    x = node.inputs[0]
    src = np.dtype(x.dtype) if x.dtype is not None else np.dtype(F32)
    dst = helper.tensor_dtype_to_np_dtype(int(node.attrs["to"]))
    if src.kind != "f" or dst.kind != "f":
        return [None]
    return [g[0] if src == dst else b.g.cast(g[0], src.type)]


@rule("Softmax", "LogSoftmax")
def _softmax(b, node, g):
    """Softmax (opset >= 13: one axis): y (g - sum(g y, axis)). LogSoftmax: g - e^y sum(g, axis)."""
    y = node.outputs[0]
    rank = len(y.shape) if y.shape is not None else None
    axis = int(node.attrs.get("axis", -1))
    if rank is None:
        raise EdgeoodError(f"cannot infer the rank of {node.op} node '{node.name}' for its "
                           "gradient")
    axis %= rank
    if axis == 0:
        raise EdgeoodError(f"{node.op} node '{node.name}' normalises over the batch axis; no rule")
    if node.op == "Softmax":
        s = b.g.reduce("ReduceSum", b.g.mul(g[0], y), [axis], keepdims=True)
        return [b.g.mul(y, b.g.sub(g[0], s))]
    s = b.g.reduce("ReduceSum", g[0], [axis], keepdims=True)
    return [b.g.sub(g[0], b.g.mul(b.g.exp(y), s))]


@rule("LRN")
def _lrn(b, node, g):
    """y = x d^-beta, d = bias + alpha/size S, S_c = sum_{c' in win(c)} x_c'^2 (ONNX window
    [c - floor((size-1)/2), c + ceil((size-1)/2)]). With u = g d^-beta and t = u x / d:
    dx = u - (2 alpha beta / size) x sum_{c: k in win(c)} t_c (the cross-channel term). The
    window sums are 1x1 Convs with a constant C x C band matrix (and its transpose)."""
    x = node.inputs[0]
    xs = _static(x.shape, "input", node)
    channels, size = xs[1], int(node.attrs["size"])
    alpha, beta = float(node.attrs.get("alpha", 1e-4)), float(node.attrs.get("beta", 0.75))
    bias = float(node.attrs.get("bias", 1.0))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    band = np.zeros([channels, channels], F32)
    for c in range(channels):
        band[c, max(0, c - lo):min(channels, c + hi + 1)] = 1.0
    kernel = [1] * (len(xs) - 2)
    fwd = b.c(band.reshape([channels, channels] + kernel))
    bwd = b.c(np.ascontiguousarray(band.T).reshape([channels, channels] + kernel))
    sq = b.op("Conv", [b.g.mul(x, x), fwd], {"kernel_shape": kernel})
    d = b.g.add(b.g.mul(sq, F32(alpha / size)), F32(bias))
    u = b.g.mul(g[0], b.g.pow_(d, F32(-beta)))
    t = b.g.div(b.g.mul(u, x), d)
    back = b.op("Conv", [t, bwd], {"kernel_shape": kernel})
    return [b.g.sub(u, b.g.mul(b.g.mul(x, back), F32(2 * alpha * beta / size)))]


def _no_grad(b, node, t, what):
    """None for an input off the x -> y path; an error where it would need a gradient."""
    if isinstance(t, gs.Constant) or not t.name or t.name not in b.on_path:
        return
    raise EdgeoodError(f"the gradient through {node.op} node '{node.name}' needs a constant "
                       f"{what}")


@rule("BatchNormalization")
def _batchnorm(b, node, g):
    x, scale, _, _, var = node.inputs[:5]
    if not all(isinstance(t, gs.Constant) for t in (scale, var)):
        raise EdgeoodError(f"BatchNormalization node '{node.name}' has non-constant statistics")
    eps = node.attrs.get("epsilon", 1e-5)
    k = (scale.values / np.sqrt(var.values.astype(np.float64) + eps)).astype(F32)
    rank = len(x.shape) if x.shape is not None else 4
    return [b.g.mul(g[0], b.c(k.reshape([1, -1] + [1] * (rank - 2))))]


# --- shape ops --------------------------------------------------------------------------------
@rule("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def _reshape(b, node, g):
    x = node.inputs[0]
    return [b.op("Reshape", [g[0], b.shape_of(x)])]


@rule("Transpose")
def _transpose(b, node, g):
    perm = node.attrs.get("perm")
    if perm is None:
        perm = list(range(len(node.inputs[0].shape)))[::-1]
    inverse = list(np.argsort(perm))
    return [b.op("Transpose", [g[0]], {"perm": [int(p) for p in inverse]})]


def _const_ints(t, node, what):
    if t is None or not t.name:
        return None
    if not isinstance(t, gs.Constant):
        raise EdgeoodError(f"the gradient through {node.op} node '{node.name}' needs constant "
                           f"{what}")
    return [int(v) for v in np.asarray(t.values).ravel()]


@rule("Pad")
def _pad(b, node, g):
    if node.attrs.get("mode", "constant") != "constant":
        raise EdgeoodError(f"Pad node '{node.name}' uses mode {node.attrs['mode']}; only constant "
                           "padding has a gradient rule")
    pads = _const_ints(node.inputs[1], node, "pads") if len(node.inputs) > 1 else node.attrs["pads"]
    rank = len(pads) // 2
    axes = _const_ints(node.inputs[3], node, "axes") if len(node.inputs) > 3 else list(range(rank))
    if any(p < 0 for p in pads):
        raise EdgeoodError(f"Pad node '{node.name}' crops (negative pads); no gradient rule")
    starts, ends, ax = [], [], []
    for i, a in enumerate(axes):
        begin, end = pads[i], pads[i + rank]
        if begin or end:
            starts.append(begin)
            ends.append(-end if end else np.iinfo(np.int64).max)
            ax.append(a)
    if not ax:
        return [g[0], None, None, None][:len(node.inputs)]
    rank_x = len(node.inputs[0].shape) if node.inputs[0].shape is not None else None
    crop = {a % rank_x: (pads[i], pads[i + rank]) for i, a in enumerate(axes)} if rank_x else {}
    merged = _crop_into_producer(b, g[0], crop, rank_x)
    if merged is not None:
        return [merged] + [None] * (len(node.inputs) - 1)
    sl = b.op("Slice", [g[0], b.c(starts, np.int64), b.c(ends, np.int64), b.c(ax, np.int64)])
    return [sl] + [None] * (len(node.inputs) - 1)


def _crop_into_producer(b, t, crop: dict, rank):
    """The gradient of a zero Pad (a crop of t) folded into the backward Conv / ConvTranspose
    that made t, by taking the crop off its pads (Conv: fewer pads; ConvTranspose: more pads
    crop its output): no Slice, and no layout change around one. None where it does not fit
    (crop on non-spatial axes, a Conv padded less than the crop, or t read elsewhere)."""
    node = b.fresh(t)
    if node is None or node.op not in ("Conv", "ConvTranspose") or rank is None:
        return None
    spatial = rank - 2
    if any(a < 2 and (lo or hi) for a, (lo, hi) in crop.items()):
        return None
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    pads = list(node.attrs.get("pads", [0] * (2 * spatial)))
    if len(pads) != 2 * spatial:
        return None
    sign = -1 if node.op == "Conv" else 1
    for a, (lo, hi) in crop.items():
        if a >= 2:
            pads[a - 2] += sign * lo
            pads[a - 2 + spatial] += sign * hi
    if any(v < 0 for v in pads):
        return None
    node.attrs["pads"] = pads
    return t


@rule("Slice")
def _slice(b, node, g):
    x = node.inputs[0]
    shape = _static(x.shape, "input", node)
    starts = _const_ints(node.inputs[1], node, "starts")
    ends = _const_ints(node.inputs[2], node, "ends")
    axes = _const_ints(node.inputs[3], node, "axes") if len(node.inputs) > 3 else None
    steps = _const_ints(node.inputs[4], node, "steps") if len(node.inputs) > 4 else None
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    if any(s != 1 for s in steps):
        raise EdgeoodError(f"Slice node '{node.name}' has steps {steps}; only step 1 has a "
                           "gradient rule")
    pads = [0] * (2 * len(shape))
    for a, s, e in zip(axes, starts, ends):
        a = a % len(shape)
        dim = shape[a]
        if not isinstance(dim, int):
            raise EdgeoodError(f"Slice node '{node.name}' slices the batch axis; no gradient rule")
        s = min(max(s + dim if s < 0 else s, 0), dim)
        e = min(max(e + dim if e < 0 else e, 0), dim)
        pads[a], pads[a + len(shape)] = s, dim - e
    padded = b.op("Pad", [g[0], b.c(pads, np.int64), b.c(F32(0))], {"mode": "constant"})
    return [padded] + [None] * (len(node.inputs) - 1)


@rule("Concat")
def _concat(b, node, g):
    axis = node.attrs["axis"]
    out, start = [], 0
    for t in node.inputs:
        size = t.shape[axis] if t.shape is not None else None
        if not isinstance(size, int):
            raise EdgeoodError(f"Concat node '{node.name}' joins along a dynamic axis; no "
                               "gradient rule")
        out.append(b.op("Slice", [g[0], b.c([start], np.int64), b.c([start + size], np.int64),
                                  b.c([axis], np.int64)]))
        start += size
    return out


@rule("Split")
def _split(b, node, g):
    parts = [gi if gi is not None else b.g.mul(o, F32(0)) for gi, o in zip(g, node.outputs)]
    return [b.op("Concat", parts, {"axis": node.attrs.get("axis", 0)})] + \
        [None] * (len(node.inputs) - 1)


@rule("Expand")
def _expand(b, node, g):
    """Broadcast: the gradient summed back over the broadcast axes."""
    return [b.unbroadcast(g[0], node.inputs[0], node.outputs[0]), None]


@rule("Tile")
def _tile(b, node, g):
    """Sum the tiles back: g reshaped to [r0, d0, r1, d1, ...] and summed over the r axes (a
    dynamic batch axis must not be tiled)."""
    x = node.inputs[0]
    xs = _static(x.shape, "input", node)
    reps = _const_ints(node.inputs[1], node, "repeats")
    if not isinstance(xs[0], int) and reps[0] != 1:
        raise EdgeoodError(f"Tile node '{node.name}' tiles the dynamic batch axis; no rule")
    if all(r == 1 for r in reps):
        return [g[0], None]
    split, axes = [], []
    for i, (d, r) in enumerate(zip(xs, reps)):
        if i == 0 and r == 1:
            split.append(-1 if not isinstance(d, int) else d)
            continue
        axes.append(len(split))
        split += [r, d]
    parts = b.op("Reshape", [g[0], b.c(split, np.int64)])
    summed = b.g.reduce("ReduceSum", parts, axes, keepdims=False)
    return [summed, None]


@rule("Gather")
def _gather(b, node, g):
    """Constant indices (negative ones counted from the end, repeats allowed): scatter-add back,
    as a MatMul of g (gathered axis moved last) with the constant one-hot [K, D] matrix, so a
    repeated index collects the sum of its copies' gradients."""
    x, idx = node.inputs
    if not isinstance(idx, gs.Constant):
        if x.name not in b.on_path:
            return [None, None]
        raise EdgeoodError(f"the gradient through Gather node '{node.name}' needs constant "
                           "indices")
    xs = _static(x.shape, "input", node)
    axis = int(node.attrs.get("axis", 0)) % len(xs)
    if axis == 0:
        raise EdgeoodError(f"Gather node '{node.name}' gathers along the batch axis; no rule")
    flat = np.asarray(idx.values).astype(np.int64).ravel()
    dim = xs[axis]
    onehot = np.zeros([flat.size, dim], F32)
    np.add.at(onehot, (np.arange(flat.size), flat % dim), 1.0)
    shape = [-1] + xs[1:axis] + [flat.size] + xs[axis + 1:]
    grad = b.op("Reshape", [g[0], b.c(shape, np.int64)])
    last = len(xs) - 1
    if axis != last:
        perm = [i for i in range(len(xs)) if i != axis] + [axis]
        grad = b.op("Transpose", [grad], {"perm": perm})
    grad = b.op("MatMul", [grad, b.c(onehot)])
    if axis != last:
        grad = b.op("Transpose", [grad], {"perm": [int(p) for p in np.argsort(perm)]})
    return [grad, None]


def _attr_str(node, key, default):
    v = node.attrs.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


def _resize_source(mode, out_idx, scale, n_in, n_out):
    """Source coordinates of the output positions along one axis (ONNX Resize, computed in
    float32 as ONNX Runtime does)."""
    o, scale = out_idx.astype(F32), F32(scale)
    half = F32(0.5)
    if mode == "half_pixel":
        return (o + half) / scale - half
    if mode == "pytorch_half_pixel":
        return (o + half) / scale - half if n_out > 1 else np.zeros_like(o)
    if mode == "align_corners":
        return o * F32(n_in - 1) / F32(n_out - 1) if n_out > 1 else np.zeros_like(o)
    if mode == "asymmetric":
        return o / scale
    if mode == "tf_half_pixel_for_nn":
        return (o + half) / scale
    if mode == "half_pixel_symmetric":
        adjustment = F32(n_out) / (scale * F32(n_in))
        offset = F32(n_in) / F32(2) * (F32(1) - adjustment)
        return offset + (o + half) / scale - half
    raise ValueError(mode)


def _resize_matrix(node, n_in, n_out, scale):
    """[n_out, n_in] float64: the 1-D Resize (nearest or linear) as a fixed linear map."""
    mode = _attr_str(node, "mode", "nearest")
    ctm = _attr_str(node, "coordinate_transformation_mode", "half_pixel")
    try:
        src = _resize_source(ctm, np.arange(n_out), scale, n_in, n_out).astype(np.float64)
    except ValueError:
        raise EdgeoodError(f"Resize node '{node.name}' uses coordinate_transformation_mode "
                           f"{ctm}; no gradient rule") from None
    m = np.zeros([n_out, n_in])
    rows = np.arange(n_out)
    if mode == "nearest":
        nm = _attr_str(node, "nearest_mode", "round_prefer_floor")
        pick = {"round_prefer_floor": lambda v: np.ceil(v - 0.5),
                "round_prefer_ceil": lambda v: np.floor(v + 0.5),
                "floor": np.floor, "ceil": np.ceil}.get(nm)
        if pick is None:
            raise EdgeoodError(f"Resize node '{node.name}' uses nearest_mode {nm}; no rule")
        m[rows, np.clip(pick(src), 0, n_in - 1).astype(int)] = 1.0
    elif mode == "linear":
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        frac = src - lo
        hi = np.minimum(lo + 1, n_in - 1)
        np.add.at(m, (rows, lo), 1 - frac)
        np.add.at(m, (rows, hi), frac)
    else:
        raise EdgeoodError(f"Resize node '{node.name}' uses mode {mode}; only nearest and linear "
                           "have gradient rules")
    return m


@rule("Resize")
def _resize(b, node, g):
    """nearest / linear Resize of the last two (spatial) axes, exact for these separable maps:
    y = A_h x A_w^T per image and channel with constant interpolation matrices, so
    dx = A_h^T (g A_w), two MatMuls. Scale 1 on N and C only; no antialias, no ROI crop."""
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = _static(x.shape, "input", node), _static(y.shape, "output", node)
    rank = len(xs)
    if _attr_str(node, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        raise EdgeoodError(f"Resize node '{node.name}' uses tf_crop_and_resize; no gradient rule")
    if node.attrs.get("antialias", 0) and any(o < i for o, i in zip(ys[2:], xs[2:])):
        raise EdgeoodError(f"Resize node '{node.name}' downsamples with antialias; no rule")
    if _attr_str(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        raise EdgeoodError(f"Resize node '{node.name}' keeps the aspect ratio; no gradient rule")
    axes = node.attrs.get("axes")
    axes = [int(a) % rank for a in axes] if axes is not None else list(range(rank))
    scales = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        if not isinstance(node.inputs[2], gs.Constant):
            raise EdgeoodError(f"Resize node '{node.name}' needs constant scales")
        given = np.asarray(node.inputs[2].values, np.float32).ravel()
        if given.size:
            scales = [1.0] * rank
            for a, v in zip(axes, given):
                scales[a] = float(v)
    if scales is None:  # sizes: scale = output / input, as ONNX Runtime computes it
        scales = [float(F32(o) / F32(i)) if isinstance(i, int) else 1.0 for o, i in zip(ys, xs)]
    changed = [a for a in range(rank)
               if scales[a] != 1.0 or isinstance(xs[a], int) and xs[a] != ys[a]]
    if rank < 3 or any(a < max(2, rank - 2) for a in changed):
        raise EdgeoodError(f"Resize node '{node.name}' resizes axes {changed} of a {rank}-D "
                           "input; only the last two (spatial) axes have a gradient rule")
    grad = g[0]
    if rank - 1 in changed:
        m = _resize_matrix(node, xs[-1], ys[-1], scales[-1])
        grad = b.op("MatMul", [grad, b.c(m.astype(F32))])                      # [.., OH, W]
    if rank - 2 in changed:
        m = _resize_matrix(node, xs[-2], ys[-2], scales[-2])
        grad = b.op("MatMul", [b.c(np.ascontiguousarray(m.T).astype(F32)), grad])  # [.., H, W]
    return [grad] + [None] * (len(node.inputs) - 1)


# --- linear -----------------------------------------------------------------------------------
def _onehot_index(t):
    """The [N, 1] ArgMax index when t is argmax_onehot's float one-hot (Cast(Equal(ArgMax,
    arange))), else None."""
    cast = t.inputs[0] if isinstance(t, gs.Variable) and len(t.inputs) == 1 else None
    eq = cast.inputs[0].inputs[0] if cast is not None and cast.op == "Cast" and \
        cast.inputs[0].inputs else None
    if eq is None or eq.op != "Equal" or not eq.inputs[0].inputs or \
            eq.inputs[0].inputs[0].op != "ArgMax":
        return None
    return eq.inputs[0]


def _pick_rows(b, w, idx, transposed: bool, alpha: float):
    """one-hot(idx) @ W^T (transposed: W is [classes, D]) or one-hot(idx) @ W^T of W [D,
    classes]: the idx-th row (column) of W, gathered instead of a full Gemm with a one-hot
    (the same values exactly: the other products are 0 * w = 0)."""
    rows = b.op("Gather", [w, idx], {"axis": 0 if transposed else 1})      # [N, 1, D] / [D, N, 1]
    if not transposed:
        rows = b.op("Transpose", [rows], {"perm": [1, 2, 0]})
    rows = b.op("Reshape", [rows, b.c([0, -1], np.int64)])
    return rows if alpha == 1.0 else b.g.mul(rows, F32(alpha))


@rule("Gemm")
def _gemm(b, node, g):
    if node.attrs.get("transA", 0) or not isinstance(node.inputs[1], gs.Constant):
        raise EdgeoodError(f"Gemm node '{node.name}': only x @ W with constant W has a rule")
    alpha = float(node.attrs.get("alpha", 1.0))
    idx = _onehot_index(g[0])
    if idx is not None:
        return [_pick_rows(b, node.inputs[1], idx, bool(node.attrs.get("transB", 0)), alpha)] + \
            [None] * (len(node.inputs) - 1)
    attrs = {"transB": 1 - int(node.attrs.get("transB", 0)), "alpha": alpha}
    return [b.op("Gemm", [g[0], node.inputs[1]], attrs)] + [None] * (len(node.inputs) - 1)


@rule("MatMul")
def _matmul(b, node, g):
    w = node.inputs[1]
    if not isinstance(w, gs.Constant) or w.values.ndim != 2:
        raise EdgeoodError(f"MatMul node '{node.name}': only x @ W with a constant 2-D W has a rule")
    if node.inputs[0].shape is not None and len(node.inputs[0].shape) == 2:
        idx = _onehot_index(g[0])
        if idx is not None:
            return [_pick_rows(b, w, idx, False, 1.0), None]
        return [b.op("Gemm", [g[0], w], {"transB": 1}), None]
    return [b.op("MatMul", [g[0], b.c(np.ascontiguousarray(w.values.T))]), None]


def _conv_geometry(node, x_shape, y_shape):
    """(kernel, strides, dilations, pads) with auto_pad resolved to explicit pads."""
    spatial = len(x_shape) - 2
    k = list(node.attrs.get("kernel_shape") or node.inputs[1].values.shape[2:])
    s = list(node.attrs.get("strides", [1] * spatial))
    d = list(node.attrs.get("dilations", [1] * spatial))
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads_b, pads_e = [], []
        for i in range(spatial):
            total = max((y_shape[2 + i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - x_shape[2 + i], 0)
            small, big = total // 2, total - total // 2
            pads_b.append(small if auto == "SAME_UPPER" else big)
            pads_e.append(big if auto == "SAME_UPPER" else small)
        p = pads_b + pads_e
    elif auto == "VALID":
        p = [0] * (2 * spatial)
    else:
        p = list(node.attrs.get("pads", [0] * (2 * spatial)))
    return k, s, d, p


def _transpose_conv(b, grad, weight, group, k, s, d, p, in_spatial, out_spatial):
    """ConvTranspose that maps a gradient of a conv output back onto the conv input."""
    spatial = len(k)
    out_pad = []
    for i in range(spatial):
        base = (out_spatial[i] - 1) * s[i] - p[i] - p[i + spatial] + (k[i] - 1) * d[i] + 1
        out_pad.append(in_spatial[i] - base)
    if any(o < 0 for o in out_pad):
        raise EdgeoodError("internal: negative output_padding in a conv gradient")
    attrs = {"group": int(group), "kernel_shape": k, "strides": s, "dilations": d, "pads": p}
    if any(out_pad):
        attrs["output_padding"] = out_pad
    return b.op("ConvTranspose", [grad, weight], attrs)


def _flipped(b, w):
    """The kernel flipped along its spatial axes, as a Slice of the shared constant."""
    spatial = w.values.ndim - 2
    big = np.iinfo(np.int64).min
    return b.op("Slice", [w, b.c([-1] * spatial, np.int64), b.c([big] * spatial, np.int64),
                          b.c(list(range(2, 2 + spatial)), np.int64),
                          b.c([-1] * spatial, np.int64)])


def _depthwise_backward(b, grad, w, k, s, d, p, in_spatial, out_spatial):
    """Depthwise conv gradient as a stride-1 depthwise Conv of the gradient with the flipped
    kernel (ONNX Runtime runs it in NCHWc; its grouped ConvTranspose is slow); for stride s
    and a large kernel the gradient is first spread onto the stride grid (_zero_insert). None
    where ConvTranspose is used instead (small strided kernels, pads beyond the kernel's
    reach)."""
    spatial = len(k)
    if any(v != 1 for v in s):
        if np.prod(k) < 4 * np.prod(s):  # 3 x 3 stride 2: ConvTranspose measured faster
            return None
        grad = _zero_insert(b, grad, s, out_spatial)
        out_spatial = [out_spatial[i] * s[i] for i in range(spatial)]
    begin = [(k[i] - 1) * d[i] - p[i] for i in range(spatial)]
    end = [in_spatial[i] - out_spatial[i] - begin[i] + (k[i] - 1) * d[i] for i in range(spatial)]
    if any(v < 0 for v in begin):
        return None
    src = grad
    crop = [max(0, -e) for e in end]
    attrs = {"group": int(w.values.shape[0]), "kernel_shape": k, "dilations": d,
             "pads": begin + [max(0, e) for e in end]}
    out = b.op("Conv", [src, _flipped(b, w)], attrs)
    if any(crop):
        out = b.op("Slice", [out, b.c([0] * spatial, np.int64), b.c(in_spatial, np.int64),
                             b.c(list(range(2, 2 + spatial)), np.int64)])
    return out


def _zero_insert(b, grad, s, out_spatial):
    """g[o] placed at o * s with zeros between (the strided conv's adjoint before its stride-1
    conv): a nearest Resize by s (asymmetric, floor: z[j] = g[j // s]) times a constant 0/1
    stride-grid mask. Measured on EfficientNet-Lite0's strided depthwise convs (ONNX Runtime
    CPU, one thread, batch 1 and 8): 5 x 5 kernels 2x faster than ConvTranspose, 3 x 3 up to
    20% slower (so used where the kernel has >= 4 x stride-cell taps); the phase
    decomposition (s * s phase convs + DepthToSpace or a one-hot ConvTranspose to interleave)
    lost to both: ORT's DepthToSpace / 6-D Transpose move ~4 ns per element."""
    spatial = len(s)
    scales = b.c([1.0, 1.0] + [float(v) for v in s])
    up = b.op("Resize", [grad, gs.Variable.empty(), scales],
              {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
               "nearest_mode": "floor"})
    grid = np.zeros([1, 1] + [out_spatial[i] * s[i] for i in range(spatial)], F32)
    grid[(slice(None), slice(None)) + tuple(slice(None, None, v) for v in s)] = 1.0
    return b.g.mul(up, b.c(grid))


@rule("Conv")
def _conv(b, node, g):
    """dL/dx of a convolution: ConvTranspose with the same weights, or faster equivalents for
    1x1 stride-1 convs (a 1x1 Conv with W's channel axes swapped) and stride-1 depthwise convs
    (a depthwise Conv with the flipped kernel): ORT's grouped ConvTranspose is slow."""
    x, w = node.inputs[0], node.inputs[1]
    if not isinstance(w, gs.Constant):
        raise EdgeoodError(f"Conv node '{node.name}' has non-constant weights; no gradient rule")
    xs = _static(x.shape, "input", node)
    ys = _static(node.outputs[0].shape, "output", node)
    k, s, d, p = _conv_geometry(node, xs, ys)
    group = int(node.attrs.get("group", 1))
    rest = [None] * (len(node.inputs) - 1)
    c_out, c_in_per_group = w.values.shape[:2]
    if group == 1 and all(v == 1 for v in k + s) and not any(p):
        # a 1x1 Conv with W's channel axes swapped (a MatMul over NCHW, which skips ORT's
        # NCHWc reorders, measured the same side by side on Lite0 and adds 64 nodes)
        wt = b.op("Transpose", [w], {"perm": [1, 0] + list(range(2, w.values.ndim))})
        return [b.op("Conv", [g[0], wt], {"kernel_shape": k})] + rest
    if group > 1 and group == c_out and c_in_per_group == 1 and xs[1] == group:
        out = _depthwise_backward(b, g[0], w, k, s, d, p, xs[2:], ys[2:])
        if out is not None:
            return [out] + rest
    gx = _transpose_conv(b, g[0], w, group, k, s, d, p, xs[2:], ys[2:])
    return [gx] + rest


# --- pooling ----------------------------------------------------------------------------------
@rule("GlobalAveragePool")
def _gap(b, node, g):
    xs = _static(node.inputs[0].shape, "input", node)
    ones = np.full([1, 1] + xs[2:], 1.0 / np.prod(xs[2:]), F32)
    return [b.g.mul(g[0], b.c(ones))]


@rule("ReduceMean")
def _reduce_mean(b, node, g):
    x = node.inputs[0]
    xs = _static(x.shape, "input", node)
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        axes = _const_ints(node.inputs[1], node, "axes")
    axes = [a % len(xs) for a in (axes if axes is not None else range(len(xs)))]
    if 0 in axes:
        raise EdgeoodError(f"ReduceMean node '{node.name}' reduces the batch axis; no rule")
    grad = g[0] if node.attrs.get("keepdims", 1) else b.g.unsqueeze(g[0], axes)
    shape = [1] * len(xs)
    for a in axes:
        shape[a] = xs[a]
    count = int(np.prod([xs[a] for a in axes]))
    return [b.g.mul(grad, b.c(np.full(shape, 1.0 / count, F32)))] + [None] * (len(node.inputs) - 1)


def _pool_geometry(node, xs, ys):
    k, s, d, p = _conv_geometry(node, xs, ys)
    spatial = len(k)
    # ceil_mode: windows that run past the padded input count as padding
    extra = [max(0, (ys[2 + i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - (xs[2 + i] + p[i] + p[i + spatial]))
             for i in range(spatial)]
    return k, s, d, p, extra


def _onehot_kernels(channels: int, k: list[int]) -> np.ndarray:
    """[C*K, 1, kh, kw]: input channel c*K + j has a single one at window offset j."""
    kk = int(np.prod(k))
    w = np.zeros([channels * kk, 1] + k, F32)
    for c in range(channels):
        for j in range(kk):
            w[(c * kk + j, 0) + np.unravel_index(j, k)] = 1.0
    return w


def _scatter_windows(b, contrib, channels, k, s, d, p, extra, xs, ys):
    """Sum per-window-offset contributions [N, C*K, OH, OW] back onto the input positions."""
    spatial = len(k)
    padded = [xs[2 + i] + p[i] + p[i + spatial] + extra[i] for i in range(spatial)]
    w = b.c(_onehot_kernels(channels, k))
    full = _transpose_conv(b, contrib, w, channels, k, s, d, [0] * (2 * spatial), padded, ys[2:])
    return _crop(b, full, p, xs)


@rule("MaxPool")
def _maxpool(b, node, g):
    """First-max-in-window mask (ties go to the earliest offset), without the Indices output."""
    if len(node.outputs) > 1 and node.outputs[1].outputs:
        raise EdgeoodError(f"MaxPool node '{node.name}' uses its Indices output, which TensorRT "
                           "rejects; re-export without return_indices")
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = _static(x.shape, "input", node), _static(y.shape, "output", node)
    k, s, d, p, extra = _pool_geometry(node, xs, ys)
    spatial, kk, channels = len(k), int(np.prod(k)), xs[1]
    src = x
    if any(p) or any(extra):
        pads = [0, 0] + p[:spatial] + [0, 0] + [p[spatial + i] + extra[i] for i in range(spatial)]
        src = b.op("Pad", [x, b.c(pads, np.int64), b.c(F32(FLT_LOWEST))], {"mode": "constant"})
    windows = []
    for j in range(kk):  # exact copies of each window's j-th element: strided slices
        off = np.unravel_index(j, k)
        starts = [int(off[i]) * d[i] for i in range(spatial)]
        ends = [starts[i] + (ys[2 + i] - 1) * s[i] + 1 for i in range(spatial)]
        sl = b.op("Slice", [src, b.c(starts, np.int64), b.c(ends, np.int64),
                            b.c(list(range(2, 2 + spatial)), np.int64), b.c(s, np.int64)])
        windows.append(b.g.unsqueeze(sl, [2]))
    win = b.op("Concat", windows, {"axis": 2})                       # N, C, K, OH, OW
    hit = b.g.cast(b.g.equal(win, b.g.unsqueeze(y, [2])))
    first = b.g.mul(hit, b.g.cast(b.g.equal(b.op("CumSum", [hit, b.c(np.int64(2), np.int64)]),
                                            F32(1))))
    contrib = b.g.mul(first, b.g.unsqueeze(g[0], [2]))
    flat = b.op("Reshape", [contrib, b.c([0, channels * kk] + ys[2:], np.int64)])
    return [_scatter_windows(b, flat, channels, k, s, d, p, extra, xs, ys)]


@rule("AveragePool")
def _avgpool(b, node, g):
    """Each output spreads g / (its window's divisor) over its window (ONNX divisor rules:
    count_include_pad counts pads, never the ceil_mode overflow)."""
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = _static(x.shape, "input", node), _static(y.shape, "output", node)
    k, s, d, p, extra = _pool_geometry(node, xs, ys)
    spatial, channels = len(k), xs[1]
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    counts = np.ones([1, 1] + ys[2:], np.float64)
    for i in range(spatial):  # window sizes are separable per axis
        lo = -p[i] if include_pad else 0
        hi = xs[2 + i] + (p[i + spatial] if include_pad else 0)
        pos = (np.arange(ys[2 + i]) * s[i] - p[i])[:, None] + np.arange(k[i])[None, :] * d[i]
        shape = [1] * (2 + spatial)
        shape[2 + i] = ys[2 + i]
        counts = counts * ((pos >= lo) & (pos < hi)).sum(1).reshape(shape)
    scaled = b.g.mul(g[0], b.c((1.0 / counts).astype(F32)))
    padded = [xs[2 + i] + p[i] + p[i + spatial] + extra[i] for i in range(spatial)]
    ones = b.c(np.ones([channels, 1] + k, F32))
    full = _transpose_conv(b, scaled, ones, channels, k, s, d, [0] * (2 * spatial), padded, ys[2:])
    return [_crop(b, full, p, xs)]


def _crop(b, full, p, xs):
    """Cut the begin pads and anything past the input (end pads, ceil_mode overflow)."""
    spatial = len(xs) - 2
    starts = p[:spatial]
    ends = [starts[i] + xs[2 + i] for i in range(spatial)]
    return b.op("Slice", [full, b.c(starts, np.int64), b.c(ends, np.int64),
                          b.c(list(range(2, 2 + spatial)), np.int64)])


# --- the builder ------------------------------------------------------------------------------
def argmax_onehot(graph: gs.Graph, y: gs.Tensor, num_classes: int) -> gs.Variable:
    """float32 one-hot of argmax over axis 1 (first maximum on ties)."""
    b = _Backward(graph)
    idx = b.op("ArgMax", [y], {"axis": 1, "keepdims": 1, "select_last_index": 0}, dtype=np.int64)
    classes = b.c(np.arange(num_classes, dtype=np.int64).reshape(1, -1), np.int64)
    return graph.cast(graph.equal(idx, classes))


def input_gradient(graph: gs.Graph, x: gs.Tensor, y: gs.Tensor, num_classes: int,
                   name: str = "grad") -> gs.Variable:
    """Append d y[n, argmax y[n]] / d x to the graph and return it (same shape as x)."""
    with scope(graph, name):
        grads: dict[str, list] = {y.name: [argmax_onehot(graph, y, num_classes)]}
        path = nodes_between(graph, x, y)
        on_path = {o.name for n in path for o in n.outputs} | {x.name}
        b = _Backward(graph, on_path)
        for node in reversed(path):
            outs = [_sum(b, grads.pop(o.name, [])) for o in node.outputs]
            if all(o is None for o in outs):
                continue
            fn = RULES.get(node.op)
            if fn is None:
                raise EdgeoodError(f"no input-gradient rule for {node.op} (node '{node.name}'); "
                                   f"supported ops: {', '.join(sorted(RULES))}")
            for t, gt in zip(node.inputs, fn(b, node, outs)):
                if gt is not None and t.name in on_path:
                    grads.setdefault(t.name, []).append(gt)
        result = _sum(b, grads.get(x.name, []))
        if result is None:
            raise EdgeoodError(f"the output {y.name} does not depend on the input {x.name}")
        return result


def _sum(b: _Backward, parts: list):
    if not parts:
        return None
    total = parts[0]
    for p in parts[1:]:
        total = b.g.add(total, p)
    return total
