"""Check an exported graph against the TensorRT ONNX parser's documented limits, so problems
show up here rather than on the Jetson: opset range, TopK with K < 3840 and sorted output,
constant reduction axes, no Sort/Unique/NonZero/String ops, MaxPool without its Indices output."""
from __future__ import annotations

import numpy as np
import onnx

OPSET_RANGE = (9, 20)
TOPK_MAX = 3839
UNSUPPORTED = {"Sort", "Unique", "NonZero", "StringNormalizer", "RegexFullMatch",
               "StringConcat", "StringSplit", "TfIdfVectorizer"}
REDUCTIONS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}


def check_model(model: onnx.ModelProto) -> list[str]:
    """Problems found (empty when the graph is within the limits)."""
    problems = []
    opset = max((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), default=0)
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(f"opset {opset} is outside TensorRT's range {OPSET_RANGE}")
    consts = {i.name for i in model.graph.initializer}
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            consts.update(node.output)
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = onnx.numpy_helper.to_array(a.t)
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
