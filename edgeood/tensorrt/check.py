"""Check an exported graph against the TensorRT ONNX parser's documented limits, so problems
show up here rather than on the Jetson: opset range, TopK with K < 3840 and sorted output,
constant reduction axes, no Sort/Unique/NonZero/String ops, MaxPool without its Indices output;
per target also ScatterElements with a reduction (TensorRT 10's plugin, ignored by 8.6)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

OPSET_RANGE = (9, 20)
TOPK_MAX = 3839
UNSUPPORTED = {"Sort", "Unique", "NonZero", "StringNormalizer", "RegexFullMatch",
               "StringConcat", "StringSplit", "TfIdfVectorizer"}
REDUCTIONS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}


def small_constants(model: onnx.ModelProto, max_size: int = 16) -> dict[str, np.ndarray]:
    """The values of the constant tensors of at most max_size elements (initializers held in
    the file and Constant nodes): TopK's K and other scalars, without reading the weights."""
    out = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer
           if i.data_location != onnx.TensorProto.EXTERNAL and np.prod(i.dims) <= max_size}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = onnx.numpy_helper.to_array(a.t)
    return out


def check_model(model: onnx.ModelProto) -> list[str]:
    """Problems found (empty when the graph is within the limits)."""
    problems = []
    opset = max((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), default=0)
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(f"opset {opset} is outside TensorRT's range {OPSET_RANGE}")
    consts = {i.name for i in model.graph.initializer} | \
        {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    values = small_constants(model)
    for node in model.graph.node:
        where = f"{node.op_type} node '{node.name}'"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in UNSUPPORTED:
            problems.append(f"{where}: {node.op_type} is not supported by TensorRT")
        if node.op_type == "TopK":
            k = values.get(node.input[1])
            if k is None:
                problems.append(f"{where}: K is not a constant")
            elif int(np.asarray(k).ravel()[0]) > TOPK_MAX:
                problems.append(f"{where}: K = {int(np.asarray(k).ravel()[0])} exceeds {TOPK_MAX}")
            if attrs.get("sorted", 1) != 1:
                problems.append(f"{where}: TensorRT needs sorted=1")
        if node.op_type in REDUCTIONS and len(node.input) > 1 and node.input[1] \
                and node.input[1] not in consts:
            problems.append(f"{where}: reduction axes are not a constant")
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
            problems.append(f"{where}: uses the Indices output, which TensorRT rejects")
    return problems


# --- per-target checks (edgeood check --target) ----------------------------------------------
@dataclass(frozen=True)
class Target:
    """What one TensorRT version's ONNX parser takes (onnx-tensorrt's operator support tables)."""

    name: str
    opset: tuple[int, int]
    int64: bool            # INT64 tensors kept (else cast to INT32 by the parser: reported)
    qdq_types: tuple[str, ...]  # quantized types Q/DQ may carry
    activation_per_channel: bool  # per-channel Q/DQ on activations (not only on weights)
    strongly_typed: bool   # every type change an explicit Cast, no mixed-type inputs
    unsupported: frozenset = frozenset()
    # ScatterElements with reduction (add / mul / max / min): built with TensorRT's
    # ScatterElements plugin from 10.0 (onnx-tensorrt onnxOpImporters.cpp, scatterPluginHelper);
    # the 8.6 parser (builtin_op_importers.cpp) reads only the axis: a plain scatter
    scatter_reduction: bool = True


TARGETS = {
    "trt8.6": Target("trt8.6", (9, 17), int64=False, qdq_types=("int8",),
                     activation_per_channel=False, strongly_typed=False,
                     unsupported=frozenset({"DequantizeLinear:int32", "QuantizeLinear:int32"}),
                     scatter_reduction=False),
    "trt10": Target("trt10", (9, 20), int64=True, qdq_types=("int8", "float8e4m3fn", "int4"),
                    activation_per_channel=True, strongly_typed=False),
    "trt11": Target("trt11", (9, 20), int64=True, qdq_types=("int8", "float8e4m3fn", "int4"),
                    activation_per_channel=True, strongly_typed=True),
}
TWO_GB = 2_000_000_000
SAME_TYPE_OPS = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Gemm",
                 "MatMul", "Conv", "ConvTranspose", "Concat", "Less", "Greater", "Equal",
                 "LessOrEqual", "GreaterOrEqual", "BatchNormalization", "PRelu"}


