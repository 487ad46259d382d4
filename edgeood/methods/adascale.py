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
follow the formulas above in both places (they match the original, consistent release). The
least-|g| set is exact with the lower-index tie rule: one unsorted TopK of n (selection=topk,
topk_limit=0, the default: on ONNX Runtime CPU faster than rounds or the search, as measured
in benchmarks/bench_adascale.py; TensorRT paths split a K >= 3840 into exact rounds,
edgeood.tensorrt.rewrite); with
topk_limit=L, successive TopK rounds of at most L, each excluding the elements already chosen
(a graph TensorRT parses as it is); or a 32-step search for the n-th smallest |g| over the
float32 bits and a CumSum over its ties (selection=search, ~220 nodes more). In the graph
W (z exp(r)) + b is the head's own Gemm applied to z exp(r).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.artifact.names import MAX_REFERENCE, TOPK_LIMIT
from edgeood.errors import EdgeoodError
from edgeood.graph.autodiff import input_gradient
from edgeood.graph.head import apply_head
from edgeood.graph.ops import constant
from edgeood.graph.subgraph import clone_between
from edgeood.methods import presentation
from edgeood.methods.base import Method, register
from edgeood.methods.blocks.ecdf import count_above_graph, ecdf, sorted_reference
from edgeood.methods.numeric import logsumexp

TUNE_GRID = [65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]
# over a float16 / int8 backbone: the gradient and second pass on a float32 copy, or in the
# backbone's precision (see _AdaScale._gradient)
PASS_PRECISIONS = ("float32", "backbone")
SMALL_D = 100  # below this, floor(D k1 / 100) = 0 at the default k1 = 1


# --- graph pieces -----------------------------------------------------------------------------
SELECTIONS = ("topk", "search")


def least_mask(graph: gs.Graph, v: gs.Tensor, n: int, limit: int = 0,
               selection: str = "topk") -> gs.Variable:
    """float32 [N, L] mask of the n smallest entries per row of v >= 0 (ties: lower index).
    limit = 0 or n <= limit: one unsorted TopK of n (on ONNX Runtime CPU faster than a sorted
    TopK or two rounds; TensorRT paths split a K >= 3840 into rounds,
    edgeood.tensorrt.rewrite). Two exact forms TensorRT parses as they
    stand:
    - "topk" with 0 < limit < n: TopK rounds of at most `limit`, each excluding the entries
      already chosen (ScatterElements).
    - "search" (n > limit): the n-th smallest value found by a fixed 32-step search
      (_nth_smallest), then the entries below it and, of those equal to it, the first ones by
      index (CumSum); about 220 nodes more.
    """
    if n <= 0:
        return graph.mul(v, np.float32(0))
    idx = least_indices(graph, v, n, limit, selection)
    if idx is not None:
        return graph.scatter_elements(graph.fill_like(v, 0.0), idx, graph.fill_like(idx, 1.0))
    t = _nth_smallest(graph, v, n)  # "search"
    below = graph.cast(graph.less(v, t))
    rest = graph.sub(np.float32(n), graph.reduce("ReduceSum", below, [1], keepdims=True))
    tied = graph.cast(graph.equal(v, t))
    first = graph.cast(graph.less_equal(graph.cumsum(tied, 1), rest))
    return graph.add(below, graph.mul(tied, first))


def least_indices(graph: gs.Graph, v: gs.Tensor, n: int, limit: int = 0,
                  selection: str = "topk") -> gs.Variable | None:
    """int64 [N, n] indices of least_mask's entries (in no particular order), for the TopK
    forms; None for "search" (a mask, no indices) and n <= 0."""
    if n <= 0 or (selection == "search" and n > limit):
        return None
    if limit <= 0 or n <= limit:
        return graph.topk(v, n, axis=1, largest=False, sorted=False)[1]
    parts, cur, left = [], v, n
    while left > 0:
        k = min(left, limit)
        _, idx = graph.topk(cur, k, axis=1, largest=False)
        parts.append(idx)
        left -= k
        if left > 0:
            cur = graph.scatter_elements(cur, idx, graph.fill_like(idx, np.inf))
    return parts[0] if len(parts) == 1 else graph.concat(parts, axis=1)


_POW2 = np.zeros(512, np.float32)  # _POW2[i] = 2^(i - 150) (i >= 1; +inf past 2^127), 0 at i = 0
_POW2[1:] = np.where(np.arange(1, 512) - 150 <= 127,
                     np.ldexp(1.0, np.minimum(np.arange(1, 512) - 150, 127)), np.inf)


