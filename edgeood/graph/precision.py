"""Reduced precision for the backbone: float16 conversion and int8 Q/DQ quantization, with every
tensor a scoring head may tap kept float32 under its original name.

float16 (`to_half`): the float32 initializers of the converted nodes become float16 constants,
the graph input is cast to float16 once, every float tensor the converted nodes produce is
float16 under a new name ('<name>_fp16') and the original name is a Cast back to float32 (unused
Casts vanish at cleanup), so taps (logits, z, blocks) and everything after them read float32.
Casts are explicit everywhere (TensorRT 11's strongly typed networks need that; TensorRT 10's
FP16 flag then has nothing left to choose). ONNX Runtime's CPU provider has float16 kernels for
data movement and Clip / Max / Min only: for the other ops (Conv, Add, Relu, GlobalAveragePool,
Gemm, ...) its InsertCastTransformer runs the op in float32 between Casts, so every op output is
still rounded to float16 (float16 storage with float32 arithmetic inside an op, as a GPU's
float16 kernels accumulating in float32). `ort_cpu_upcast_ops` lists them for the metadata.

int8 (`quantize_int8`): onnxruntime.quantization's static QDQ quantizer on the backbone only:
per-channel symmetric int8 weights, symmetric int8 activations (zero points 0), bias not
quantized (TensorRT takes float bias), Q/DQ only on the inputs of Conv / Add / pools, never on
their outputs (TensorRT fuses Conv + activation; a Q/DQ between a Conv and its ReLU6 would
quantize the unclipped output and, on EfficientNet-Lite0, halve the top-1 agreement with
float32), the head (z -> logits) excluded. A tensor followed by a Q/DQ pair is
renamed '<name>_prequant' and the DequantizeLinear output takes its name: heads read the
quantized value that the next layer reads (TensorRT keeps the fused layer's int8 output).

`float32_copy` clones a path of a reduced-precision graph in float32 (float16 weights upcast,
int8 weights dequantized, activation Q/DQ pairs and float casts dropped): the input gradient
and other float32 work of a method over a float16 or int8 backbone.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgeood.errors import EdgeoodError, spell
from edgeood.graph.subgraph import nodes_between

F16, F32 = np.float16, np.float32
PRECISIONS = ("float32", "float16", "int8")
# activation-range calibration; percentile (99.999) is the default: on EfficientNet-Lite0 its
# largest AUROC drift over 12 methods was 2.4 points against 3.5 for minmax
# (benchmarks/results/precision.json)
INT8_METHODS = ("minmax", "entropy", "percentile")
INT8_RECOMMENDED = 300
# op types converted to float16 (every other op stays float32 behind Casts)
HALF_OPS = {
    "Conv", "ConvTranspose", "BatchNormalization", "Gemm", "MatMul", "Relu", "Clip", "LeakyRelu",
    "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Softplus", "Erf",
    "Add", "Sub", "Mul", "Div", "Sum", "Mean", "Max", "Min", "Neg", "Abs", "Sqrt", "Exp", "Log",
    "Pow", "Reciprocal", "Sign", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "LRN", "Softmax", "LogSoftmax",
    "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Pad",
    "Identity", "Dropout", "Expand", "Tile", "Gather", "Resize", "Upsample", "Greater", "Less",
    "Equal", "GreaterOrEqual", "LessOrEqual", "Where", "Cast", "ConstantOfShape", "ArgMax",
    "ArgMin", "Round", "Floor", "Ceil",
}
KEEP_FLOAT32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}  # roi / scales stay float32
FLOAT_TYPES = (np.float16, np.float32, np.float64)


def _is_float(t: gs.Tensor) -> bool:
    if isinstance(t, gs.Constant):
        return t.values.dtype == np.float32
    return t.dtype is not None and np.dtype(t.dtype) == np.float32


def _unique(graph: gs.Graph, base: str, used: set[str]) -> str:
    name, i = base, 1
    while name in used:
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    return name


def head_nodes(graph: gs.Graph, head) -> list[gs.Node]:
    """The classifier head: the nodes between the penultimate feature z and the logits (empty
    without a linear head). They stay float32 and are never quantized."""
    if head.z is None:
        return []
    t = graph.tensors()
    return nodes_between(graph, t[head.z], t[head.logits])


def backbone_nodes(graph: gs.Graph, head) -> list[gs.Node]:
    skip = {id(n) for n in head_nodes(graph, head)}
    return [n for n in graph.nodes if id(n) not in skip]


def to_half(graph: gs.Graph, nodes: list[gs.Node], keep_names: bool = True,
            keep: tuple[gs.Tensor, ...] = ()) -> dict:
    """Convert `nodes` (in graph order) to float16 in place; see the module docstring.

    keep_names: every float tensor they produce keeps a float32 Cast under its original name
    (the taps); without it only tensors read by float32 nodes, graph outputs and `keep` do.
    Returns {"converted": {op: count}, "kept_float32": {op: count}}."""
    chosen = [n for n in nodes if n.op in HALF_OPS and not _int_only(n)]
    ids = {id(n) for n in chosen}
    kept = Counter(n.op for n in nodes if id(n) not in ids and _has_float(n))
    used = set(graph.tensors()) | {n.name for n in graph.nodes}
    half: dict[str, gs.Tensor] = {}
    consts: dict[str, gs.Constant] = {}
    new_nodes: list[gs.Node] = []

    def half_of(t: gs.Tensor) -> gs.Tensor:
        if t.name in half:
            return half[t.name]
        if isinstance(t, gs.Constant):
            if t.name not in consts:
                consts[t.name] = gs.Constant(_unique(graph, f"{t.name}_fp16", used),
                                             t.values.astype(F16))
            return consts[t.name]
        out = gs.Variable(_unique(graph, f"{t.name}_fp16", used), F16, t.shape)
        new_nodes.append(gs.Node("Cast", _unique(graph, f"{t.name}_to_fp16", used),
                                 {"to": onnx.TensorProto.FLOAT16}, [t], [out]))
        half[t.name] = out
        return out

    for node in chosen:
        skip = KEEP_FLOAT32_INPUTS.get(node.op, set())
        for i, inp in enumerate(list(node.inputs)):
            if inp.name and i not in skip and _is_float(inp):
                node.inputs[i] = half_of(inp)
        if node.op == "Cast" and int(node.attrs.get("to", 0)) == onnx.TensorProto.FLOAT:
            node.attrs["to"] = onnx.TensorProto.FLOAT16
        if node.op == "ConstantOfShape" and isinstance(node.attrs.get("value"), gs.Constant) \
                and node.attrs["value"].values.dtype == np.float32:
            node.attrs["value"] = gs.Constant(node.attrs["value"].name,
                                              node.attrs["value"].values.astype(F16))
        for j, out in enumerate(list(node.outputs)):
            if not _is_float(out):
                continue
            o16 = gs.Variable(_unique(graph, f"{out.name}_fp16", used), F16, out.shape)
            consumers = list(out.outputs)
            node.outputs[j] = o16
            half[out.name] = o16
            needs32 = keep_names or out in graph.outputs or any(out is k for k in keep) or \
                any(id(c) not in ids for c in consumers)
            if needs32:
                new_nodes.append(gs.Node("Cast", _unique(graph, f"{out.name}_to_fp32", used),
                                         {"to": onnx.TensorProto.FLOAT}, [o16], [out]))
            for c in consumers:
                if id(c) in ids:
                    for k, t in enumerate(c.inputs):
                        if t is out and k not in KEEP_FLOAT32_INPUTS.get(c.op, set()):
                            c.inputs[k] = o16
    graph.nodes.extend(new_nodes)
    graph.toposort()
    return {"converted": dict(Counter(n.op for n in chosen)), "kept_float32": dict(kept)}


def _int_only(node: gs.Node) -> bool:
    """Shape arithmetic (no float input or output): nothing to convert."""
    return not _has_float(node)


def _has_float(node: gs.Node) -> bool:
    return any(t.name and _is_float(t) for t in [*node.inputs, *node.outputs])


def ort_cpu_upcast_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Op types of a float16 graph that ONNX Runtime's CPU provider has no float16 kernel for
    and runs in float32 between inserted Casts (its InsertCastTransformer), with counts."""
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        opts.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        opt = onnx.load(opts.optimized_model_filepath)
    before = {n.name for n in model.graph.node}
    to_float = {n.name for n in opt.graph.node if n.op_type == "Cast" and n.name not in before
                and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)}
    fp32: set[str] = set()  # tensors ORT computes in float32 (its Casts merge across ops)
    upcast: Counter = Counter()
    for n in opt.graph.node:
        if n.name in to_float:
            fp32.update(n.output)
        elif n.op_type != "Cast" and any(i in fp32 for i in n.input):
            upcast[n.op_type] += 1
            fp32.update(n.output)
    return dict(upcast)


