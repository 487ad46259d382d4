"""Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017)."""
from __future__ import annotations

from edgeood.methods import presentation
from edgeood.methods.base import Method, register
from edgeood.methods.numeric import softmax


@register
class MSP(Method):
    """score = max_c softmax(logits)_c = 1 / sum_c exp(logits_c - max logits)."""

    name = "msp"
    order = 20
    by_default = True

    def build(self, graph, t):
        # two nodes: Softmax is max-shifted in ONNX Runtime and TensorRT alike
        return graph.reduce("ReduceMax", graph.softmax(t["logits"], 1), [1], keepdims=False)

    def reference(self, taps):
        return softmax(taps["logits"]).max(axis=1)

    class Presentation(presentation.Presentation):
        head_nodes = 2
        score = "max softmax"
        notes = "Softmax + ReduceMax"
        lite0 = True
