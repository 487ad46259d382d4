"""Energy score (Liu et al., NeurIPS 2020): T * logsumexp(logits / T), T = 1."""
from __future__ import annotations

import numpy as np

from edgeood.methods import presentation
from edgeood.methods.base import Method, register
from edgeood.methods.numeric import logsumexp


@register
class Energy(Method):
    """score = T * log sum_c exp(logits_c / T) (negative free energy; higher = more ID)."""

    name = "energy"
    defaults = {"temperature": 1.0}
    order = 10
    by_default = True

    def build(self, graph, t):
        logits = t["logits"]
        temp = self.params["temperature"]
        if temp == 1.0:
            return graph.logsumexp(logits, 1)
        scaled = graph.div(logits, np.float32(temp))
        return graph.mul(graph.logsumexp(scaled, 1), np.float32(temp))

    def reference(self, taps):
        temp = self.params["temperature"]
        return temp * logsumexp(np.asarray(taps["logits"], np.float64) / temp)

    class Presentation(presentation.Presentation):
        head_nodes = 1
        score = "T logsumexp(l / T), T = 1"
        notes = 'one ReduceLogSumExp (max-shifted for TensorRT, see "Head nodes")'
        lite0 = True