def check_target(model: onnx.ModelProto, target: str) -> tuple[list[str], list[str]]:
    """(problems, notes) for one target: the generic limits above, the target's opset range,
    Q/DQ forms (int8 symmetric: zero point absent or 0, constant scales, per-tensor or
    per-channel), INT64 tensors the target casts to INT32 (notes), float16 and strongly-typed
    rules (every type change an explicit Cast, no mixed-type inputs) and the 2 GB protobuf
    limit without external data."""
    if target not in TARGETS:
        from edgeood.errors import EdgeoodError, did_you_mean
        raise EdgeoodError(f"--target {target} must be one of {', '.join(TARGETS)}"
                           f"{did_you_mean(target, list(TARGETS))}")
    t = TARGETS[target]
    problems = [p for p in check_model(model) if not p.startswith("opset ")]
    notes: list[str] = []
    opset = max((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), default=0)
    if not t.opset[0] <= opset <= t.opset[1]:
        problems.append(f"opset {opset} is outside {t.name}'s range {t.opset}")
    types = elem_types(model)
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer
              if i.data_location != onnx.TensorProto.EXTERNAL}
    inits = {i.name for i in model.graph.initializer}
    name = lambda n: f"{n.op_type} node '{n.name}'"
    reducing_scatters = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems += _qdq_problems(node, t, types, values, inits, name(node))
        if node.op_type == "ScatterElements":
            reduction = next((onnx.helper.get_attribute_value(a) for a in node.attribute
                              if a.name == "reduction"), b"none")
            reduction = reduction.decode() if isinstance(reduction, bytes) else str(reduction)
            if reduction != "none":
                reducing_scatters.append(node.name)
                if not t.scatter_reduction:
                    problems.append(f"{name(node)}: reduction={reduction} is ignored by "
                                    f"{t.name}'s parser (a plain scatter: duplicates overwrite "
                                    "instead of accumulating); export at opset < 16, or set the "
                                    "method's histogram to compare-and-count (--param "
                                    "METHOD.histogram=compare)")
        if t.strongly_typed and node.op_type in SAME_TYPE_OPS:
            float_in = {types.get(i) for i in node.input[:3 if node.op_type != "BatchNormalization"
                                                         else 1] if i and types.get(i)}
            float_in = {x for x in float_in if x in _FLOATS}
            if len(float_in) > 1:
                problems.append(f"{name(node)}: mixed input types "
                                f"{sorted(_TYPE_NAMES.get(x, str(x)) for x in float_in)} "
                                f"({t.name} builds strongly typed networks: add a Cast)")
    if not t.int64:
        i64 = sorted(n for n, ty in types.items() if ty == onnx.TensorProto.INT64
                     and n not in inits)
        if i64:
            notes.append(f"{len(i64)} INT64 tensors are cast to INT32 by {t.name}'s parser "
                         f"(values beyond +-2^31 clamp): {', '.join(i64[:12])}"
                         f"{' ...' if len(i64) > 12 else ''}")
        outs = [o.name for o in model.graph.output if types.get(o.name) == onnx.TensorProto.INT64]
        if outs:
            notes.append(f"outputs {', '.join(outs)} are INT32 in a {t.name} engine")
    if reducing_scatters and t.scatter_reduction:
        notes.append(f"{len(reducing_scatters)} ScatterElements node(s) with a reduction "
                     f"({', '.join(reducing_scatters[:4])}{' ...' if len(reducing_scatters) > 4 else ''}"
                     f"): {t.name}'s parser builds them with TensorRT's ScatterElements plugin "
                     "(libnvinfer_plugin; INT64 indices): trtexec loads it, other builders and "
                     "runtimes register it first (initLibNvInferPlugins, in Python "
                     "trt.init_libnvinfer_plugins(logger, ''))")
    if t.strongly_typed:
        problems += _typing_problems(model, types)
    external = any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    if not external and _size(model) > TWO_GB:
        problems.append("the graph is over 2 GB without external data; save it with external "
                        "data (edgeood does above 2 GB)")
    lse = [n.name for n in model.graph.node if n.op_type == "ReduceLogSumExp"]
    if lse:
        notes.append(f"{len(lse)} ReduceLogSumExp nodes ({', '.join(lse[:4])}"
                     f"{' ...' if len(lse) > 4 else ''}): {t.name}'s parser computes them "
                     "unshifted (overflow above 88.7 in float32); edgeood build, "
                     "--print-trtexec (<detector>.trt.onnx), deploy deepstream and "
                     "--device tensorrt hand it a max-shifted copy")
    f16 = sum(1 for ty in types.values() if ty == onnx.TensorProto.FLOAT16)
    if f16:
        notes.append(f"{f16} float16 tensors ({'explicit Casts, strongly typed' if t.strongly_typed else 'build with the FP16 flag or strongly typed'})")
    return problems, notes


