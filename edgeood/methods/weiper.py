"""WeiPer (Granz et al., NeurIPS 2024): perturbed class projections, +MSP and +KLD.

W~_{i,c} = W_c + delta ||W_c|| n_{i,c} / ||n_{i,c}||, n ~ N(0, I_D), i = 1..r, drawn once from
a seeded generator and frozen into the graph; L~ = W~ z + b~ (r C values).
- weiper_msp: MSP_W = (1/r) sum_i max_c softmax(W~_i z + b)_c.
- weiper_kld: score = -(d_z + lambda1 d_L - lambda2 MSP_W), d the symmetric KL divergence
  between the mean ID histogram (of z values, resp. L~ values) and the sample's own histogram,
  smoothed with a uniform kernel (replicate padding).

In the graph, W~ is stored as the perturbation P only (W~ z = W z + P z, and W z + b are the
classifier's own logits), optionally in float16 (`storage=float16`; the head computes in
float32) or int8 (`storage=int8`: weight-only, per-row symmetric scales, DequantizeLinear).
Over a reduced-precision backbone the projection follows it (`projection=backbone`, the
default): P z as a float16 Gemm over a float16 backbone, P stored int8 over an int8 one;
`projection=float32` keeps it float32.

Histograms (`histogram=auto`, the default) are exact integer counts, as `histograms()`
(edgeood.methods.blocks.histogram): at opset >= 16 and for rows of at least SCATTER_MIN_VALUES
values a bin index per value, corrected by one GatherElements of the edges, and ONE
ScatterElements(reduction="add") for the z and the L~ values together (O(M)); otherwise
(below opset 16, short rows, `histogram=compare`) counts of values below each edge
(Less + ReduceSum over [N, E, M]), which every TensorRT parser builds without plugins.
TensorRT 10 builds the scatter with its ScatterElements plugin (libnvinfer_plugin); TensorRT
8.6's parser ignores the reduction (`edgeood check --target trt8.6` reports it).

The KLD tail is a handful of nodes for both histograms at once (a GPU runs a kernel per node):
one Gemm maps the raw counts of both to s * smoothed counts + eps * s * length (the bin
mapping, the uniform kernel with its replicate padding and eps folded into one integer matrix
and a bias; integers of at most 2 s (M + 1), exact in any order below 2^24), which is Q up to a
factor per histogram; one MatMul of block ones gives each histogram's sum, a Div normalises,
and (P - Q)(log P - log Q) for both and the r MSP terms meet in one MatMul with the weights
-1, -lambda1 and lambda2 / r, which is the score.

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
from edgeood.methods import presentation
from edgeood.methods.base import Method, register
from edgeood.methods.blocks.histogram import (  # noqa: F401  (bin_estimator, graph_bin_counts: tests)
    Row, bin_estimator, graph_bin_counts, graph_raw_counts, histogram_form, histograms,
    raw_to_bins, settle_forms)
from edgeood.methods.numeric import softmax

# (r, delta, n_bins, lambda1, lambda2, s1, s2), the published presets, by the number of classes
PRESETS = {
    "cifar10": (100, 1.8, 100, 2.5, 0.1, 4, 15),
    "cifar100": (100, 2.4, 100, 0.1, 1.0, 4, 40),
    "imagenet": (100, 2.4, 100, 2.5, 0.25, 40, 15),
}
KEYS = ("r", "delta", "n_bins", "lambda1", "lambda2", "s1", "s2")
EPS_Z, EPS_L = 0.01, 0.025
STORAGES = ("float32", "float16", "int8")  # int8: weight-only, DequantizeLinear per row
HISTOGRAMS = ("auto", "scatter", "compare")


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


def smooth(h: np.ndarray, s: int) -> np.ndarray:
    """Uniform kernel of size s, replicate padding floor((s-1)/2) left and s-1-left right."""
    if s <= 1:
        return h
    left = (s - 1) // 2
    padded = np.concatenate([np.repeat(h[:, :1], left, 1), h, np.repeat(h[:, -1:], s - 1 - left, 1)], 1)
    c = np.cumsum(np.pad(padded, ((0, 0), (1, 0))), axis=1)
    return (c[:, s:] - c[:, :-s]) / s


def smoothing_matrix(n: int, s: int) -> np.ndarray:
    """The integer [n, n] matrix S with h @ S = s * smooth(h, s) (identity for s <= 1)."""
    if s <= 1:
        return np.eye(n, dtype=np.int64)
    left = (s - 1) // 2
    m = np.zeros((n, n), np.int64)
    for j in range(n):
        for i in np.clip(np.arange(j - left, j - left + s), 0, n - 1):
            m[i, j] += 1
    return m


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

    def _graph_msp_terms(self, graph, lt):
        """[N, r]: each perturbed head's maximum softmax probability."""
        rc = graph.reshape(lt, [0, int(self.params["r"]), self.head.num_classes])
        return graph.reduce("ReduceMax", graph.softmax(rc, 2), [2])  # 2 nodes, max-shifted

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
        top = self._graph_msp_terms(graph, lt)
        if not self.uses_kld:
            return graph.reduce("ReduceMean", top, [1])
        n, r = int(self.params["n_bins"]), int(self.params["r"])
        weights = np.concatenate([np.full(n, -1.0), np.full(n, -float(self.params["lambda1"])),
                                  np.full(r, float(self.params["lambda2"]) / r)])
        terms = graph.concat([self._graph_kl_terms(graph, t["z"], lt), top], axis=1)
        return graph.matmul(terms, constant(graph, weights))

    def _graph_kl_terms(self, graph, z, lt):
        """[N, 2 n_bins]: (P - Q)(log P - log Q) of the z histogram, then of the L~ one."""
        if self.params["histogram"] == "scatter" and graph.opset < 16:
            raise EdgeoodError(f"{self.name}.histogram=scatter needs opset >= 16 (ScatterElements "
                               f"with reduction); this graph has opset {graph.opset}")
        n = int(self.params["n_bins"])
        rc = int(self.params["r"]) * self.head.num_classes
        rows, kernels, shifts, p = [], [], [], []
        for key, v, length, s, eps in (("z", z, self.head.feature_dim, self.params["s1"], EPS_Z),
                                       ("L", lt, rc, self.params["s2"], EPS_L)):
            edges = np.asarray(self.fitted[f"edges_{key}"], np.float32).ravel()
            form = histogram_form(edges, length, graph.opset, self.params["histogram"])
            rows.append(Row(v, edges, length, form, f"edges_{key}"))
            kernels.append(int(s))
            shifts.append(float(np.float32(eps * max(int(s), 1) * length)))
            pk = np.asarray(self.fitted[f"p_{key}"], np.float64) + eps
            p.append(pk / pk.sum())
        settle_forms(rows)
        # raw counts -> s * smooth(counts); (smooth(c) / length + eps) is that plus
        # eps s length, divided by s length: a factor Q's normalisation drops
        mats = [raw_to_bins(row) @ smoothing_matrix(n, s) for row, s in zip(rows, kernels)]
        # a scatter may start from ones where the bias absorbs them exactly
        exact = all(float(np.float32(e - c)) == e - c for e, m, r in zip(shifts, mats, rows)
                    if r.form == "scatter" for c in m.sum(0))
        raw, starts, bases = graph_raw_counts(graph, rows, scatter_base=1 if exact else 0)
        matrix = np.zeros((sum(r.raw_width for r in rows), 2 * n))
        bias = np.zeros(2 * n)
        for h, (row, m, e, start, base) in enumerate(zip(rows, mats, shifts, starts, bases)):
            matrix[start:start + row.raw_width, h * n:(h + 1) * n] = m
            bias[h * n:(h + 1) * n] = e - base * m.sum(0)
        qe = graph.gemm(raw, constant(graph, matrix), constant(graph, bias))
        q = graph.div(qe, graph.matmul(qe, constant(graph, np.kron(np.eye(2), np.ones((n, n))))))
        p32 = np.concatenate(p).astype(np.float32)[None]
        return graph.mul(graph.sub(p32, q), graph.sub(np.log(p32), graph.log(q)))

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

    class Presentation(presentation.Presentation):
        notes = "hyperparameters by class count (presets)"
        shared_nodes = 3  # the perturbed projection, under weiper/ (one per seed)
        constant_bytes = "4*r*C*D"  # W~: r perturbed copies of the C x D head
        constant_example = {"r": 100}  # the ImageNet preset
        cost_note = "r: perturbations (100 in the presets), float32 storage"

        def summary(self, entry):
            if "perturbation_bytes" not in entry:
                return ""
            r, d = entry["perturbation_shape"]
            return (f"W~ adds {entry['perturbation_bytes'] / 1e6:.1f} MB ({r} x {d} "
                    f"{entry['storage']}, preset {entry['preset']}; shared by weiper methods "
                    "with the same seed)")

        def constant_scopes(self, entry):
            return (f"{self.method.name}/", "weiper/")


