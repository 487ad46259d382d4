"""Maximum logit (Hendrycks et al., ICML 2022)."""
from __future__ import annotations

import numpy as np

from edgeood.methods import presentation
from edgeood.methods.base import Method, register


@register
class MaxLogit(Method):
    """score = max_c logits_c."""

    name = "maxlogit"
    order = 30
    by_default = True

    def build(self, graph, t):
        return graph.reduce("ReduceMax", t["logits"], [1], keepdims=False)

    def reference(self, taps):
        return np.asarray(taps["logits"], np.float64).max(axis=1)

    class Presentation(presentation.Presentation):
        head_nodes = 1
        score = "max logit"
        lite0 = True