_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
           onnx.TensorProto.DOUBLE}
_TYPE_NAMES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
               onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.DOUBLE: "float64",
               onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
               onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64",
               onnx.TensorProto.INT4: "int4", onnx.TensorProto.FLOAT8E4M3FN: "float8e4m3fn"}


def _size(model: onnx.ModelProto) -> int:
    try:
        return model.ByteSize()
    except (ValueError, OverflowError):
        return TWO_GB + 1


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor (shape inference over a copy without the weights' data)."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    for init in light.graph.initializer:  # keep types and shapes, drop the bytes
        if init.data_location != onnx.TensorProto.EXTERNAL and init.ByteSize() > 4096 and \
                init.data_type in _FLOATS | {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}:
            dims, dtype, nm = list(init.dims), init.data_type, init.name
            init.Clear()
            init.name, init.data_type = nm, dtype
            init.dims.extend(dims)
            init.data_location = onnx.TensorProto.EXTERNAL
            init.external_data.add(key="location", value="stripped")
    try:
        light = onnx.shape_inference.infer_shapes(light)
    except Exception:  # noqa: BLE001 - types then come from value_info as saved
        pass
    types = {i.name: i.data_type for i in light.graph.initializer}
    for vi in [*light.graph.input, *light.graph.value_info, *light.graph.output]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for node in light.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _qdq_problems(node, t: Target, types, values, inits, where) -> list[str]:
    problems = []
    q_in = node.input[0] if node.op_type == "DequantizeLinear" else node.output[0]
    qtype = _TYPE_NAMES.get(types.get(q_in), str(types.get(q_in)))
    if qtype not in t.qdq_types:
        problems.append(f"{where}: quantized type {qtype} is not one {t.name} takes "
                        f"({', '.join(t.qdq_types)})")
    scale = node.input[1] if len(node.input) > 1 else ""
    if scale not in inits:
        problems.append(f"{where}: the scale is not a constant")
    elif scale in values and np.any(np.asarray(values[scale]) <= 0):
        problems.append(f"{where}: scales must be positive")
    if len(node.input) > 2 and node.input[2]:
        zp = values.get(node.input[2])
        if zp is None and node.input[2] not in inits:
            problems.append(f"{where}: the zero point is not a constant")
        elif zp is not None and np.any(np.asarray(zp) != 0):
            problems.append(f"{where}: zero point must be 0 (symmetric quantization)")
    if scale in values and np.asarray(values[scale]).size > 1:
        weight = node.op_type == "DequantizeLinear" and node.input[0] in inits
        if not weight and not t.activation_per_channel:
            problems.append(f"{where}: per-channel scales on an activation ({t.name} takes "
                            "them on weights only)")
        if np.asarray(values[scale]).ndim > 1:
            problems.append(f"{where}: block-wise scales are not supported here")
    return problems


def _typing_problems(model: onnx.ModelProto, types) -> list[str]:
    """Strongly typed networks: every tensor's type is known from the graph (no untyped
    outputs), and a DequantizeLinear output / QuantizeLinear input has its scale's type."""
    problems = []
    for o in model.graph.output:
        if types.get(o.name, 0) == 0:
            problems.append(f"output {o.name} has no element type")
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 1:
            a, s = types.get(node.input[0]), types.get(node.input[1])
            if a and s and a != s:
                problems.append(f"QuantizeLinear node '{node.name}': input {_TYPE_NAMES.get(a)} "
                                f"but scale {_TYPE_NAMES.get(s)} (mixed types)")
    return problems
