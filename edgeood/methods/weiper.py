"""WeiPer (Granz et al., NeurIPS 2024): perturbed class projections, +MSP and +KLD.

W~_{i,c} = W_c + delta ||W_c|| n_{i,c} / ||n_{i,c}||, n ~ N(0, I_D), i = 1..r, drawn once from
a seeded generator and frozen into the graph; L~ = W~ z + b~ (r C values).
- weiper_msp: MSP_W = (1/r) sum_i max_c softmax(W~_i z + b)_c.
- weiper_kld: score = -(d_z + lambda1 d_L - lambda2 MSP_W), d the symmetric KL divergence
  between the mean ID histogram (of z values, resp. L~ values) and the sample's own histogram,
  smoothed with a uniform kernel (replicate padding); see methods.md for every detail.

In the graph, W~ is stored as the perturbation P only (W~ z = W z + P z, and W z + b are the
classifier's own logits), optionally in float16 (`storage=float16`; the head computes in
float32) or int8 (`storage=int8`: weight-only, per-row symmetric scales, DequantizeLinear).
Over a reduced-precision backbone the projection follows it (`projection=backbone`, the
default): P z as a float16 Gemm over a float16 backbone, P stored int8 over an int8 one;
`projection=float32` keeps it float32.

Histograms (`histogram=auto`, the default) are exact integer counts, as `histograms()`. At
opset >= 16, for rows of at least SCATTER_MIN_VALUES values, each value gets a bin index and one
ScatterElements(reduction="add") counts them (O(M), not O(M E)): the uniform-spacing estimate
u = (v - c) s, half a bin above the bin's index (c = e_0 - w / 2, s = 1 / w, w = (e_n - e_0) / n),
clamped to [0, n] (NaN and -inf to 0, +inf to n) and truncated to k, is corrected by one
GatherElements of the edges, j = k + [e_k <= v]: 0 below e_0 (and NaN), i + 1 in bin i, n + 1
at or above e_n; bins 1..n are kept. The float32 edges are not uniformly spaced (linspace in
float64, rounded; the nudged last edge), so the plain floor estimate misses by one next to
edges; the correction is exact wherever k is j - 1 or j, and `bin_estimator` proves that for
every float32 v at build time (u and j are monotone in v: checking u at each edge and at the
float32 below it covers all v), with a quarter bin to spare for other backends' rounding;
where it does not hold (edges a few ulps apart) the histogram keeps compare-and-count. That
form (below opset 16, rows under SCATTER_MIN_VALUES, `histogram=compare`): counts of values
below each edge (Less + ReduceSum over [N, E, M]) and their differences, which every TensorRT
parser builds without plugins. TensorRT 10 builds the scatter with its ScatterElements plugin
(libnvinfer_plugin); TensorRT 8.6's parser ignores the reduction (`edgeood check --target
trt8.6` reports it).

Deviations from the official code, documented: it redraws the perturbation for every batch (a
keyword-argument mismatch) and averages histograms of more than 1000 values per 1000-value
chunk; edgeood uses one frozen matrix and exact histograms. The last histogram edge is
max + 1e-8 as specified; where that rounds to max in float32 it is moved to the next float32,
so the maximum still falls in the last bin.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from edgeood.errors import EdgeoodError
from edgeood.graph.ops import constant, scope
from edgeood.methods.base import Method, register
from edgeood.methods.numeric import softmax

# (r, delta, n_bins, lambda1, lambda2, s1, s2) from methods.md, chosen by the number of classes
PRESETS = {
    "cifar10": (100, 1.8, 100, 2.5, 0.1, 4, 15),
    "cifar100": (100, 2.4, 100, 0.1, 1.0, 4, 40),
    "imagenet": (100, 2.4, 100, 2.5, 0.25, 40, 15),
}
KEYS = ("r", "delta", "n_bins", "lambda1", "lambda2", "s1", "s2")
EPS_Z, EPS_L = 0.01, 0.025
STORAGES = ("float32", "float16", "int8")  # int8: weight-only, DequantizeLinear per row
HISTOGRAMS = ("auto", "scatter", "compare")
SCATTER_MIN_VALUES = 1024   # auto: rows of fewer values keep compare-and-count (cheap there)
SCATTER_MARGIN = 0.25       # bins of slack bin_estimator leaves to other backends' arithmetic


def preset_for(num_classes: int) -> str:
    return "cifar10" if num_classes <= 10 else "cifar100" if num_classes <= 100 else "imagenet"


def perturbation(weight: np.ndarray, r: int, delta: float, seed: int) -> np.ndarray:
    """P (r C x D, float32) with W~ = tile(W, r) + P; row i*C + c perturbs class c in repeat i."""
    c, d = weight.shape
    rng = np.random.default_rng(seed)
    norms = np.linalg.norm(weight.astype(np.float64), axis=1, keepdims=True)
    out = np.empty((r * c, d), np.float32)
    for i in range(r):  # one repeat at a time: ImageNet heads would need GBs in float64
        n = rng.standard_normal((c, d))
        out[i * c:(i + 1) * c] = delta * norms * n / np.linalg.norm(n, axis=1, keepdims=True)
    return out


def quantize_rows(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 (no zero point): (q int8, scale float32), p ~ q * scale."""
    amax = np.abs(p.astype(np.float32)).max(axis=1)
    scale = (np.where(amax > 0, amax, 1.0) / 127.0).astype(np.float32)
    q = np.clip(np.round(p.astype(np.float32) / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def histogram_edges(lo: float, hi: float, n_bins: int) -> np.ndarray:
    edges = np.linspace(lo, hi + 1e-8, n_bins + 1).astype(np.float32)
    if edges[-1] <= np.float32(hi):
        edges[-1] = np.nextafter(np.float32(hi), np.float32(np.inf))
    return edges


def histograms(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per-row histograms over [e_j, e_j+1), outside values dropped, divided by the row length."""
    v = np.asarray(values, np.float32)
    below = np.stack([(v < e).sum(axis=1) for e in edges], axis=1)
    return np.diff(below, axis=1) / v.shape[1]


def bin_estimator(edges: np.ndarray, margin: float = SCATTER_MARGIN):
    """(c, s), float32, such that for every float32 v the in-graph estimate
    k = trunc(clamp(fl(fl(v - c) * s), 0, n)) is j - 1 or j, j = #{edges <= v} (so that
    k + [v >= e_k] = j); None where the edges are too far from uniform for that (then the
    histogram keeps compare-and-count).

    u = fl(fl(v - c) * s) and j are both non-decreasing in v, so on each interval where j is
    constant, [e_a, e_b), u is smallest at e_a and largest at the float32 below e_b: checking u
    at every edge and at its float32 predecessor checks every float32 v. Required there, with
    `margin` bins to spare: u >= j - 1 + margin (not for j = 0: clamped to 0) and
    u < j + 1 - margin (not for j = n + 1: clamped to n)."""
    e = np.asarray(edges, np.float32).ravel()
    n = len(e) - 1
    if n < 1 or not np.all(np.isfinite(e)) or np.any(np.diff(e) < 0):
        return None
    width = (float(e[-1]) - float(e[0])) / n
    if not width > 0 or not np.isfinite(1.0 / width):
        return None
    s = np.float32(1.0 / width)
    c = np.float32(float(e[0]) - 0.5 * width)
    pts = np.concatenate([e, np.nextafter(e, np.float32(-np.inf))])
    with np.errstate(over="ignore", invalid="ignore"):
        u = (pts - c) * s  # float32 arithmetic, as the graph's Sub and Mul
    j = np.searchsorted(e, pts, side="right")
    ok = np.isfinite(u) & ((j == 0) | (u >= j - 1 + margin)) & ((j == n + 1) | (u < j + 1 - margin))
    return (c, s) if bool(ok.all()) else None


def histogram_form(edges: np.ndarray, length: int, opset: int, requested: str = "auto") -> str:
    """'scatter' or 'compare': how the graph counts a row of `length` values against edges."""
    if requested == "compare" or opset < 16:
        return "compare"
    if requested == "auto" and length < SCATTER_MIN_VALUES:
        return "compare"
    return "scatter" if bin_estimator(edges) is not None else "compare"


def edges_constant(graph, edges: np.ndarray, form: str, name: str):
    """The edges as the constant `name`, shaped for `form`: [1, E, 1] (compare), [1, E]."""
    edges = np.asarray(edges, np.float32).ravel()
    return constant(graph, edges.reshape((1, -1, 1) if form == "compare" else (1, -1)), name)


def graph_bin_counts(graph, v, edges: np.ndarray, length: int, form: str, e=None):
    """[N, n] float32 counts of each row of v ([N, length]) over [e_i, e_i+1), values outside
    [e_0, e_n) (and NaN) dropped: exactly np.diff of the counts below each edge. e: the
    edges_constant for form (made here, unnamed, when None)."""
    edges = np.asarray(edges, np.float32).ravel()
    n = len(edges) - 1
    if e is None:
        e = edges_constant(graph, edges, form, None)
    if form == "compare":
        # [N, E, M] so that the count is a contiguous reduction over the values (the [N, M, E]
        # orientation reduces over a strided axis and measured several times slower)
        below = graph.reduce("ReduceSum", graph.cast(graph.less(graph.unsqueeze(v, [1]), e)), [2])
        return graph.sub(graph.slice_(below, 1, n + 1, axis=1), graph.slice_(below, 0, n, axis=1))
    c, s = bin_estimator(edges)
    u = graph.mul(graph.sub(v, c), s)
    u = graph.where(graph.greater(u, np.float32(0)), u, np.float32(0))  # NaN, -inf -> 0
    k = graph.cast(graph.minimum(u, np.float32(n)), np.int64)           # +inf -> n; trunc
    # GatherElements over one row of edges (ORT's is ~10x faster per index than Gather's)
    ek = graph.reshape(graph.gather_elements(e, graph.reshape(k, [1, -1]), axis=1), [-1, length])
    j = graph.add(k, graph.cast(graph.less_equal(ek, v), np.int64))    # NaN: e_k <= v false
    j.dtype = np.int64  # graph.add declares float32
    ones = graph.fill_like(v, 1.0)
    if length >= n + 2:  # the [N, n + 2] zeros cut from the ones: 2 nodes, no shape arithmetic
        zeros = graph.mul(graph.slice_(ones, 0, n + 2, axis=1), np.float32(0))
    else:
        rows = graph.slice_(graph.shape(v), 0, 1, axis=0)
        zeros = graph.fill(graph.concat([rows, np.asarray([n + 2], np.int64)], axis=0), 0.0)
    counts = graph.scatter_elements(zeros, j, ones, axis=1, reduction="add")
    return graph.slice_(counts, 1, n + 1, axis=1)


def smooth(h: np.ndarray, s: int) -> np.ndarray:
    """Uniform kernel of size s, replicate padding floor((s-1)/2) left and s-1-left right."""
    if s <= 1:
        return h
    left = (s - 1) // 2
    padded = np.concatenate([np.repeat(h[:, :1], left, 1), h, np.repeat(h[:, -1:], s - 1 - left, 1)], 1)
    c = np.cumsum(np.pad(padded, ((0, 0), (1, 0))), axis=1)
    return (c[:, s:] - c[:, :-s]) / s


def sym_kl(p_train: np.ndarray, q: np.ndarray, eps: float) -> np.ndarray:
    p = (p_train + eps) / (p_train + eps).sum()
    qq = (q + eps) / (q + eps).sum(axis=1, keepdims=True)
    return ((p - qq) * (np.log(p) - np.log(qq))).sum(axis=1)


class _WeiPer(Method):
    uses_kld = False
    defaults = {"r": 0, "delta": math.nan, "n_bins": 0, "lambda1": math.nan, "lambda2": math.nan,
                "s1": 0, "s2": 0, "seed": 0, "storage": "float32", "projection": "backbone",
                "histogram": "auto"}
    fitted_keys = ("edges_z", "edges_L", "p_z", "p_L")
    needs_fit = True
    needs_linear_head = True

    def validate(self):
        if self.params["storage"] not in STORAGES:
            raise EdgeoodError(f"{self.name}.storage must be one of {', '.join(STORAGES)}")
        if self.params["histogram"] not in HISTOGRAMS:
            raise EdgeoodError(f"{self.name}.histogram must be one of {', '.join(HISTOGRAMS)} "
                               "(compare: compare-and-count, which TensorRT 8.6 builds; scatter: "
                               "bin index + ScatterElements add, opset >= 16)")
        if self.params["projection"] not in ("float32", "backbone"):
            raise EdgeoodError(f"{self.name}.projection must be float32 or backbone (the "
                               "backbone's precision: float16 P and Gemm on a --half detector, "
                               "int8 P on an --int8 one)")

    def bind(self, model):
        super().bind(model)
        if self.params["projection"] == "backbone" and model.precision != "float32" and \
                self.params["storage"] == "float32":
            # the projection follows the backbone (drift measured within the targets, README
            # "Reduced precision"): float16 P and Gemm over float16, int8 P over int8
            self.params["storage"] = "float16" if model.precision == "float16" else "int8"
        preset = preset_for(self.head.num_classes)
        for key, value in zip(KEYS, PRESETS[preset]):
            cur = self.params[key]
            if cur == 0 or (isinstance(cur, float) and math.isnan(cur)):
                self.params[key] = type(self.defaults[key])(value)
        self.preset = preset
        if self.params["r"] < 1 or self.params["n_bins"] < 1:
            raise EdgeoodError(f"{self.name}: r and n_bins must be >= 1")
        self._p = None

    @property
    def fit_passes(self):  # type: ignore[override]
        return 2 if self.uses_kld else 1

    def perturbation(self) -> np.ndarray:
        if self._p is None:
            self._p = perturbation(self.head.weight, int(self.params["r"]),
                                   float(self.params["delta"]), int(self.params["seed"]))
            if self.params["storage"] == "float16":
                self._p = self._p.astype(np.float16)
            elif self.params["storage"] == "int8":  # weight-only, per-row symmetric
                self._q = quantize_rows(self._p)
                self._p = self._q[0].astype(np.float32) * self._q[1][:, None]
        return self._p

    def _half_projection(self) -> bool:
        precision = self.model.precision if self.model is not None else "float32"
        return self.params["projection"] == "backbone" and precision == "float16"

    def perturbed_logits(self, z, logits) -> np.ndarray:
        """L~ = tile(logits, r) + z P^T (float64 reference)."""
        p = self.perturbation().astype(np.float64)
        return np.tile(np.asarray(logits, np.float64), int(self.params["r"])) + \
            np.asarray(z, np.float64) @ p.T

    # --- graph --------------------------------------------------------------------------------
    def _graph_perturbed_logits(self, graph, t):
        """L~ = tile(logits, r) + z P^T. weiper_msp and weiper_kld with the same (seed, r,
        delta, storage) share one perturbation constant and one projection per graph."""
        key = (int(self.params["seed"]), int(self.params["r"]), float(self.params["delta"]),
               self.params["storage"]) + (("float16",) if self._half_projection() else ())
        shared = graph.__dict__.setdefault("_edgeood_weiper", {})
        if key not in shared:
            p = self.perturbation()
            tag = hashlib.sha256(repr(key[:4]).encode()).hexdigest()[:8]
            half = self._half_projection()
            with scope(graph, "weiper"):
                if self.params["storage"] == "int8":
                    q, s = self._q
                    pc = graph.dequantize(constant(graph, q, f"perturbation_{tag}", np.int8),
                                          constant(graph, s, f"perturbation_{tag}_scale"), 0)
                    if half:
                        pc = graph.cast(pc, np.float16)
                elif half:  # float16 Gemm over a float16 backbone (weights stored float16)
                    pc = constant(graph, p, f"perturbation_{tag}", dtype=np.float16)
                else:
                    pc = constant(graph, p, f"perturbation_{tag}", dtype=p.dtype)
                    if p.dtype != np.float32:
                        pc = graph.cast(pc)
                if half:
                    pz = graph.cast(graph.gemm(graph.cast(t["z"], np.float16), pc, trans_b=True,
                                               dtype=np.float16))
                else:
                    pz = graph.gemm(t["z"], pc, trans_b=True)
                tiled = graph.tile(t["logits"], [1, key[1]])
                shared[key] = graph.add(tiled, pz)
        return shared[key]

    def _graph_msp(self, graph, lt):
        c = self.head.num_classes
        rc = graph.reshape(lt, [0, int(self.params["r"]), c])
        top = graph.reduce("ReduceMax", graph.softmax(rc, 2), [2])  # 2 nodes, max-shifted
        return graph.reduce("ReduceMean", top, [1])

    # --- calibration --------------------------------------------------------------------------
    def fit_graph(self, graph, t):
        return {f"{self.name}/perturbed_logits": self._graph_perturbed_logits(graph, t)}

    def fit_taps(self):
        return ["z"]

    def fit_update(self, taps, source):
        if source != "id" or not self.uses_kld:
            return
        z, lt = taps["z"], taps[f"{self.name}/perturbed_logits"]
        f, sc = self.fitted, self.scratch
        if "edges_z" not in f:  # pass 1: global min / max
            for key, v in (("z", z), ("L", lt)):
                sc[f"min_{key}"] = min(sc.get(f"min_{key}", np.inf), float(v.min()))
                sc[f"max_{key}"] = max(sc.get(f"max_{key}", -np.inf), float(v.max()))
            return
        for key, v in (("z", z), ("L", lt)):  # pass 2: sum of per-sample histograms
            sc[f"sum_{key}"] = sc.get(f"sum_{key}", 0.0) + histograms(v, f[f"edges_{key}"]).sum(0)
        sc["count"] = sc.get("count", 0) + len(z)

    def fit_pass_end(self, index):
        if index == 0:
            n = int(self.params["n_bins"])
            for key in ("z", "L"):
                self.fitted[f"edges_{key}"] = histogram_edges(self.scratch[f"min_{key}"],
                                                              self.scratch[f"max_{key}"], n)

    def fit_end(self):
        if self.uses_kld:
            count = self.scratch["count"]
            for key in ("z", "L"):
                self.fitted[f"p_{key}"] = (self.scratch[f"sum_{key}"] / count).astype(np.float64)

    # --- scoring ------------------------------------------------------------------------------
    def taps(self):
        return ["z", "logits"]

    def build(self, graph, t):
        lt = self._graph_perturbed_logits(graph, t)
        t[f"{self.name}/perturbed_logits"] = lt
        msp = self._graph_msp(graph, lt)
        if not self.uses_kld:
            return msp
        dz = self._graph_kld(graph, t["z"], "z", int(self.params["s1"]), EPS_Z)
        dl = self._graph_kld(graph, lt, "L", int(self.params["s2"]), EPS_L)
        total = graph.add(dz, graph.mul(dl, np.float32(self.params["lambda1"])))
        return graph.sub(graph.mul(msp, np.float32(self.params["lambda2"])), total)

    def _graph_kld(self, graph, v, key, s, eps):
        edges = np.asarray(self.fitted[f"edges_{key}"], np.float32)
        length = self.head.feature_dim if key == "z" else \
            int(self.params["r"]) * self.head.num_classes
        if self.params["histogram"] == "scatter" and graph.opset < 16:
            raise EdgeoodError(f"{self.name}.histogram=scatter needs opset >= 16 (ScatterElements "
                               f"with reduction); this graph has opset {graph.opset}")
        form = histogram_form(edges, length, graph.opset, self.params["histogram"])
        counts = graph_bin_counts(graph, v, edges, length, form,
                                  edges_constant(graph, edges, form, f"edges_{key}"))
        if s > 1:  # the uniform kernel also divides by the row length (one node less)
            left = (s - 1) // 2
            q3 = graph.unsqueeze(counts, [1])
            padded = graph.pad(q3, [0, 0, left, 0, 0, s - 1 - left], mode="edge")
            kernel = constant(graph, np.full((1, 1, s), 1.0 / (s * length), np.float32))
            q = graph.squeeze(graph.conv(padded, kernel, kernel_shape=[s]), [1])
        else:
            q = graph.div(counts, np.float32(length))
        qe = graph.add(q, np.float32(eps))
        qn = graph.div(qe, graph.reduce("ReduceSum", qe, [1], keepdims=True))
        p_train = np.asarray(self.fitted[f"p_{key}"], np.float64) + eps
        p_train = (p_train / p_train.sum()).astype(np.float32)
        diff = graph.sub(p_train.reshape(1, -1), qn)
        logs = graph.sub(np.log(p_train).reshape(1, -1), graph.log(qn))
        return graph.reduce("ReduceSum", graph.mul(diff, logs), [1])

    def reference(self, taps):
        lt = taps.get(f"{self.name}/perturbed_logits")
        if lt is None:
            lt = self.perturbed_logits(taps["z"], taps["logits"])
        lt = np.asarray(lt, np.float64)
        r, c = int(self.params["r"]), self.head.num_classes
        msp = softmax(lt.reshape(len(lt), r, c), axis=2).max(axis=2).mean(axis=1)
        if not self.uses_kld:
            return msp
        f = self.fitted
        hz = smooth(histograms(taps["z"], np.asarray(f["edges_z"], np.float32)), int(self.params["s1"]))
        hl = smooth(histograms(np.asarray(lt, np.float32), np.asarray(f["edges_L"], np.float32)),
                    int(self.params["s2"]))
        dz = sym_kl(np.asarray(f["p_z"]), hz, EPS_Z)
        dl = sym_kl(np.asarray(f["p_L"]), hl, EPS_L)
        return -(dz + self.params["lambda1"] * dl - self.params["lambda2"] * msp)

    def derived(self):
        p = self.perturbation()
        stored = p.size + 4 * p.shape[0] if self.params["storage"] == "int8" else \
            int(p.size * (2 if self._half_projection() else p.itemsize))
        return {"preset": self.preset, "perturbation_shape": list(p.shape),
                "perturbation_bytes": int(stored),
                "projection_dtype": "float16" if self._half_projection() else "float32"}

    @classmethod
    def summary(cls, entry):
        if "perturbation_bytes" not in entry:
            return ""
        r, d = entry["perturbation_shape"]
        return (f"W~ adds {entry['perturbation_bytes'] / 1e6:.1f} MB ({r} x {d} "
                f"{entry['storage']}, preset {entry['preset']}; shared by weiper methods with "
                "the same seed)")

    @classmethod
    def constant_scopes(cls, entry):
        return (f"{cls.name}/", "weiper/")


@register
class WeiPerMSP(_WeiPer):
    """WeiPer+MSP: mean over the r perturbed heads of the maximum softmax probability."""

    name = "weiper_msp"
    uses_kld = False
    needs_fit = False


@register
class WeiPerKLD(_WeiPer):
    """WeiPer+KLD: -(d_z + lambda1 d_L - lambda2 MSP_W) with ID histograms fitted in two passes."""

    name = "weiper_kld"
    uses_kld = True