# --- int8 -------------------------------------------------------------------------------------
QUANTIZED_OPS = ["Conv", "ConvTranspose", "Add", "Mul", "MatMul", "Gemm", "MaxPool",
                 "AveragePool", "GlobalAveragePool", "Concat"]


class _Reader:
    """CalibrationDataReader over an ImageSource: one preprocessed batch per item (fixed-batch
    graphs get chunks of their batch, the last one padded)."""

    def __init__(self, source, pre, batch: int, input_name: str, fixed: int | None):
        self.items = []
        for b in source.batches(pre, batch):
            x = b.x
            if fixed:
                for s in range(0, len(x), fixed):
                    c = x[s:s + fixed]
                    if len(c) < fixed:
                        c = np.concatenate([c, np.repeat(c[-1:], fixed - len(c), 0)])
                    self.items.append(c)
            else:
                self.items.append(x)
        self.name = input_name
        self.start, self.end, self.pos = 0, len(self.items), 0

    def __len__(self):
        return len(self.items)

    def set_range(self, start_index: int, end_index: int):
        self.start, self.end, self.pos = start_index, end_index, start_index

    def get_next(self):
        if self.pos >= min(self.end, len(self.items)):
            return None
        self.pos += 1
        return {self.name: self.items[self.pos - 1]}

    def rewind(self):
        self.set_range(0, len(self.items))


