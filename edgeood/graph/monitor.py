"""The stream monitor's update folded into the detector graph, for servers where no user loop
holds the state (Triton's sequence batcher with an implicit state, DeepStream multi-source
batching): one stream per batch slot.

    input  monitor_state      [batch, 1] float32   R_{t-1} of each slot's stream (0 at a start)
    output monitor_state_out  [batch, 1] float32   R_t = (1 + R_{t-1}) g(p_t), held once >= A
    output stream_alarm       [batch]    bool      R_t >= A

The bet g(p) = mean over the monitor's methods of f(p_m) / bet_scale is the host monitor's
(edgeood/stats/monitor.py). The graph's p-values lie on the grid (k + 1) / (n + 1), so
f / bet_scale is stored as a table of n + 1 float32 values per method (computed in float64 with
the stable series near p = 1, no Log in the graph) and looked up with
k = floor(p (n + 1) - 1/2) (p (n + 1) is within 3e-4 of an integer for n <= 5000) and a Gather.
Only Mul, Add, Floor, Max, Min, Cast, Gather, Squeeze, Unsqueeze, Less and Where: all within
TensorRT's ONNX parser (R >= A is written as Less(nextafter(A, -inf), R)).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.artifact.names import MONITOR_STATE, MONITOR_STATE_OUT, STREAM_ALARM, pvalue_name
from edgeood.errors import EdgeoodError
from edgeood.graph.model import batch_dim
from edgeood.graph.ops import constant, scope
from edgeood.stats.monitor import reference_bets

F32 = np.float32
SCOPE = "monitor"


def strip_monitor(graph: gs.Graph) -> bool:
    """Remove a folded monitor (its state input and outputs); True when there was one."""
    names = {MONITOR_STATE_OUT, STREAM_ALARM}
    had = any(t.name in names for t in graph.outputs) or \
        any(t.name == MONITOR_STATE for t in graph.inputs)
    graph.outputs = [t for t in graph.outputs if t.name not in names]
    graph.cleanup()
    graph.inputs = [t for t in graph.inputs if t.name != MONITOR_STATE]
    graph.cleanup().toposort()
    return had


def fold_monitor(graph: gs.Graph, methods: list[str], n_reference: dict[str, int],
                 bet_scale: float, arl: float) -> None:
    """(Re)place the monitor's state input, monitor_state_out and stream_alarm."""
    strip_monitor(graph)
    tensors = graph.tensors()
    n_batch = batch_dim(graph)
    for m in methods:
        if pvalue_name(m) not in tensors:
            raise EdgeoodError(f"the stream monitor needs the output {pvalue_name(m)}, which the "
                               "detector lacks; calibrate it first (edgeood calibrate --data)")
    state = gs.Variable(MONITOR_STATE, dtype=F32, shape=[n_batch, 1])
    arl32 = F32(arl)
    with scope(graph, SCOPE):
        bet = None
        for i, m in enumerate(methods):
            n = int(n_reference[m])
            table = reference_bets(n) / (bet_scale * len(methods))
            g = _lookup(graph, tensors[pvalue_name(m)], n,
                        constant(graph, table, f"bets_{i}"))
            bet = g if bet is None else graph.add(bet, g)
        prev = graph.squeeze(state, [1])
        grown = graph.mul(graph.add(prev, F32(1.0)), bet)
        r = graph.where(graph.less(prev, arl32), grown, prev)  # frozen once R >= A
        alarm = graph.less(np.nextafter(arl32, F32(-np.inf)), r)
        out = graph.unsqueeze(r, [1])
    out.name, out.shape, out.dtype = MONITOR_STATE_OUT, [n_batch, 1], F32
    alarm.name, alarm.shape, alarm.dtype = STREAM_ALARM, [n_batch], np.bool_
    graph.inputs = list(graph.inputs) + [state]
    graph.outputs = list(graph.outputs) + [out, alarm]
    graph.cleanup().toposort()


def _lookup(graph: gs.Graph, p: gs.Tensor, n: int, table: gs.Constant) -> gs.Tensor:
    """table[k] for p = (k + 1) / (n + 1): k = floor(p (n + 1) - 1/2), clipped to [0, n]."""
    k = graph.floor(graph.add(graph.mul(p, F32(n + 1)), F32(-0.5)))
    k = graph.minimum(graph.maximum(k, F32(0.0)), F32(n))
    return graph.gather(table, graph.cast(k, np.int64), axis=0)