def _nth_smallest(graph: gs.Graph, v: gs.Tensor, n: int) -> gs.Variable:
    """[N, 1]: the n-th smallest entry of each row of v (float32 >= 0), exactly: the largest
    float u with #{v < u} < n, built bit by bit from the top, as a fixed sequence of counts
    (Less, Cast, ReduceSum). First the binade 2^E (9 steps over E in [-149, 127], the powers
    of two gathered from a constant table, 0 when u < 2^-149), then the 23 mantissa bits: each
    candidate u + 2^(E-k) is exact within the binade (underflowing steps are exactly 0)."""
    table = constant(graph, _POW2)
    count_ok = lambda u: graph.less(  # noqa: E731
        graph.reduce("ReduceSum", graph.cast(graph.less(v, u)), [1], keepdims=True), np.float32(n))
    index = None  # float [N, 1] index into the table (exact small integers)
    for bit in (256, 128, 64, 32, 16, 8, 4, 2, 1):
        cand = np.full([1, 1], bit, np.float32) if index is None else graph.add(index, np.float32(bit))
        value = graph.gather(table, graph.cast(cand, np.int64))
        index = graph.where(count_ok(value), cand, np.zeros([1, 1], np.float32) if index is None
                            else index)
    base = graph.gather(table, graph.cast(index, np.int64))
    u = base
    for k in range(1, 24):
        cand = graph.add(u, graph.mul(base, np.float32(2.0 ** -k)))
        u = graph.where(count_ok(cand), cand, u)
    return u


def least_mask_reference(v: np.ndarray, n: int) -> np.ndarray:
    """NumPy: the n smallest per row, ties to the lower index (stable sort)."""
    order = np.argsort(v, axis=1, kind="stable")[:, :n]
    mask = np.zeros(v.shape, np.float32)
    np.put_along_axis(mask, order, 1.0, axis=1)
    return mask