@register
class WeiPerMSP(_WeiPer):
    """WeiPer+MSP: mean over the r perturbed heads of the maximum softmax probability."""

    name = "weiper_msp"
    uses_kld = False
    needs_fit = False
    order = 80

    class Presentation(_WeiPer.Presentation):
        score = ("mean over r perturbed heads W~ = W + δ‖W_c‖ n/‖n‖ of max "
                 "softmax")
        fits = "- (one frozen seeded perturbation)"
        head_nodes = 4


@register
class WeiPerKLD(_WeiPer):
    """WeiPer+KLD: -(d_z + lambda1 d_L - lambda2 MSP_W) with ID histograms fitted in two passes."""

    name = "weiper_kld"
    uses_kld = True
    order = 81

    class Presentation(_WeiPer.Presentation):
        head_nodes = 21  # histograms by ScatterElements (opset >= 16)
        score = ("−(d_z + λ1 d_L − λ2 MSP_W), symmetric KL of smoothed "
                 "histograms of z and of W~z+b~ vs the ID mean")
        fits = "global min/max, then mean ID histograms (two passes)"
        notes = ("exact histograms: a bin index + one ScatterElements count for the z and the "
                 "W~z+b~ values together (compare-and-count below opset 16, for short rows and "
                 "for TensorRT 8.6); one Gemm smooths both; hyperparameters by class count "
                 "(presets)")