def quantize_int8(graph: gs.Graph, head, source, pre, batch: int, method: str = "percentile",
                  percentile: float = 99.999) -> tuple[gs.Graph, dict]:
    """The backbone quantized with Q/DQ pairs (see the module docstring); returns the new graph
    (outputs: logits) and the facts for the metadata."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    if method not in INT8_METHODS:
        raise EdgeoodError(f"{spell('int8_method')} {method} is not one of "
                           f"{', '.join(INT8_METHODS)}")
    g = graph.copy()
    t = g.tensors()
    logits = t[head.logits]
    logits.dtype = logits.dtype or F32
    g.outputs = [logits]
    excluded = [n.name for n in head_nodes(g, head)]
    for i, n in enumerate(g.nodes):  # the quantizer refers to nodes by name
        if not n.name:
            n.name = f"node_{i}_{n.op}"
    g.cleanup().toposort()
    model = gs.export_onnx(g)
    d = g.inputs[0].shape[0]
    fixed = d if isinstance(d, int) and d > 0 else None
    reader = _Reader(source, pre, batch, g.inputs[0].name, fixed)
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "QDQKeepRemovableActivations": True, "CalibStridedMinMax": 1,
             # Q/DQ only on the inputs of quantized ops: a Q/DQ between a Conv and its ReLU6
             # quantizes the unclipped output (range ~100 on Lite0's stem) and ruins accuracy;
             # TensorRT fuses Conv + activation and quantizes where the next layer reads
             "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
             "CalibTensorRangeSymmetric": True, "CalibPercentile": float(percentile)}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # the quantizer's pre-processing advice
        try:  # the histogram calibrators print a line per batch
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8, calibrate_method=calib,
                                nodes_to_exclude=excluded, op_types_to_quantize=QUANTIZED_OPS,
                                extra_options=extra)
        finally:
            logging.getLogger().setLevel(level)
        q = onnx.load(str(dst))
    out = gs.import_onnx(q)
    renamed = _dq_takes_names(out)
    n_q = sum(1 for n in out.nodes if n.op == "QuantizeLinear")
    n_w = sum(1 for n in out.nodes if n.op == "DequantizeLinear"
              and isinstance(n.inputs[0], gs.Constant))
    quantized = Counter(n.op for n in out.nodes if n.op not in ("QuantizeLinear",
                                                                 "DequantizeLinear")
                        and any(i.inputs and i.inputs[0].op == "DequantizeLinear"
                                for i in n.inputs))
    detail = {"method": method, "calibration_images": len(source),
              "calibration_batches": len(reader), "per_channel_weights": True,
              "symmetric": True, "activation_type": "int8", "weight_type": "int8",
              "bias": "float32 (not quantized)", "activation_qdq": n_q, "weight_dq": n_w,
              "quantized_ops": dict(quantized), "excluded": excluded or ["(no linear head)"],
              "taps_renamed": len(renamed)}
    if method == "percentile":
        detail["percentile"] = float(percentile)
    return out, detail


def _dq_takes_names(graph: gs.Graph) -> list[str]:
    """X -> Q -> DQ: X becomes 'X_prequant', the DQ output becomes X (graph inputs excepted)."""
    used = set(graph.tensors()) | {n.name for n in graph.nodes}
    inputs = {t.name for t in graph.inputs}
    renamed = []
    for node in list(graph.nodes):
        if node.op != "DequantizeLinear":
            continue
        src = node.inputs[0]
        q = src.inputs[0] if src.inputs else None
        if q is None or q.op != "QuantizeLinear":
            continue
        x = q.inputs[0]
        if isinstance(x, gs.Constant) or x.name in inputs or not x.inputs:
            continue
        name = x.name
        x.name = _unique(graph, f"{name}_prequant", used)
        node.outputs[0].name = name
        renamed.append(name)
    return renamed


# --- float32 copies of reduced-precision paths ------------------------------------------------
def is_reduced(graph: gs.Graph, x: gs.Tensor, y: gs.Tensor) -> bool:
    """Whether the path x -> y holds float16 tensors or Q/DQ nodes."""
    for n in nodes_between(graph, x, y):
        if n.op in ("QuantizeLinear", "DequantizeLinear"):
            return True
        if any(t.dtype is not None and np.dtype(t.dtype) == np.float16 for t in n.outputs):
            return True
    return False


def _dequantized(node: gs.Node) -> np.ndarray:
    w = node.inputs[0].values.astype(np.float64)
    scale = np.asarray(node.inputs[1].values, np.float64)
    zp = np.asarray(node.inputs[2].values, np.float64) if len(node.inputs) > 2 and \
        node.inputs[2].name else np.zeros_like(scale)
    if scale.size > 1:
        axis = int(node.attrs.get("axis", 1))
        shape = [1] * w.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((w - zp) * scale).astype(F32)


def float32_copy(graph: gs.Graph, x: gs.Tensor, ys: list[gs.Tensor], prefix: str) -> list:
    """ys computed again from x by float32 copies of the nodes between x and ys: float casts
    and activation Q/DQ pairs become pass-throughs, float16 constants float32 ones, dequantized
    int8 weights float32 constants (made once per weight)."""
    mapping: dict[str, gs.Tensor] = {x.name: x}
    used = set(graph.tensors()) | {n.name for n in graph.nodes}
    consts: dict[str, gs.Constant] = {}
    path: list[gs.Node] = []
    seen = set()
    for y in ys:
        for n in nodes_between(graph, x, y):
            if id(n) not in seen:
                seen.add(id(n))
                path.append(n)
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    path.sort(key=lambda n: order[id(n)])

    def f32(t: gs.Tensor) -> gs.Tensor:
        if t.name in mapping:
            return mapping[t.name]
        if isinstance(t, gs.Constant) and t.values.dtype == np.float16:
            if t.name not in consts:
                consts[t.name] = gs.Constant(_unique(graph, f"{t.name}_fp32", used),
                                             t.values.astype(F32))
            return consts[t.name]
        if isinstance(t, gs.Variable) and t.inputs and t.inputs[0].op == "DequantizeLinear" \
                and isinstance(t.inputs[0].inputs[0], gs.Constant):
            if t.name not in consts:
                consts[t.name] = gs.Constant(_unique(graph, f"{t.name}_fp32", used),
                                             _dequantized(t.inputs[0]))
            return consts[t.name]
        return t

    new = []
    for n in path:
        if n.op in ("QuantizeLinear", "DequantizeLinear") or (
                n.op == "Cast" and n.inputs[0].dtype is not None
                and np.dtype(n.inputs[0].dtype).type in FLOAT_TYPES
                and np.dtype(n.outputs[0].dtype).type in FLOAT_TYPES):
            mapping[n.outputs[0].name] = f32(n.inputs[0])
            continue
        outs = []
        for o in n.outputs:
            dt = F32 if o.dtype is not None and np.dtype(o.dtype) == np.float16 else o.dtype
            v = gs.Variable(_unique(graph, f"{prefix}/{o.name.strip('/')}", used), dt, o.shape)
            mapping[o.name] = v
            outs.append(v)
        attrs = dict(n.attrs)
        if n.op == "ConstantOfShape" and isinstance(attrs.get("value"), gs.Constant) \
                and attrs["value"].values.dtype == np.float16:
            attrs["value"] = gs.Constant(attrs["value"].name, attrs["value"].values.astype(F32))
        new.append(gs.Node(n.op, _unique(graph, f"{prefix}/{n.name}", used), attrs,
                           [f32(t) for t in n.inputs], outs, domain=n.domain))
    graph.nodes.extend(new)
    return [mapping[y.name] for y in ys]


def float_source(t: gs.Tensor) -> gs.Tensor | None:
    """For a float32 tap made by a Cast of a float16 tensor (to_half), that float16 tensor."""
    if t.inputs and t.inputs[0].op == "Cast" and t.inputs[0].inputs:
        src = t.inputs[0].inputs[0]
        if src.dtype is not None and np.dtype(src.dtype) == np.float16:
            return src
    return None


# --- the export stage's entry point -----------------------------------------------------------
def reduce_precision(graph: gs.Graph, head, precision: str, source, pre, batch: int,
                     int8_method: str = "percentile") -> tuple[gs.Graph, str, dict]:
    """(graph, precision, metadata detail) for precision float16 or int8; the caller's graph is
    not changed."""
    from edgeood.progress import warn
    g = graph.copy()
    detail: dict = {"heads": "float32 (everything after the float32 taps: scores, p-values, "
                             "is_ood)",
                    "taps": "float32 Casts of the float16 tensors, under their original names"
                    if precision == "float16" else
                    "the DequantizeLinear output of each quantized tensor, under its name"}
    if precision == "float16":
        info = to_half(g, backbone_nodes(g, head))
        probe = g.copy()
        probe.outputs = [probe.tensors()[head.logits]]
        probe.cleanup().toposort()
        detail.update({
            "backbone": "float16 weights and activations (input cast once; classifier head "
                        "z -> logits float32)",
            "converted_ops": info["converted"], "float32_ops": info["kept_float32"],
            "ort_cpu_float32_ops": ort_cpu_upcast_ops(gs.export_onnx(probe)),
            "ort_cpu_note": "ONNX Runtime's CPU provider has no float16 kernel for these op "
                            "types and runs them in float32 between Casts it inserts: weights "
                            "and every op output stay float16-rounded"})
    elif precision == "int8":
        if source is None:
            raise EdgeoodError(f"{spell('int8')} calibrates the activation ranges on ID images: "
                               f"pass "
                               "--data ID_DIR")
        if len(source) < INT8_RECOMMENDED:
            warn(f"{source.name} holds {len(source)} images; int8 activation ranges from fewer "
                 f"than {INT8_RECOMMENDED} calibration images are unreliable")
        g, q = quantize_int8(g, head, source, pre, batch, int8_method)
        detail.update({"backbone": "int8 Q/DQ (explicit quantization; classifier head "
                                   "z -> logits float32)", "int8": q})
    else:
        raise EdgeoodError(f"precision {precision} must be one of {', '.join(PRECISIONS)}")
    detail["fitted_on"] = (f"statistics, thresholds and p-value references fitted on this "
                           f"{precision} graph (ONNX Runtime CPU)")
    return g, precision, detail
