"""AdaSCALE (Regmi et al., arXiv 2503.08023, ICML 2026): an adaptive SCALE percentile from how
much the top penultimate activations move under a small input perturbation along the gradient.

1. c* = argmax logits; g = d logits[c*] / d x (built as graph nodes, edgeood.graph.autodiff).
2. The n = int(C H W o) input elements with the smallest |g| (ties: lower flat index) get
   x' = x + eps sign(g); the backbone runs again on x' up to z'.
3. Q' = lambda sum_{I1} |z - z'| + sum_{I2} relu(z'), I1 / I2 = indices of the floor(D k1/100) /
   floor(D k2/100) largest raw activations z.
4. p = p_min + (1 - F(Q')) (p_max - p_min), F the right-continuous ECDF of ID Q' values.
5. k = D - round(D p / 100); r = sum(a) / sum(topk(a, k)), a = relu(z).
6. Variant A: logits' = W (z exp(r)) + b; variant L: logits' = (W z + b) r^2. score = logsumexp.

Deviations, documented: the official code at its HEAD swaps k1 and k2 in calibration only; we
follow the formulas above in both places (they match the original, consistent release). For
n >= 3840 (TensorRT's TopK limit) the least-|g| set is found exactly by successive TopK rounds
of at most 3839 elements, each round excluding the elements already chosen (ScatterElements),
which keeps the lower-index tie rule; in-graph W (z exp(r)) + b is computed as
exp(r) (logits - b) + b.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.errors import EdgeoodError
from edgeood.graph.autodiff import input_gradient
from edgeood.graph.head import rescale_logits
from edgeood.graph.ops import _layer, constant
from edgeood.graph.subgraph import clone_between
from edgeood.methods.base import Method, register
from edgeood.methods.numeric import logsumexp

TOPK_LIMIT = 3839  # TensorRT: K < 3840
MAX_REFERENCE = 5000
TUNE_GRID = [65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]


# --- graph pieces -----------------------------------------------------------------------------
def least_mask(graph: gs.Graph, v: gs.Tensor, n: int, limit: int = TOPK_LIMIT) -> gs.Variable:
    """float32 [N, L] mask of the n smallest entries per row (ties: lower index), using TopK
    calls of at most `limit` elements."""
    parts, cur, left = [], v, n
    while left > 0:
        k = min(left, limit)
        _, idx = graph.topk(cur, k, axis=1, largest=False)
        parts.append(idx)
        left -= k
        if left > 0:
            cur = _layer(graph, "ScatterElements", [cur, idx, _fill_like(graph, idx, np.inf)], {"axis": 1})
    idx = parts[0] if len(parts) == 1 else _layer(graph, "Concat", parts, {"axis": 1},
                                                   dtypes=[np.int64])
    return _layer(graph, "ScatterElements", [_fill_like(graph, v, 0.0), idx, _fill_like(graph, idx, 1.0)], {"axis": 1})


def _fill_like(graph: gs.Graph, t: gs.Tensor, val: float) -> gs.Variable:
    """A float32 tensor of t's shape filled with val."""
    shape = _layer(graph, "Shape", [t], dtypes=[np.int64])
    return _layer(graph, "ConstantOfShape", [shape],
                  {"value": gs.Constant("value", np.array([val], np.float32))})


def least_mask_reference(v: np.ndarray, n: int) -> np.ndarray:
    """NumPy: the n smallest per row, ties to the lower index (stable sort)."""
    order = np.argsort(v, axis=1, kind="stable")[:, :n]
    mask = np.zeros(v.shape, np.float32)
    np.put_along_axis(mask, order, 1.0, axis=1)
    return mask


