"""Load an ONNX classifier and bring it into the one form the rest of edgeood works on:
constants folded, shapes inferred, opset >= 13, a single 4-D float N x C x H x W input with
an int or 'batch' batch dimension."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgeood.errors import EdgeoodError

MIN_OPSET = 13
UPGRADE_OPSET = 17
BATCH = "batch"  # the symbolic batch dimension of every prepared graph


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file, with a clear error for a missing, corrupt or non-ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise EdgeoodError(f"{path}: no such file; pass the path of an .onnx model")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError, onnx raises its own types
        raise EdgeoodError(
            f"{path} is not a readable ONNX file ({type(exc).__name__}); re-export it with "
            "torch.onnx.export or check that the download/copy is complete") from None
    if not model.graph.node:
        raise EdgeoodError(f"{path} holds no ONNX graph nodes; pass an exported ONNX classifier")
    return model


def model_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference is a convenience; a model it cannot handle still works
        return model


def _initializers_not_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without the initializers that IR < 4 files also list as graph inputs (they are
    weights, not inputs), with an IR version that allows that (the converter needs >= 4)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    weights = {t.name for t in m.graph.initializer}
    kept = [i for i in m.graph.input if i.name not in weights]
    if len(kept) != len(m.graph.input):
        del m.graph.input[:]
        m.graph.input.extend(kept)
    m.ir_version = max(int(m.ir_version), 4)
    return m


def _with_fixed_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph inputs have every symbolic or unknown dimension set to 1 and no
    stale shapes (the opset-6 broadcasting adapters of the converter need static shapes)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        for dim in vi.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.Clear()
                dim.dim_value = 1
    del m.graph.value_info[:]
    for vi in m.graph.output:
        vi.type.tensor_type.ClearField("shape")
    return m


def _infer_or_keep(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # the converter then says what it misses
        return model


def fixed_and_inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """_with_fixed_inputs with every shape inferred (some adapters read intermediate shapes)."""
    return _infer_or_keep(_with_fixed_inputs(model))


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    m = fixed_and_inferred(model)
    ranks = {t.name: len(t.dims) for t in m.graph.initializer}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        if vi.type.tensor_type.HasField("shape"):
            ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
    return ranks


_LEGACY_BROADCAST = ("Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater",
                     "Less")


def _legacy_axis_broadcast(model: onnx.ModelProto) -> onnx.ModelProto:
    """Opset < 7 binary ops with broadcast=1 and an axis (Caffe2's bias Add over N x C x H x W
    with a C-vector at axis 1), where B is an initializer: reshape B to trailing 1s so that
    numpy broadcasting means the same, and drop the axis (the converter mishandles it)."""
    if model_opset(model) >= 7:
        return model
    nodes = [n for n in model.graph.node if n.op_type in _LEGACY_BROADCAST and len(n.input) == 2
             and any(a.name == "axis" for a in n.attribute)
             and any(a.name == "broadcast" and a.i for a in n.attribute)]
    if not nodes:
        return model
    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    ranks = _ranks(model)
    for node in nodes:
        b, rank_a = inits.get(node.input[1]), ranks.get(node.input[0])
        if b is None or rank_a is None:
            continue  # left to the converter
        axis = next(a.i for a in node.attribute if a.name == "axis")
        axis = axis + rank_a if axis < 0 else axis
        arr = onnx.numpy_helper.to_array(b)
        ones = rank_a - axis - arr.ndim
        if ones < 0:
            continue
        new = arr.reshape(arr.shape + (1,) * ones)
        if uses.get(b.name, 0) > 1:
            name = f"{b.name}_bcast_{node.name or node.output[0]}"
            model.graph.initializer.append(onnx.numpy_helper.from_array(new, name))
            node.input[1] = name
        else:
            b.CopyFrom(onnx.numpy_helper.from_array(new, b.name))
        kept = [a for a in node.attribute if a.name != "axis"]
        del node.attribute[:]
        node.attribute.extend(kept)
    return model


def _convert(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """onnx's version converter; when an adapter needs static shapes (opset 6 -> 7 Gemm / Add
    broadcast asserts int dims), again on a copy with fixed input dims and inferred shapes,
    with the source's input / output types put back."""
    try:
        return onnx.version_converter.convert_version(model, target)
    except Exception:
        converted = onnx.version_converter.convert_version(fixed_and_inferred(model), target)
        _restore_types(converted, model)
        return converted


