"""FeatureNorm with NormRatio block selection (Yu et al., CVPR 2023, arXiv 2212.02295)."""
from __future__ import annotations

import numpy as np

from edgeood.errors import EdgeoodError, did_you_mean
from edgeood.methods import presentation
from edgeood.methods.base import Method, register


def feature_norm(block: np.ndarray) -> np.ndarray:
    """FN(x) = mean_c || relu(F)[c] ||_2 over H x W (float64)."""
    f = np.maximum(np.asarray(block, np.float64), 0.0)
    return np.sqrt((f * f).sum(axis=(2, 3))).mean(axis=1)


def _nonnegative(t) -> bool:
    """True when t is produced by Relu or by a Clip whose lower bound is >= 0."""
    producer = t.inputs[0] if getattr(t, "inputs", None) else None
    if producer is None:
        return False
    if producer.op == "Relu":
        return True
    if producer.op != "Clip":
        return False
    lo = producer.attrs.get("min")
    if lo is None and len(producer.inputs) > 1:
        values = getattr(producer.inputs[1], "values", None)
        lo = None if values is None else float(np.asarray(values).ravel()[0])
    return lo is not None and lo >= 0


@register
class FeatureNorm(Method):
    """score = mean_c ||relu(F_b(x))[c, :, :]||_2 of the selected block b.

    Selection: NormRatio_b = mean_i FN_b(x_i) / FN_b(jigsaw(x_i)) over ID images; the block with
    the largest NormRatio wins (set `block` to force one). The sum of squares is reduced in float32.
    """

    name = "featurenorm"
    defaults = {"block": "", "candidates": []}
    fitted_keys = ("norm_ratios", "selected_block")
    needs_fit = True
    needs_jigsaw = True
    order = 60
    by_default = True

    def _candidates(self) -> list[str]:
        cands = list(self.params["candidates"]) or list(self.model.candidates)
        if self.params["block"]:
            return [self.params["block"]]
        if not cands:
            raise EdgeoodError("featurenorm found no candidate blocks (no 4-D residual or stage "
                               "outputs); list them in the recipe's [taps] blocks or set "
                               "--param featurenorm.block=TENSOR")
        return cands

    def fit_taps(self):
        return self._candidates()

    def fit_update(self, taps, source):
        store = self.scratch.setdefault(source, {})
        for name in self._candidates():
            store.setdefault(name, []).append(feature_norm(taps[name]))

    def fit_end(self):
        fn_id, fn_jig = self.scratch["id"], self.scratch.get("jigsaw")
        ratios = {}
        for name in self._candidates():
            a = np.concatenate(fn_id[name])
            if fn_jig is None:
                ratios[name] = float("nan")
                continue
            b = np.concatenate(fn_jig[name])
            ratios[name] = float(np.mean(a / np.maximum(b, 1e-12)))
        self.fitted["norm_ratios"] = ratios
        finite = {k: v for k, v in ratios.items() if np.isfinite(v)}
        self.fitted["selected_block"] = max(finite, key=finite.get) if finite else \
            self._candidates()[-1]

    @property
    def selected(self) -> str:
        return self.fitted.get("selected_block") or self.params["block"]

    def taps(self):
        return [self.selected]

    def build(self, graph, t):
        block = t[self.selected]
        if not _nonnegative(block):  # a block that is a ReLU / ReLU6 output needs no second one
            block = graph.relu(block)
        norms = graph.reduce("ReduceL2", block, [2, 3], keepdims=False)
        return graph.reduce("ReduceMean", norms, [1], keepdims=False)

    def reference(self, taps):
        return feature_norm(taps[self.selected])

    def check_model(self, model):
        for b in [self.params["block"], *self.params["candidates"]]:
            if b and model.tensors and b not in model.tensors:
                raise EdgeoodError(f"featurenorm block '{b}' is not a tensor of the graph"
                                   f"{did_you_mean(b, model.tensors)}")

    class Presentation(presentation.Presentation):
        head_nodes = 2
        score = "mean_c ‖relu(F_b)[c]‖₂ of block b"
        fits = "b = argmax NormRatio over candidates (jigsaw, seeded)"
        notes = "every candidate's NormRatio in the metadata"
        lite0 = True

        def detail_table(self, entry):
            ratios = entry.get("norm_ratios")
            if not ratios:
                return None
            return ("FeatureNorm NormRatio per candidate block (largest is selected)",
                    ["block", "NormRatio"], [[k, v] for k, v in ratios.items()])

        def summary(self, entry):
            return f"block {entry['selected_block']}" if entry.get("selected_block") else ""

        def lite0_report(self, entry):
            return (f"FeatureNorm selected {entry['selected_block']}",
                    {"norm_ratios": entry["norm_ratios"],
                     "selected_block": entry["selected_block"]})
