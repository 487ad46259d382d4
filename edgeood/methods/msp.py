"""Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017)."""
from __future__ import annotations

from edgeood.methods.base import Method, register
from edgeood.methods.numeric import softmax


@register
class MSP(Method):
    """score = max_c softmax(logits)_c = 1 / sum_c exp(logits_c - max logits)."""

    name = "msp"

    def build(self, graph, t):
        logits = t["logits"]
        m = graph.reduce("ReduceMax", logits, [1], keepdims=True)
        s = graph.reduce("ReduceSum", graph.exp(graph.sub(logits, m)), [1], keepdims=False)
        return graph.reciprocal(s)

    def reference(self, taps):
        return softmax(taps["logits"]).max(axis=1)
