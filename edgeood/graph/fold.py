"""Fold scoring into the classifier graph: score outputs, conformal p-values and is_ood.

Outputs, in order: logits, score_<method>..., pvalue_<method>..., is_ood, tap_<name>...
"""
from __future__ import annotations

import re

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.errors import EdgeoodError
from edgeood.graph.head import ClassifierHead
from edgeood.graph.model import batch_dim
from edgeood.graph.ops import constant, scope
from edgeood.graph.taps import resolve
from edgeood.methods.base import Method


def _set_output(t: gs.Variable, name: str, shape, dtype=np.float32) -> gs.Variable:
    t.name, t.shape, t.dtype = name, shape, dtype
    return t


def rename_logits(graph: gs.Graph, head: ClassifierHead) -> ClassifierHead:
    """Name the logits tensor 'logits' (moving any other tensor of that name aside)."""
    tensors = graph.tensors()
    if head.logits != "logits":
        if "logits" in tensors:
            tensors["logits"].name = "logits_source"
        tensors[head.logits].name = "logits"
    head.logits = "logits"
    return head


def build_scores(graph: gs.Graph, head: ClassifierHead, methods: list[Method],
                 keep_taps: bool = False) -> None:
    """Append every method's scoring subgraph; outputs become logits and score_<method>."""
    head = rename_logits(graph, head)
    tensors = graph.tensors()
    logits = tensors["logits"]
    n = batch_dim(graph)
    logits.dtype = logits.dtype or np.float32
    logits.shape = [n, head.num_classes]
    available = {"logits": logits, "z": tensors[head.z], "input": graph.inputs[0]}
    outputs = [logits]
    for m in methods:
        for key in m.taps():
            if key not in available:
                available[key] = resolve(graph, key)
        with scope(graph, m.name):
            score = m.build(graph, available)  # may add tensors to `available` (kept as taps)
        if f"score_{m.name}" in graph.tensors():
            raise EdgeoodError(f"the model already has a tensor named score_{m.name}; rename it")
        outputs.append(_set_output(score, f"score_{m.name}", [n]))
    if keep_taps:
        for key, t in available.items():
            if key in ("logits", "input"):
                continue
            with scope(graph, "tap"):
                copy = graph.identity(t)
            safe = re.sub(r"[^0-9A-Za-z_]+", "_", key).strip("_")
            outputs.append(_set_output(copy, f"tap_{safe}", t.shape, t.dtype or np.float32))
    graph.outputs = outputs
    graph.cleanup().toposort()


def build_decision(graph: gs.Graph, references: dict[str, np.ndarray], threshold: float,
                   primary: str) -> None:
    """(Re)place the p-value outputs and is_ood.

    p(s) = (1 + #{ref <= s}) / (n + 1), computed as (1 + n - #{s < ref}) / (n + 1) so that only
    Less is needed (supported by every TensorRT version); is_ood = score_primary < threshold.
    """
    old = [t for t in graph.outputs if t.name.startswith("pvalue_") or t.name == "is_ood"]
    graph.outputs = [t for t in graph.outputs if t not in old]
    graph.cleanup()
    tensors = graph.tensors()
    n_batch = batch_dim(graph)
    scores = [t for t in graph.outputs if t.name.startswith("score_")]
    taps = [t for t in graph.outputs if t.name.startswith("tap_")]
    pvalues = []
    for s in scores:
        method = s.name[len("score_"):]
        ref = np.sort(np.asarray(references[method], np.float32))
        with scope(graph, f"pvalue_{method}"):
            ref_c = constant(graph, ref.reshape(1, -1), "reference")
            below = graph.cast(graph.less(graph.unsqueeze(s, [1]), ref_c))
            n_less = graph.reduce("ReduceSum", below, [1], keepdims=False)
            p = graph.div(graph.sub(np.float32(1 + len(ref)), n_less), np.float32(len(ref) + 1))
        pvalues.append(_set_output(p, f"pvalue_{method}", [n_batch]))
    with scope(graph, "decision"):
        thr = constant(graph, np.float32(threshold), "threshold")
        is_ood = graph.less(tensors[f"score_{primary}"], thr)
    is_ood = _set_output(is_ood, "is_ood", [n_batch], np.bool_)
    graph.outputs = [t for t in graph.outputs if t not in taps] + pvalues + [is_ood] + taps
    graph.cleanup().toposort()
