"""The detector as TensorRT's ONNX parser must see it: log-sum-exp max-shifted, TopK within
its K limit and sorted.

A detector spells log-sum-exp as one ReduceLogSumExp node, which ONNX Runtime computes
max-shifted on the CPU and on CUDA (one kernel instead of six). TensorRT's parser imports that
node as log(reduce_sum(exp(x))) with no shift (onnx-tensorrt, onnxOpImporters.cpp,
importReduceLogSumExp), which overflows for any x above 88.7 in float32 (11.1 in float16):
SCALE's and AdaSCALE's rescaled logits get there. Every path where edgeood hands a detector to
TensorRT (edgeood build, the trtexec command it prints, DeepStream's nvinfer model, ONNX
Runtime's TensorRT provider) first rewrites each ReduceLogSumExp as

    m = ReduceMax(x, keepdims=1);  y = ReduceLogSumExp(x - m) + ReduceMax(x)

whose exp only sees values <= 0 (TensorRT fuses the pointwise part into the reductions).

TopK: TensorRT takes K <= 3840 and sorted output only, while ONNX Runtime's CPU TopK is fastest
as one unsorted TopK of the whole K (AdaSCALE's least-|g| set: K = 7526 on a 224 px input). So
the same paths set sorted=1 and split a constant K > 3839 into exact rounds: round r takes the
next min(K left, 3839) entries after the entries already taken are set to +inf (smallest) or
-inf (largest) by a ScatterElements; the rounds' values and indices are concatenated, which is
the whole TopK in sorted order with the lower-index tie rule (exact for inputs without +-inf
or NaN, as TopK itself orders those arbitrarily).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeood.artifact.files import atomic_path, file_mode
from edgeood.artifact.names import TOPK_LIMIT
from edgeood.tensorrt.check import elem_types, small_constants

OP = "ReduceLogSumExp"


def _unshifted(model: onnx.ModelProto) -> set[int]:
    """Indices of the ReduceLogSumExp nodes whose input is not already x - ReduceMax(x)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    out = set()
    for i, n in enumerate(model.graph.node):
        if n.op_type != OP:
            continue
        sub = producer.get(n.input[0])
        peak = producer.get(sub.input[1]) if sub is not None and sub.op_type == "Sub" else None
        if peak is None or peak.op_type != "ReduceMax" or peak.input[0] != sub.input[0]:
            out.add(i)
    return out


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _topk_to_fix(model: onnx.ModelProto) -> dict[int, int]:
    """{node index: K} of the TopK nodes TensorRT would reject as they are: unsorted, or a
    constant K above its limit (a K that is not a constant stays for edgeood check to report)."""
    consts, out = small_constants(model), {}
    for i, n in enumerate(model.graph.node):
        if n.op_type != "TopK" or n.input[1] not in consts:
            continue
        k = int(np.asarray(consts[n.input[1]]).ravel()[0])
        if k > TOPK_LIMIT or _attrs(n).get("sorted", 1) != 1:
            out[i] = k
    return out


def needs_rewrite(model: onnx.ModelProto) -> bool:
    """True when a ReduceLogSumExp node would be computed unshifted by TensorRT, or a TopK is
    unsorted or above TensorRT's K limit."""
    return bool(_unshifted(model)) or bool(_topk_to_fix(model))


def split_topk(model: onnx.ModelProto) -> int:
    """Rewrite every TopK that _topk_to_fix names in place (see the module docstring): sorted
    and, for K > 3839, exact rounds of at most 3839. Returns how many were rewritten."""
    todo = _topk_to_fix(model)
    if not todo:
        return 0
    types = elem_types(model) if any(k > TOPK_LIMIT for k in todo.values()) else {}
    nodes, dropped_k = [], set()
    for i, node in enumerate(model.graph.node):
        kept = onnx.NodeProto()
        kept.CopyFrom(node)  # the container is cleared below
        if i not in todo:
            nodes.append(kept)
            continue
        attrs = _attrs(node)
        attrs["sorted"] = 1
        k = todo[i]
        if k <= TOPK_LIMIT:
            del kept.attribute[:]
            kept.attribute.extend(helper.make_attribute(a, v) for a, v in attrs.items())
            nodes.append(kept)
            continue
        dropped_k.add(node.input[1])
        axis, largest = int(attrs.get("axis", -1)), int(attrs.get("largest", 1))
        base = (node.name or node.output[1]) + "/round"
        elem = types.get(node.input[0], onnx.TensorProto.FLOAT)
        fill = numpy_helper.from_array(
            np.array([-np.inf if largest else np.inf], helper.tensor_dtype_to_np_dtype(elem)))
        values, indices, cur, left, r = [], [], node.input[0], k, 0
        while left > 0:
            kr = min(left, TOPK_LIMIT)
            kname = f"{base}{r}/k"
            nodes.append(helper.make_node("Constant", [], [kname], name=kname,
                                          value=numpy_helper.from_array(np.array([kr], np.int64))))
            v, ix = f"{base}{r}/values", f"{base}{r}/indices"
            nodes.append(helper.make_node("TopK", [cur, kname], [v, ix], name=f"{base}{r}/TopK",
                                          **attrs))
            values.append(v)
            indices.append(ix)
            left -= kr
            if left > 0:  # the entries taken so far leave the next round's candidates
                nodes += [helper.make_node("Shape", [ix], [f"{base}{r}/shape"],
                                           name=f"{base}{r}/Shape"),
                          helper.make_node("ConstantOfShape", [f"{base}{r}/shape"],
                                           [f"{base}{r}/fill"], name=f"{base}{r}/Fill",
                                           value=fill),
                          helper.make_node("ScatterElements", [cur, ix, f"{base}{r}/fill"],
                                           [f"{base}{r}/rest"], name=f"{base}{r}/Exclude",
                                           axis=axis)]
                cur = f"{base}{r}/rest"
            r += 1
        for parts, out in ((values, node.output[0]), (indices, node.output[1])):
            if out:
                nodes.append(helper.make_node("Concat", parts, [out], name=f"{out}/Concat",
                                              axis=axis))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    unused = dropped_k - {i for n in nodes for i in n.input}
    kept_inits = [i for i in model.graph.initializer if i.name not in unused]
    if len(kept_inits) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept_inits)
    return len(todo)