class _AdaScale(Method):
    variant = "A"
    defaults = {"lambda_": 10.0, "o": 0.05, "eps": 0.5, "k1": 1.0, "k2": 5.0, "p_min": 60.0,
                "p_max": 90.0, "topk_limit": 0, "pass_precision": "float32",
                "selection": "topk"}
    graph_arrays = ("q_reference",)
    tune_space = {"p_max": TUNE_GRID}
    needs_fit = True
    needs_linear_head = True

    def validate(self):
        p = self.params
        if not 0 <= p["p_min"] < p["p_max"] < 100:
            raise EdgeoodError(f"{self.name}: need 0 <= p_min < p_max < 100 (got p_min="
                               f"{p['p_min']}, p_max={p['p_max']})")
        if not 0 < p["o"] <= 1 or not 0 <= p["k1"] <= 100 or not 0 <= p["k2"] <= 100:
            raise EdgeoodError(f"{self.name}: o must be in (0, 1], k1 and k2 in [0, 100]")
        if not 0 <= int(p["topk_limit"]) <= TOPK_LIMIT:
            raise EdgeoodError(f"{self.name}.topk_limit must be 0 (one TopK of n) or in "
                               f"[1, {TOPK_LIMIT}] (rounds within TensorRT's TopK limit)")
        if p["selection"] not in SELECTIONS:
            raise EdgeoodError(f"{self.name}.selection must be topk (one TopK, or rounds of "
                               "topk_limit) or search (a 32-step threshold search)")
        if p["pass_precision"] not in PASS_PRECISIONS:
            raise EdgeoodError(f"{self.name}.pass_precision must be one of "
                               f"{', '.join(PASS_PRECISIONS)}")

    def check_model(self, model):
        d = model.head.feature_dim
        k1n, k2n = self._k12()
        if d < SMALL_D and k1n == 0:
            self.warnings.append(
                f"{self.name}: D = {d} penultimate features gives k1n = floor(D k1 / 100) = 0 "
                f"(k2n = {k2n}), so the shift term Q vanishes and Q' = C_o alone can rank ID "
                f"below OOD; raise k1 (e.g. --param {self.name}.k1={100.0 / d * 2:.3g}) or tune "
                "p_max with --tune")

    # derived sizes
    def _k12(self):
        d = self.head.feature_dim
        return int(np.floor(d * self.params["k1"] / 100)), int(np.floor(d * self.params["k2"] / 100))

    def _k(self, p):
        d = self.head.feature_dim
        return d - np.round(d * np.asarray(p, np.float64) / 100.0)

    @property
    def z_perturbed_key(self) -> str:
        return f"{self.name}/z_perturbed"

    @property
    def z_first_key(self) -> str:
        """z of the float32 first pass that Q compares z' with (float32 passes over a float16
        or int8 backbone); else Q reads the backbone's own z."""
        return f"{self.name}/z_first"

    def _float32_passes(self) -> bool:
        precision = self.model.precision if self.model is not None else "float32"
        return precision != "float32" and self.params["pass_precision"] == "float32"

    # --- the perturbation statistic Q' (shared by fit and score graphs) -----------------------
    def _q_graph(self, graph, t):
        x, logits, z = t["input"], t["logits"], t["z"]
        chw = [int(v) for v in x.shape[1:]]
        n = int(np.prod(chw) * self.params["o"])
        grad, z32 = self._gradient(graph, x, logits, z)
        limit, selection = int(self.params["topk_limit"]), self.params["selection"]
        g = graph.reshape(grad, [0, -1])
        flat = graph.abs_(g)
        idx = least_indices(graph, flat, n, limit, selection)
        eps = np.float32(self.params["eps"])
        # constant target shapes (batch copied by the 0): no int64 Shape node, which ONNX
        # Runtime's CUDA provider would run on the CPU
        if idx is not None:  # x + eps sign(g) written at the n indices: no full-size mask
            xf = graph.reshape(x, [0, -1])
            moved = graph.add(graph.gather_elements(xf, idx),
                              graph.mul(graph.sign(graph.gather_elements(g, idx)), eps))
            x_new = graph.reshape(graph.scatter_elements(xf, idx, moved), [0, *chw])
        else:
            mask = least_mask(graph, flat, n, limit, selection)
            step = graph.mul(graph.sign(grad), eps)
            x_new = graph.add(x, graph.mul(step, graph.reshape(mask, [0, *chw])))
        if z32 is not None:  # float32 second pass over the float32 copy; Q against its z
            z_new = clone_between(graph, x, z32, x_new)
            t[self.z_first_key] = z = z32
        else:
            z_new = clone_between(graph, x, z, x_new)
        k1, k2 = self._k12()
        q = None
        if max(k1, k2) > 0:
            _, idx = graph.topk(z, max(k1, k2), axis=1)
            if k1 > 0:
                i1 = idx if k1 == max(k1, k2) else graph.slice_(idx, 0, k1, axis=1)
                diff = graph.abs_(graph.sub(z, z_new))
                q = graph.mul(graph.reduce("ReduceSum", graph.gather_elements(diff, i1), [1]),
                              np.float32(self.params["lambda_"]))
            if k2 > 0:
                i2 = idx if k2 == max(k1, k2) else graph.slice_(idx, 0, k2, axis=1)
                c_o = graph.reduce("ReduceSum", graph.gather_elements(graph.relu(z_new), i2), [1])
                q = c_o if q is None else graph.add(q, c_o)
        if q is None:
            q = graph.mul(graph.reduce("ReduceSum", z, [1]), np.float32(0))
        return q, z_new

    def _gradient(self, graph, x, logits, z):
        """(g, z of the float32 copy or None). Over a float16 / int8 backbone autodiff runs on
        a float32 copy of it (edgeood.graph.precision.float32_copy: the reduced weights upcast
        or dequantized). pass_precision=float32 keeps the gradient and the second pass on that
        copy; backbone runs the gradient in float16 (float16 backbone; an int8 one has no int8
        backward, so float32) and the second pass on the backbone itself."""
        precision = self.model.precision if self.model is not None else "float32"
        if precision == "float32":
            return input_gradient(graph, x, logits, self.head.num_classes,
                                  name=f"{self.name}/grad"), None
        from edgeood.graph.precision import float32_copy, to_half
        before = {id(n) for n in graph.nodes}
        logits32, z32 = float32_copy(graph, x, [logits, z], f"{self.name}/float32")
        grad = input_gradient(graph, x, logits32, self.head.num_classes,
                              name=f"{self.name}/grad")
        if self._float32_passes():
            return grad, z32
        if precision == "float16":
            graph.toposort()
            to_half(graph, [n for n in graph.nodes if id(n) not in before], keep_names=False,
                    keep=(grad,))
        return grad, None

    # --- calibration --------------------------------------------------------------------------
    def fit_graph(self, graph, t):
        q, z_new = self._q_graph(graph, t)
        out = {f"{self.name}/q": q, self.z_perturbed_key: z_new}
        if self.z_first_key in t:
            out[self.z_first_key] = t[self.z_first_key]
        return out

    def fit_update(self, taps, source):
        if source == "id":
            self.scratch.setdefault("q", []).append(np.asarray(taps[f"{self.name}/q"], np.float32))

    def fit_end(self):
        self.fitted["q_reference"] = sorted_reference(np.concatenate(self.scratch["q"]),
                                                      MAX_REFERENCE)

    def tune_taps(self):
        return ["z", "logits", self.z_perturbed_key] + \
            ([self.z_first_key] if self._float32_passes() else [])

    # --- scoring ------------------------------------------------------------------------------
    def taps(self):
        return ["input", "z", "logits"]

    def build(self, graph, t):
        q, z_new = self._q_graph(graph, t)
        t[self.z_perturbed_key] = z_new
        n_ref = self.fitted["q_reference"].size
        d = self.head.feature_dim
        p_min, p_max = self.params["p_min"], self.params["p_max"]
        above = count_above_graph(graph, q, self.array_constant(graph, "q_reference"))
        p = graph.add(graph.mul(above, np.float32((p_max - p_min) / n_ref)), np.float32(p_min))
        k = graph.sub(np.float32(d), graph.round_(graph.mul(p, np.float32(d / 100.0))))
        k_max = int(self._k(p_min))
        a = graph.relu(t["z"])
        top, _ = graph.topk(a, k_max, axis=1)
        keep = graph.cast(graph.less(np.arange(k_max, dtype=np.float32).reshape(1, -1), k))
        r = graph.div(graph.reduce("ReduceSum", a, [1], keepdims=True),
                      graph.reduce("ReduceSum", graph.mul(top, keep), [1], keepdims=True))
        if self.variant == "A":
            logits = apply_head(graph, self.head, graph.mul(t["z"], graph.exp(r)))
        else:
            logits = graph.mul(t["logits"], graph.mul(r, r))
        return graph.logsumexp(logits, 1)

    def reference(self, taps):
        """Steps 3-6 in NumPy from z, z' (the perturbed pass, tap '<name>/z_perturbed') and
        the logits."""
        z = np.asarray(taps["z"], np.float64)
        zp = np.asarray(taps[self.z_perturbed_key], np.float64)
        z1 = np.asarray(taps.get(self.z_first_key, z), np.float64)  # Q's first pass
        k1, k2 = self._k12()
        order = np.argsort(-z1, axis=1, kind="stable")
        q = self.params["lambda_"] * np.take_along_axis(np.abs(z1 - zp), order[:, :k1], 1).sum(1) \
            + np.take_along_axis(np.maximum(zp, 0), order[:, :k2], 1).sum(1)
        f = ecdf(q, self.fitted["q_reference"])
        p = self.params["p_min"] + (1 - f) * (self.params["p_max"] - self.params["p_min"])
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

    def derived(self):
        k1n, k2n = self._k12()
        out = {"k1n": k1n, "k2n": k2n}
        if "q_reference" in self.fitted:
            out["q_reference_size"] = int(self.fitted["q_reference"].size)
        return out

    class Presentation(presentation.Presentation):
        fits = "sorted ID Q′ (≤ 5000)"
        head_nodes = "about the backbone's nodes again (its input gradient)"
        constant_bytes = "4*Q"
        constant_example = {"Q": 5000}
        cost_note = "Q: ID reference values (<= 5000)"
        notes = "input gradient built as graph nodes; `--tune` picks p_max against jigsaw images"
        # p_max chosen against jigsaw pseudo-OOD (the defaults invert on the small digits CNN)
        demo_params = {"tune": True}

        def summary(self, entry):
            tuned = super().summary(entry)
            return tuned or (f"ECDF of {entry['q_reference_size']} Q' values"
                             if "q_reference_size" in entry else "")


@register
class AdaScaleA(_AdaScale):
    """AdaSCALE-A: logits' = W (z exp(r)) + b (see the module docstring)."""

    name = "adascale_a"
    variant = "A"
    order = 70

    class Presentation(_AdaScale.Presentation):
        score = ("SCALE with a per-image percentile p from the ECDF of Q′ (how the top "
                 "activations move when the least-|g| 5% of the input is nudged along "
                 "sign(g)); W(z e^r)+b")


@register
class AdaScaleL(_AdaScale):
    """AdaSCALE-L: logits' = (W z + b) r^2 (see the module docstring)."""

    name = "adascale_l"
    variant = "L"
    order = 71

    class Presentation(_AdaScale.Presentation):
        score = "AdaSCALE's per-image percentile, as adascale_a; (Wz+b) r²"