class _AdaScale(Method):
    variant = "A"
    defaults = {"lambda_": 10.0, "o": 0.05, "eps": 0.5, "k1": 1.0, "k2": 5.0, "p_min": 60.0,
                "p_max": 90.0, "tune": False, "topk_limit": TOPK_LIMIT}
    needs_fit = True

    def validate(self):
        p = self.params
        if not 0 <= p["p_min"] < p["p_max"] < 100:
            raise EdgeoodError(f"{self.name}: need 0 <= p_min < p_max < 100 (got p_min="
                               f"{p['p_min']}, p_max={p['p_max']})")
        if not 0 < p["o"] <= 1 or not 0 <= p["k1"] <= 100 or not 0 <= p["k2"] <= 100:
            raise EdgeoodError(f"{self.name}: o must be in (0, 1], k1 and k2 in [0, 100]")
        if not 1 <= int(p["topk_limit"]) <= TOPK_LIMIT:
            raise EdgeoodError(f"{self.name}.topk_limit must be in [1, {TOPK_LIMIT}]")

    @property
    def needs_jigsaw(self):  # type: ignore[override]
        return bool(self.params["tune"]) and not self.tunes_on_ood

    # derived sizes
    def _k12(self):
        d = self.head.feature_dim
        return int(np.floor(d * self.params["k1"] / 100)), int(np.floor(d * self.params["k2"] / 100))

    def _k(self, p):
        d = self.head.feature_dim
        return d - np.round(d * np.asarray(p, np.float64) / 100.0)

    # --- the perturbation statistic Q' (shared by fit and score graphs) -----------------------
    def _q_graph(self, graph, t):
        x, logits, z = t["input"], t["logits"], t["z"]
        chw = [int(v) for v in x.shape[1:]]
        n = int(np.prod(chw) * self.params["o"])
        grad = input_gradient(graph, x, logits, self.head.num_classes, name=f"{self.name}/grad")
        flat = _layer(graph, "Reshape", [graph.abs_(grad), np.array([0, -1], np.int64)])
        mask = least_mask(graph, flat, n, int(self.params["topk_limit"]))
        step = graph.mul(graph.sign(grad), np.float32(self.params["eps"]))
        shaped = _layer(graph, "Reshape", [mask, _layer(graph, "Shape", [x], dtypes=[np.int64])])
        x_new = graph.add(x, graph.mul(step, shaped))
        z_new = clone_between(graph, x, z, x_new)
        k1, k2 = self._k12()
        q = None
        if max(k1, k2) > 0:
            _, idx = graph.topk(z, max(k1, k2), axis=1)
            if k1 > 0:
                i1 = _layer(graph, "Slice", [idx, np.array([0], np.int64),
                                             np.array([k1], np.int64), np.array([1], np.int64)],
                            dtypes=[np.int64])
                diff = graph.abs_(graph.sub(z, z_new))
                q = graph.mul(graph.reduce("ReduceSum", _gather(graph, diff, i1), [1]),
                              np.float32(self.params["lambda_"]))
            if k2 > 0:
                i2 = idx if k2 >= k1 else _layer(graph, "Slice", [idx, np.array([0], np.int64),
                                                                  np.array([k2], np.int64),
                                                                  np.array([1], np.int64)],
                                                 dtypes=[np.int64])
                c_o = graph.reduce("ReduceSum", _gather(graph, graph.relu(z_new), i2), [1])
                q = c_o if q is None else graph.add(q, c_o)
        if q is None:
            q = graph.mul(graph.reduce("ReduceSum", z, [1]), np.float32(0))
        return q, z_new

    # --- calibration --------------------------------------------------------------------------
    def fit_graph(self, graph, t):
        q, z_new = self._q_graph(graph, t)
        out = {f"{self.name}/q": q}
        if self.params["tune"]:
            out[f"{self.name}/z_perturbed"] = z_new
        return out

    def fit_taps(self):
        return ["z", "logits"] if self.params["tune"] else []

    def fit_update(self, taps, source):
        store = self.fitted.setdefault(f"_{source}", {"q": [], "z": [], "zp": [], "logits": []})
        store["q"].append(np.asarray(taps[f"{self.name}/q"], np.float32))
        if self.params["tune"]:
            store["z"].append(taps["z"])
            store["zp"].append(taps[f"{self.name}/z_perturbed"])
            store["logits"].append(taps["logits"])

    def fit_end(self):
        ident = self.fitted.pop("_id")
        against = "ood" if "_ood" in self.fitted else "jigsaw"
        jig = self.fitted.pop(f"_{against}", None)
        q = np.concatenate(ident["q"])
        if len(q) > MAX_REFERENCE:
            q = np.random.default_rng(0).choice(q, MAX_REFERENCE, replace=False)
        self.fitted["q_reference"] = np.sort(q).astype(np.float32)
        if self.params["tune"] and jig is not None:
            from edgeood.metrics import auroc
            cat = lambda d: {"z": np.concatenate(d["z"]), "z_perturbed": np.concatenate(d["zp"]),  # noqa: E731
                             "logits": np.concatenate(d["logits"])}
            a, b = cat(ident), cat(jig)
            grid = [p for p in TUNE_GRID if p > self.params["p_min"]]
            results = {}
            for p_max in grid:
                self.params["p_max"] = p_max
                results[p_max] = auroc(self.reference(a), self.reference(b))
            best = max(grid, key=lambda p: (results[p], -abs(p - 90)))
            self.params["p_max"] = best
            self.fitted["tuning"] = {"p_max": best, "auroc": results[best],
                                     "against": against, "grid": {str(k): v for k, v in results.items()}}

    # --- scoring ------------------------------------------------------------------------------
    def taps(self):
        return ["input", "z", "logits"]

    def build(self, graph, t):
        q, _ = self._q_graph(graph, t)
        ref = np.asarray(self.fitted["q_reference"], np.float32)
        d = self.head.feature_dim
        p_min, p_max = self.params["p_min"], self.params["p_max"]
        ref_c = constant(graph, ref.reshape(1, -1), "q_reference")
        above = graph.reduce("ReduceSum", graph.cast(graph.less(graph.unsqueeze(q, [1]), ref_c)),
                             [1], keepdims=True)                        # #{ref > q} = n (1 - F)
        p = graph.add(graph.mul(above, np.float32((p_max - p_min) / len(ref))), np.float32(p_min))
        k = graph.sub(np.float32(d), _layer(graph, "Round", [graph.mul(p, np.float32(d / 100.0))]))
        k_max = int(self._k(p_min))
        a = graph.relu(t["z"])
        top, _ = graph.topk(a, k_max, axis=1)
        keep = graph.cast(graph.less(np.arange(k_max, dtype=np.float32).reshape(1, -1), k))
        r = graph.div(graph.reduce("ReduceSum", a, [1], keepdims=True),
                      graph.reduce("ReduceSum", graph.mul(top, keep), [1], keepdims=True))
        if self.variant == "A":
            logits = rescale_logits(graph, self.head, t["logits"], graph.exp(r))
        else:
            logits = graph.mul(t["logits"], graph.mul(r, r))
        return graph.logsumexp(logits, 1)

    def reference(self, taps):
        """Steps 3-6 in NumPy from z, z' (the perturbed pass) and the logits."""
        z = np.asarray(taps["z"], np.float64)
        zp = np.asarray(taps["z_perturbed"], np.float64)
        k1, k2 = self._k12()
        order = np.argsort(-z, axis=1, kind="stable")
        q = self.params["lambda_"] * np.take_along_axis(np.abs(z - zp), order[:, :k1], 1).sum(1) \
            + np.take_along_axis(np.maximum(zp, 0), order[:, :k2], 1).sum(1)
        ref = np.asarray(self.fitted["q_reference"], np.float64)
        ecdf = np.searchsorted(ref, q.astype(np.float32).astype(np.float64), side="right") / len(ref)
        p = self.params["p_min"] + (1 - ecdf) * (self.params["p_max"] - self.params["p_min"])
        k = self._k(p).astype(int)
        a = np.maximum(z, 0)
        srt = -np.sort(-a, axis=1)
        top = np.array([srt[i, :k[i]].sum() for i in range(len(a))])
        r = a.sum(1) / top
        logits = np.asarray(taps["logits"], np.float64)
        if self.variant == "A":
            b = self.head.bias.astype(np.float64)
            logits = (logits - b) * np.exp(r)[:, None] + b
        else:
            logits = logits * (r * r)[:, None]
        return logsumexp(logits)

    def describe(self):
        d = super().describe()
        d.pop("q_reference", None)
        if self.model is not None:
            d["k1n"], d["k2n"] = self._k12()
        if "q_reference" in self.fitted:
            d["q_reference_size"] = int(len(self.fitted["q_reference"]))
        return d


def _gather(graph, data, idx):
    return _layer(graph, "GatherElements", [data, idx], {"axis": 1})


@register
class AdaScaleA(_AdaScale):
    """AdaSCALE-A: logits' = W (z exp(r)) + b (see the module docstring)."""

    name = "adascale_a"
    variant = "A"


@register
class AdaScaleL(_AdaScale):
    """AdaSCALE-L: logits' = (W z + b) r^2 (see the module docstring)."""

    name = "adascale_l"
    variant = "L"
