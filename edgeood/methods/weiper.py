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
`projection=float32` keeps it float32. Histograms are counts of values below each edge
(compare + sum, no Gather or Sort).

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
                "s1": 0, "s2": 0, "seed": 0, "storage": "float32", "projection": "backbone"}
    fitted_keys = ("edges_z", "edges_L", "p_z", "p_L")
    needs_fit = True
    needs_linear_head = True

    def validate(self):
        if self.params["storage"] not in STORAGES:
            raise EdgeoodError(f"{self.name}.storage must be one of {', '.join(STORAGES)}")
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
        m = graph.reduce("ReduceMax", rc, [2], keepdims=True)
        s = graph.reduce("ReduceSum", graph.exp(graph.sub(rc, m)), [2])
        return graph.reduce("ReduceMean", graph.reciprocal(s), [1])

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
        n = len(edges) - 1
        # [N, E, M] so that the count is a contiguous reduction over the values (the [N, M, E]
        # orientation reduces over a strided axis and measured several times slower)
        e = constant(graph, edges.reshape(1, -1, 1), f"edges_{key}")
        below = graph.reduce("ReduceSum", graph.cast(graph.less(graph.unsqueeze(v, [1]), e)), [2])
        hi = graph.slice_(below, 1, n + 1, axis=1)
        lo = graph.slice_(below, 0, n, axis=1)
        length = self.head.feature_dim if key == "z" else \
            int(self.params["r"]) * self.head.num_classes
        q = graph.div(graph.sub(hi, lo), np.float32(length))
        if s > 1:
            left = (s - 1) // 2
            q3 = graph.unsqueeze(q, [1])
            padded = graph.pad(q3, [0, 0, left, 0, 0, s - 1 - left], mode="edge")
            kernel = constant(graph, np.full((1, 1, s), 1.0 / s, np.float32))
            q = graph.squeeze(graph.conv(padded, kernel, kernel_shape=[s]), [1])
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