def topk_note(model: onnx.ModelProto) -> list[str]:
    """What edgeood check says of the TopK nodes that TensorRT paths rewrite (empty if none)."""
    todo = _topk_to_fix(model)
    if not todo:
        return []
    names = ", ".join(f"{model.graph.node[i].name} (K = {todo[i]})" for i in sorted(todo))
    return [f"{len(todo)} TopK node(s) unsorted or above TensorRT's K limit of {TOPK_LIMIT} "
            f"({names}): edgeood build, --print-trtexec (<detector>.trt.onnx), deploy "
            "deepstream and --device tensorrt hand TensorRT a copy with sorted=1 and exact "
            "rounds of at most 3839; the limits are checked on that copy"]


def rewrite(model: onnx.ModelProto) -> dict[str, int]:
    """Every TensorRT rewrite in place: {"logsumexp": shifted, "topk": rewritten}."""
    return {"logsumexp": shift_logsumexp(model), "topk": split_topk(model)}


def shift_logsumexp(model: onnx.ModelProto) -> int:
    """Rewrite every ReduceLogSumExp in place (see the module docstring); returns how many."""
    nodes, count = [], 0
    todo = _unshifted(model)
    for i, node in enumerate(model.graph.node):
        if i not in todo:
            kept = onnx.NodeProto()
            kept.CopyFrom(node)  # the container is cleared below
            nodes.append(kept)
            continue
        count += 1
        attrs = _attrs(node)
        keep = int(attrs.get("keepdims", 1))
        x, y = node.input[0], node.output[0]
        base = (node.name or y) + "/shifted"
        axes_in = list(node.input[1:2])  # opset >= 18: axes as an input (may be absent)
        axes_attr = {"axes": attrs["axes"]} if "axes" in attrs else {}

        def reduce(op, src, out, keepdims):
            return helper.make_node(op, [src] + axes_in, [out], name=out + "_node",
                                    keepdims=keepdims, **axes_attr)
        nodes += [reduce("ReduceMax", x, f"{base}/max_k", 1),
                  helper.make_node("Sub", [x, f"{base}/max_k"], [f"{base}/shifted"],
                                   name=f"{base}/Sub"),
                  reduce(OP, f"{base}/shifted", f"{base}/lse_0", keep)]
        top = f"{base}/max_k"
        if not keep:
            nodes.append(reduce("ReduceMax", x, f"{base}/max_d", 0))
            top = f"{base}/max_d"
        nodes.append(helper.make_node("Add", [f"{base}/lse_0", top], [y], name=f"{base}/Add"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def tensorrt_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A rewritten copy (the model itself when there is nothing to rewrite)."""
    if not needs_rewrite(model):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rewrite(out)
    return out


def _rewritten(path: Path) -> onnx.ModelProto | None:
    """The detector at `path` rewritten (its external data left where it is), or None when it
    needs no rewrite."""
    model = onnx.load(str(path), load_external_data=False)
    return model if any(rewrite(model).values()) else None


@contextlib.contextmanager
def tensorrt_ready(path: str | Path) -> Iterator[Path]:
    """The path of a TensorRT-ready copy of the detector at `path`, for as long as the block
    runs: `path` itself when nothing needs rewriting, else a hidden sibling file (so external
    weight data, <detector>.onnx.data, resolves as it does for the original)."""
    path = Path(path)
    model = _rewritten(path)
    if model is None:
        yield path
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".trt.onnx", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())  # trtexec may run as another user
        onnx.save(model, tmp)
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_tensorrt_ready(path: str | Path) -> Path:
    """Write <detector>.trt.onnx beside the detector (for trtexec on another machine) when the
    detector needs the rewrite; returns the file trtexec should read."""
    path = Path(path)
    model = _rewritten(path)
    if model is None:
        return path
    out = path.with_name(path.name.removesuffix(".onnx") + ".trt.onnx")
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return out
