"""How many nodes a detector's head adds once ONNX Runtime has optimised the graph.

On a GPU every node is at least one kernel launch, so a head of many small nodes costs more
than its arithmetic: the count after ONNX Runtime's own rewrites (ORT_ENABLE_EXTENDED, which
folds constants and fuses what it can) is what a GPU session runs. The benchmarks report it per
method and tests/graph/test_node_count.py keeps it from growing.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import onnx
import onnxruntime as ort


def optimized_ops(model: str | Path | bytes) -> Counter:
    """Node count per op type of the model after ORT_ENABLE_EXTENDED on the CPU provider."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        src = model if isinstance(model, bytes) else str(model)
        ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath, load_external_data=False).graph
        return Counter(n.op_type for n in graph.node)


def added_nodes(detector: str | Path | bytes, classifier: str | Path | bytes) -> dict:
    """{"classifier": n, "detector": n, "added": n, "by_op": {op: +k}} after optimisation."""
    base, det = optimized_ops(classifier), optimized_ops(detector)
    by_op = {op: det[op] - base.get(op, 0) for op in sorted(set(det) | set(base))
             if det[op] != base.get(op, 0)}
    return {"classifier": sum(base.values()), "detector": sum(det.values()),
            "added": sum(det.values()) - sum(base.values()), "by_op": by_op}