def _upgrade(model: onnx.ModelProto) -> onnx.ModelProto:
    """Opsets below 13 to 17 (BatchNormalization spatial / is_test, Dropout is_test, Reshape's
    shape attribute, Softmax's flatten-to-2-D semantics, Gemm / Add broadcast: the converter's
    adapters). Below opset 6 the model goes to 6 first (whose shape inference knows the
    legacy ops), then the axis broadcasts are made numpy broadcasts, then 6 -> 17."""
    opset = model_opset(model)
    if opset >= MIN_OPSET:
        return model
    try:
        if opset < 6:
            model = _convert(model, 6)
        converted = _convert(_legacy_axis_broadcast(model), UPGRADE_OPSET)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise EdgeoodError(
            f"the model uses opset {opset} and could not be upgraded to {UPGRADE_OPSET} "
            f"({reason}); re-export it with opset >= {MIN_OPSET}") from None
    ir = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", UPGRADE_OPSET)])
    converted.ir_version = max(int(converted.ir_version), ir)
    return converted


def _restore_types(converted: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """The source's graph input / output types (symbolic dims) back on a converted copy."""
    types = {vi.name: vi.type for vi in [*source.graph.input, *source.graph.output]}
    for vi in [*converted.graph.input, *converted.graph.output]:
        if vi.name in types:
            vi.type.CopyFrom(types[vi.name])
    del converted.graph.value_info[:]


def _dropout_to_identity(graph: gs.Graph) -> None:
    """Inference Dropout (no training_mode, or a constant false one; mask unused) is Identity."""
    for node in graph.nodes:
        if node.op != "Dropout" or any(o.outputs or o in graph.outputs
                                       for o in node.outputs[1:]):
            continue
        mode = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        if mode is not None and not (isinstance(mode, gs.Constant) and not np.any(mode.values)):
            continue
        node.op, node.attrs = "Identity", {}
        while len(node.inputs) > 1:
            node.inputs.pop()
        while len(node.outputs) > 1:
            node.outputs.pop()


def _data_input(graph: gs.Graph) -> gs.Variable:
    """The single image input (graph inputs that are weights were dropped before)."""
    if len(graph.inputs) != 1:
        names = ", ".join(t.name for t in graph.inputs)
        raise EdgeoodError(f"the model has {len(graph.inputs)} inputs without initializers "
                           f"({names}); edgeood needs a classifier with one image input")
    x = graph.inputs[0]
    if x.shape is None or len(x.shape) != 4 or x.dtype is None or \
            np.dtype(x.dtype).kind != "f":
        raise EdgeoodError(f"the model input {x.name} has shape {x.shape} and type {x.dtype}; "
                           "edgeood needs a float N x C x H x W image input")
    return x


def _dynamic_batch(graph: gs.Graph, x: gs.Variable) -> None:
    """A batch dimension that is not a positive int (a symbol of any name: N, batch_size,
    unk__0; 0, -1 or unset) becomes the symbol 'batch', in every tensor that shares it."""
    d = x.shape[0]
    if isinstance(d, int) and d > 0 or d == BATCH:
        return
    old = d if isinstance(d, str) and d else None
    x.shape = [BATCH, *x.shape[1:]]
    for t in graph.tensors().values():  # value_info of the source file, before inference
        if isinstance(t, gs.Variable) and t is not x and t.shape:
            if old is not None:
                t.shape = [BATCH if v == old else v for v in t.shape]
            elif t.shape[0] in (0, -1):  # the same bad batch: let inference redo it
                t.shape = None


def _nhwc_to_nchw(graph: gs.Graph, x: gs.Variable) -> None:
    """TensorFlow/Keras exports (tf2onnx) take N x H x W x C: put a Transpose in front so that
    the graph takes N x C x H x W under the same input name."""
    _, a, b, c = x.shape
    if not (isinstance(c, int) and c in (1, 3, 4) and isinstance(a, int) and a > 4
            and isinstance(b, int) and b > 4):
        return
    inner = gs.Variable(f"{x.name}_nhwc", x.dtype, list(x.shape))
    for node in list(x.outputs):
        for i, t in enumerate(node.inputs):
            if t is x:
                node.inputs[i] = inner
    graph.outputs = [inner if t is x else t for t in graph.outputs]
    graph.nodes.append(gs.Node("Transpose", f"{x.name}_to_nhwc", {"perm": [0, 2, 3, 1]},
                               [x], [inner]))
    x.shape = [x.shape[0], c, a, b]
    graph.toposort()


def _batch_reshapes_as_constants(graph: gs.Graph) -> int:
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(t), 0)), constants...)), torch's
    x.view(x.size(0), -1), becomes Reshape(x, [0, constants...]) where t and x share their batch
    dimension: the same shape without the Shape / Gather / Unsqueeze / Concat chain, whose
    int64 shape nodes ONNX Runtime's CUDA provider places on the CPU (blocking CUDA graphs).
    Returns how many were rewritten."""
    count = 0
    for node in graph.nodes:
        if node.op != "Reshape" or len(node.inputs) < 2 or not node.inputs[1].inputs:
            continue
        concat = node.inputs[1].inputs[0]
        if concat.op != "Concat" or not concat.inputs:
            continue
        first, rest = concat.inputs[0], concat.inputs[1:]
        if not first.inputs or first.inputs[0].op != "Unsqueeze" or \
                not all(isinstance(t, gs.Constant) for t in rest):
            continue
        gather = first.inputs[0].inputs[0].inputs[0] if first.inputs[0].inputs[0].inputs else None
        if gather is None or gather.op != "Gather" or gather.attrs.get("axis", 0) != 0:
            continue
        index = gather.inputs[1]
        shape_node = gather.inputs[0].inputs[0] if gather.inputs[0].inputs else None
        if not isinstance(index, gs.Constant) or int(np.asarray(index.values).ravel()[0]) != 0 \
                or np.asarray(index.values).size != 1 or shape_node is None or \
                shape_node.op != "Shape" or shape_node.attrs.get("start", 0) != 0:
            continue
        t, x = shape_node.inputs[0], node.inputs[0]
        same = t is x or (t.shape and x.shape and t.shape[0] == x.shape[0]
                          and t.shape[0] not in (None, 0, -1))
        if not same or int(node.attrs.get("allowzero", 0)):
            continue
        tail = np.concatenate([np.asarray(c.values, np.int64).ravel() for c in rest]) \
            if rest else np.zeros(0, np.int64)
        node.inputs[1] = gs.Constant(f"{node.name or 'reshape'}_shape_{count}",
                                     np.concatenate([[0], tail]).astype(np.int64))
        count += 1
    if count:
        graph.cleanup().toposort()
    return count


def prepare(model: onnx.ModelProto) -> gs.Graph:
    """Bring any classifier into one form: initializers are weights (not inputs), opset >= 13
    (opsets below 13 upgraded to 17), constant subgraphs folded (Constant nodes, Transpose /
    Reshape of weights, ConstantOfShape biases become constants), inference Dropout as
    Identity, shapes inferred, one 4-D float N x C x H x W input (an N x H x W x C one gets a
    Transpose in front) whose batch dimension is an int or the symbol 'batch'.

    The caller's ModelProto is not changed."""
    model = _upgrade(_initializers_not_inputs(model))
    graph = gs.import_onnx(model)
    _dynamic_batch(graph, _data_input(graph))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph.fold_constants().cleanup().toposort()
    _dropout_to_identity(graph)
    graph.cleanup().toposort()
    graph = gs.import_onnx(_infer(gs.export_onnx(graph)))
    _batch_reshapes_as_constants(graph)
    _nhwc_to_nchw(graph, _data_input(graph))
    return graph


def input_chw(graph: gs.Graph) -> tuple[int | None, int | None, int | None]:
    """(C, H, W) of the graph input; None where the dimension is symbolic."""
    shape = graph.inputs[0].shape
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape[1:])  # type: ignore


def batch_dim(graph: gs.Graph):
    """The input's batch dimension: an int for a fixed batch, else its symbolic name."""
    d = graph.inputs[0].shape[0]
    if isinstance(d, int) and not isinstance(d, bool) and d > 0:
        return d
    return d if isinstance(d, str) and d else BATCH


def to_model(graph: gs.Graph) -> onnx.ModelProto:
    """Export a graphsurgeon graph after cleanup and toposort."""
    graph.cleanup().toposort()
    return gs.export_onnx(graph)
