"""ReAct (Sun et al., NeurIPS 2021): clip the penultimate activations, then energy."""
from __future__ import annotations

import numpy as np

from edgeood.errors import EdgeoodError
from edgeood.graph.head import apply_head
from edgeood.methods import presentation
from edgeood.methods.base import Method, register
from edgeood.methods.numeric import linear, logsumexp


@register
class ReAct(Method):
    """z' = min(z, t), t = the `percentile`-th percentile of all ID penultimate values;
    score = logsumexp(W z' + b).

    The percentile is exact: every ID activation value is kept until fit_end (4 bytes each).
    """

    name = "react"
    defaults = {"percentile": 90.0}
    fitted_keys = ("threshold_activation",)
    needs_fit = True
    needs_linear_head = True
    order = 40
    by_default = True

    def validate(self):
        if not 0 < self.params["percentile"] <= 100:
            raise EdgeoodError("react.percentile must be in (0, 100]; e.g. --param react.percentile=90")

    def fit_taps(self):
        return ["z"]

    def fit_update(self, taps, source):
        if source == "id":
            self.scratch.setdefault("values", []).append(np.asarray(taps["z"], np.float32).ravel())

    def fit_end(self):
        values = np.concatenate(self.scratch["values"])
        self.fitted["threshold_activation"] = float(np.percentile(values, self.params["percentile"]))

    def taps(self):
        return ["z"]

    def build(self, graph, t):
        clipped = graph.minimum(t["z"], np.float32(self.fitted["threshold_activation"]))
        return graph.logsumexp(apply_head(graph, self.head, clipped), 1)

    def reference(self, taps):
        z = np.minimum(np.asarray(taps["z"], np.float64), self.fitted["threshold_activation"])
        return logsumexp(linear(z, self.head.weight, self.head.bias))

    class Presentation(presentation.Presentation):
        head_nodes = 3
        score = "energy(W min(z, t) + b)"
        fits = "t = p-th percentile (90) of all ID activations"
        notes = "exact percentile"

        def summary(self, entry):
            return f"clip {entry['threshold_activation']:.4g}" if "threshold_activation" in entry \
                else ""
