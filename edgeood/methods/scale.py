"""SCALE (Xu et al., ICLR 2024): scale the penultimate features by exp(sum(a) / sum(topk(a)))."""
from __future__ import annotations

import numpy as np

from edgeood.errors import EdgeoodError
from edgeood.graph.head import apply_head
from edgeood.methods import presentation
from edgeood.methods.base import Method, register
from edgeood.methods.numeric import k_from_percentile, linear, logsumexp


@register
class Scale(Method):
    """k = D - round(D p / 100); s = exp(sum(a) / sum(topk(a, k))); score = logsumexp(W (a s) + b).

    a = z (post-ReLU features); the unpruned features are scaled. Nothing is fitted.
    In the graph W (a s) + b is the classifier's own head applied to a s (one Gemm: fewer
    nodes than s (logits - b) + b, and the formula as written).
    """

    name = "scale"
    defaults = {"percentile": 85.0}
    needs_linear_head = True
    order = 50
    by_default = True

    def validate(self):
        if not 0 <= self.params["percentile"] < 100:
            raise EdgeoodError("scale.percentile must be in [0, 100); e.g. --param scale.percentile=85")

    def k(self) -> int:
        return k_from_percentile(self.head.feature_dim, self.params["percentile"])

    def derived(self):
        return {"k": self.k()}

    def taps(self):
        return ["z"]

    def build(self, graph, t):
        a = t["z"]
        total = graph.reduce("ReduceSum", a, [1], keepdims=True)
        top, _ = graph.topk(a, self.k(), axis=1)
        kept = graph.reduce("ReduceSum", top, [1], keepdims=True)
        s = graph.exp(graph.div(total, kept))
        return graph.logsumexp(apply_head(graph, self.head, graph.mul(a, s)), 1)

    def reference(self, taps):
        a = np.asarray(taps["z"], np.float64)
        top = -np.sort(-a, axis=1)[:, : self.k()]
        s = np.exp(a.sum(1, keepdims=True) / top.sum(1, keepdims=True))
        return logsumexp(linear(a * s, self.head.weight, self.head.bias))

    class Presentation(presentation.Presentation):
        head_nodes = 8
        score = ("energy(W (z s) + b), s = exp(sum z / sum topk(z, k)), k = D - round(D p/100), "
                 "p = 85")
        notes = "W (z s) + b with the head's own Gemm"

        def summary(self, entry):
            return f"k {entry['k']}" if "k" in entry else ""
