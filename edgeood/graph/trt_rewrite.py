"""The detector as TensorRT's ONNX parser must see it: log-sum-exp max-shifted.

A detector spells log-sum-exp as one ReduceLogSumExp node, which ONNX Runtime computes
max-shifted on the CPU and on CUDA (one kernel instead of six). TensorRT's parser imports that
node as log(reduce_sum(exp(x))) with no shift (onnx-tensorrt, onnxOpImporters.cpp,
importReduceLogSumExp), which overflows for any x above 88.7 in float32 (11.1 in float16):
SCALE's and AdaSCALE's rescaled logits get there. Every path where edgeood hands a detector to
TensorRT (edgeood build, the trtexec command it prints, DeepStream's nvinfer model, ONNX
Runtime's TensorRT provider) first rewrites each ReduceLogSumExp as

    m = ReduceMax(x, keepdims=1);  y = ReduceLogSumExp(x - m) + ReduceMax(x)

whose exp only sees values <= 0 (TensorRT fuses the pointwise part into the reductions).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import onnx
from onnx import helper

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


def needs_rewrite(model: onnx.ModelProto) -> bool:
    """True when a ReduceLogSumExp node would be computed unshifted by TensorRT."""
    return bool(_unshifted(model))


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
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        keep = int(attrs.get("keepdims", 1))
        x, y, base = node.input[0], node.output[0], (node.name or y) + "/shifted"
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
    shift_logsumexp(out)
    return out


def _rewritten(path: Path) -> onnx.ModelProto | None:
    """The detector at `path` rewritten (its external data left where it is), or None when it
    needs no rewrite."""
    model = onnx.load(str(path), load_external_data=False)
    return model if shift_logsumexp(model) else None


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
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out
