"""Fold scoring into the classifier graph: score outputs, conformal p-values and is_ood.

Outputs, in order: logits, score_<method>..., pvalue_<method>..., is_ood, tap_<name>...
The methods are duck-typed (taps(), build(), name): graph code never imports edgeood.methods.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.artifact.names import (IS_OOD, LOGITS, PVALUE_PREFIX, SCORE_PREFIX, TAP_PREFIX,
                                 method_of, pvalue_name, score_name, tap_name)
from edgeood.errors import EdgeoodError
from edgeood.graph.head import ClassifierHead
from edgeood.graph.model import batch_dim
from edgeood.graph.ops import constant, scope
from edgeood.graph.taps import resolve


def _set_output(t: gs.Variable, name: str, shape, dtype=np.float32) -> gs.Variable:
    t.name, t.shape, t.dtype = name, shape, dtype
    return t


def rename_logits(graph: gs.Graph, head: ClassifierHead) -> ClassifierHead:
    """Name the logits tensor 'logits' (moving any other tensor of that name aside)."""
    tensors = graph.tensors()
    if head.logits != LOGITS:
        if LOGITS in tensors:
            tensors[LOGITS].name = "logits_source"
        tensors[head.logits].name = LOGITS
    head.logits = LOGITS
    return head


def head_taps(graph: gs.Graph, head: ClassifierHead) -> dict[str, gs.Tensor]:
    """The tap keys every graph offers: logits, z (when the head is linear) and the input."""
    tensors = graph.tensors()
    taps = {"logits": tensors[head.logits], "input": graph.inputs[0]}
    if head.z is not None:
        taps["z"] = tensors[head.z]
    return taps


def build_scores(graph: gs.Graph, head: ClassifierHead, methods: list,
                 keep_taps: bool = False) -> dict[str, str]:
    """Append every method's scoring subgraph; outputs become logits and score_<method>.
    Returns the kept taps as {tap key: output name} (empty without keep_taps)."""
    head = rename_logits(graph, head)
    logits = graph.tensors()[LOGITS]
    n = batch_dim(graph)
    logits.dtype = logits.dtype or np.float32
    logits.shape = [n, head.num_classes]
    available = head_taps(graph, head)
    outputs = [logits]
    for m in methods:
        for key in m.taps():
            if key not in available:
                available[key] = resolve(graph, key)
        if score_name(m.name) in graph.tensors():
            raise EdgeoodError(f"the model already has a tensor named {score_name(m.name)}; "
                               "rename it")
        with scope(graph, m.name):
            score = m.build(graph, available)  # may add tensors to `available` (kept as taps)
        outputs.append(_set_output(score, score_name(m.name), [n]))
        for name, t in getattr(m, "graph_outputs", {}).items():
            if name in graph.tensors() and graph.tensors()[name] is not t:
                raise EdgeoodError(f"{m.name} adds the output {name}, which the model already "
                                   "has; rename that tensor")
            outputs.append(_set_output(t, name, [n, *(t.shape or [])[1:]], t.dtype or np.float32))
    kept: dict[str, str] = {}
    if keep_taps:
        for key, t in available.items():
            if key in ("logits", "input"):
                continue
            with scope(graph, "tap"):
                copy = graph.identity(t)
            kept[key] = tap_name(key)
            outputs.append(_set_output(copy, kept[key], t.shape, t.dtype or np.float32))
    graph.outputs = outputs
    graph.cleanup().toposort()
    return kept


def build_decision(graph: gs.Graph, references: dict[str, np.ndarray], threshold: float,
                   primary: str) -> dict[str, dict]:
    """(Re)place the p-value outputs and is_ood; returns where each method's reference lives
    ({method: {"constant": name, "row": i}}, for the metadata).

    p(s) = (1 + #{ref <= s}) / (n + 1) for every method at once: the scores are stacked into an
    M x N x 1 tensor and compared with one M x 1 x (n + 1) table of sorted references whose
    first column is -inf (the "1 +"), so one LessOrEqual, Cast and ReduceMean give all p-values
    (methods with different n get one table each). is_ood = not (score_primary >= threshold):
    a NaN score (a NaN / inf input, an overflowing reduced-precision backbone) is OOD, as its
    p-value 0 says, rather than passing as in-distribution the way score < threshold would.
    """
    old = [t for t in graph.outputs if t.name.startswith(PVALUE_PREFIX) or t.name == IS_OOD]
    graph.outputs = [t for t in graph.outputs if t not in old]
    graph.cleanup()
    tensors = graph.tensors()
    n_batch = batch_dim(graph)
    scores = [t for t in graph.outputs if t.name.startswith(SCORE_PREFIX)]
    taps = [t for t in graph.outputs if t.name.startswith(TAP_PREFIX)]
    groups: dict[int, list] = {}
    for s in scores:
        method = method_of(s.name, SCORE_PREFIX)
        ref = np.sort(np.asarray(references[method], np.float32).ravel())
        groups.setdefault(len(ref), []).append((method, s, ref))
    pvalues, where = {}, {}
    for size, members in groups.items():
        name = "pvalues" if len(groups) == 1 else f"pvalues_{size}"
        table = np.full((len(members), 1, size + 1), -np.inf, np.float32)
        for i, (method, _, ref) in enumerate(members):
            table[i, 0, 1:] = ref
            where[method] = {"constant": f"{name}/reference", "row": i}
        with scope(graph, name):
            for method, p in zip([m for m, _, _ in members],
                                 _lookup(graph, [s for _, s, _ in members], table)):
                pvalues[method] = _set_output(p, pvalue_name(method), [n_batch])
    with scope(graph, "decision"):
        thr = constant(graph, np.float32(threshold), "threshold")
        is_ood = graph.not_(graph.greater_equal(tensors[score_name(primary)], thr))
    is_ood = _set_output(is_ood, IS_OOD, [n_batch], np.bool_)
    ordered = [pvalues[method_of(s.name, SCORE_PREFIX)] for s in scores]
    graph.outputs = [t for t in graph.outputs if t not in taps] + ordered + [is_ood] + taps
    graph.cleanup().toposort()
    return where


def _lookup(graph: gs.Graph, scores: list, table: np.ndarray) -> list:
    """The p-values of M score vectors against an M x 1 x (n + 1) table (see build_decision):
    3 nodes for one method, 7 for any number."""
    ref = constant(graph, table if len(scores) > 1 else table[0], "reference")
    if len(scores) == 1:  # the table as a column (a Transpose of a constant: folded at load)
        hits = graph.less_equal(graph.transpose(ref, [1, 0]), scores[0])   # (n + 1) x N
        return [graph.reduce("ReduceMean", graph.cast(hits), [0])]
    stacked = graph.reshape(graph.concat(scores, axis=0), [len(scores), -1, 1])  # M x N x 1
    hits = graph.less_equal(ref, stacked)                                  # M x N x (n + 1)
    p = graph.reduce("ReduceMean", graph.cast(hits), [2])                  # M x N
    return graph.split(graph.reshape(p, [-1]), len(scores), axis=0)
