"""GROOD (ElAraby et al., arXiv 2312.14427, TMLR 2025): nearest-neighbour distance between the
gradient of a prototype loss and the bank of such gradients of correctly classified ID images.

Calibration (labelled ID images; without labels the classifier's predictions stand in, and the
metadata's "fit" note says so):
- class prototypes p_c = mean z over ALL calibration images of class c;
- the OOD prototype p_ood (`ood_prototype`):
  mixup (default, the paper's): at block e (`mix_block`, default the candidate block whose
  producing node is nearest half the depth of z), a_mix = lam a_e(x) + (1 - lam) P_e[c2],
  lam = `mix_lambda` (0.5), P_e[c] the class mean of block e's un-pooled output, c2 the
  second-highest logit class of x; a_mix is forwarded from e to z by a copy of the graph between
  the two tensors (edgeood.graph.subgraph.clone_between, run by ONNX Runtime in the calibration
  graph: P_e is a graph input, fed after the first pass), p_ood = mean of those z;
  data: mean z of the OOD validation images (--ood-val); jigsaw: mean z of jigsaw images;
- the gradient bank G: g(z) (below) of each correctly classified image (prediction == label),
  optionally reduced to `bank_size` rows (`bank_reduce` = random subsample, or k-means centres:
  NumPy Lloyd iterations from a k-means++ start, seeded with `seed`).

Score (in the graph, float32): s_j = -||z - p_j|| over the K class prototypes and p_ood
(K + 1 entries), pi = softmax(s), g = pi_ood (z - p_ood) / max(||z - p_ood||, 1e-12) (the closed
form of d CE(s, y) / d p_ood for any label y that is not the OOD index), score =
-min_i ||g - G_i||^2, exact, as ||g||^2 + min_i (||G_i||^2 - 2 g G_i) with ||G||^2 precomputed
(one Gemm and a ReduceMin over the bank). Class distances use the same expansion (clamped at 0).
The detector also outputs `grood_label`, the class of the nearest class prototype (int64 [N]).

Split calibration: a calibration image whose gradient is in the bank scores 0 against itself, so
a threshold and p-value reference from the fitting images would be far too strict (measured on
the digits: 35% ID false alarms at a 5% target with the full bank). Export therefore fits the
prototypes and the bank on a seeded half of the ID images and sets grood's threshold and
reference on the other half only (`calibration_holdout`; the metadata's `calibration_count`);
`edgeood calibrate` on new ID images uses them all.

Deviations from the official code, documented: it approximates the nearest-neighbour search
with faiss IVF (nprobe 4), edgeood's search is exact; its direct path takes a softmax over a
size-1 axis (always 1, losing pi_ood), edgeood uses the softmax over the K + 1 scores.
Classes without any calibration image get no prototype (K < C, recorded and warned; the label
output maps back to the class index), and their block mean for the mix-up is the mean over all
calibration images.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.errors import EdgeoodError, did_you_mean
from edgeood.graph.ops import constant
from edgeood.graph.subgraph import clone_between
from edgeood.graph.taps import resolve
from edgeood.methods import presentation
from edgeood.methods.base import Method, register
from edgeood.methods.blocks.nearest import (  # noqa: F401  (kmeans, reduce_bank: tests)
    CHUNK, kmeans, nearest_sq_distance, nearest_sq_distance_graph, reduce_bank, sq_distances,
    sq_distances_graph, sq_norms)
from edgeood.progress import warn

MEANS_INPUT = "grood/block_means"
Z_MIX = "grood/z_mix"
PROTOTYPES = ("mixup", "jigsaw", "data")
REDUCTIONS = ("random", "kmeans")


# --- NumPy pieces (float64), shared by the fit, the reference and the tests ------------------
def ood_gradient(z: np.ndarray, prototypes: np.ndarray, p_ood: np.ndarray) -> np.ndarray:
    """g = pi_ood (z - p_ood) / max(||z - p_ood||, 1e-12), pi = softmax(-||z - p_j||) over the
    class prototypes and p_ood: d CE(s, y) / d p_ood for every y that is not the OOD index."""
    z = np.asarray(z, np.float64)
    p_ood = np.asarray(p_ood, np.float64).reshape(1, -1)
    diff = z - p_ood
    d_ood = np.linalg.norm(diff, axis=1, keepdims=True)
    s = -np.concatenate([np.sqrt(sq_distances(z, prototypes)), d_ood], axis=1)
    e = np.exp(s - s.max(1, keepdims=True))
    pi_ood = e[:, -1:] / e.sum(1, keepdims=True)
    return pi_ood * diff / np.maximum(d_ood, 1e-12)


@register
class Grood(Method):
    """score = -min_i ||g(z) - G_i||^2, g the gradient of the prototype cross-entropy with
    respect to the OOD prototype (see the module docstring for the whole method)."""

    name = "grood"
    defaults = {"ood_prototype": "mixup", "mix_block": "", "mix_lambda": 0.5, "bank_size": 0,
                "bank_reduce": "random", "seed": 0, "kmeans_iterations": 10}
    fitted_keys = ("selected_mix_block", "correct_count", "ood_prototype_count",
                   "missing_classes")
    graph_arrays = ("prototypes", "class_ids", "ood_prototype", "bank", "bank_sq_norms")
    needs_fit = True
    needs_labels = True
    needs_linear_head = True
    calibration_holdout = 0.5  # split conformal: the bank would hold its own calibration images
    order = 90

    # --- parameters ---------------------------------------------------------------------------
    def validate(self):
        p = self.params
        if p["ood_prototype"] not in PROTOTYPES:
            raise EdgeoodError(f"grood.ood_prototype={p['ood_prototype']!r} must be one of "
                               f"{', '.join(PROTOTYPES)}"
                               f"{did_you_mean(str(p['ood_prototype']), PROTOTYPES)}")
        if p["bank_reduce"] not in REDUCTIONS:
            raise EdgeoodError(f"grood.bank_reduce={p['bank_reduce']!r} must be random or kmeans")
        if not 0.0 <= p["mix_lambda"] <= 1.0:
            raise EdgeoodError(f"grood.mix_lambda={p['mix_lambda']} must be in [0, 1]")
        if p["bank_size"] < 0 or p["kmeans_iterations"] < 1:
            raise EdgeoodError("grood: bank_size must be >= 0 (0 = the full bank) and "
                               "kmeans_iterations >= 1")

    @property
    def needs_jigsaw(self):  # type: ignore[override]
        return self.params["ood_prototype"] == "jigsaw"

    @property
    def fit_passes(self):  # type: ignore[override]
        return 2 if self.params["ood_prototype"] == "mixup" else 1

    @property
    def mixup(self) -> bool:
        return self.params["ood_prototype"] == "mixup"

    def check_model(self, model):
        b = self.params["mix_block"]
        if b and model.tensors and b not in model.tensors:
            raise EdgeoodError(f"grood.mix_block '{b}' is not a tensor of the graph"
                               f"{did_you_mean(b, model.tensors)}")

    def mix_block(self) -> str:
        """Block e of the mix-up: the param, else the candidate whose producing node index is
        nearest half the depth of z (ties: the earlier one)."""
        if self.fitted.get("selected_mix_block"):
            return self.fitted["selected_mix_block"]
        if self.params["mix_block"]:
            return self.params["mix_block"]
        depth, z = self.model.depth, self.head.z
        cands = [c for c in self.model.candidates if c in depth and depth[c] < depth.get(z, -1)]
        if not cands:
            raise EdgeoodError("grood found no candidate block for the mix-up OOD prototype; "
                               "set --param grood.mix_block=TENSOR, or use "
                               "--param grood.ood_prototype=jigsaw (or data with --ood-val)")
        half = depth[z] / 2.0
        return min(cands, key=lambda c: (abs(depth[c] - half), depth[c]))

    # --- calibration --------------------------------------------------------------------------
    def fit_taps(self):
        return ["z", "logits"] + ([self.mix_block()] if self.mixup else [])

    def fit_graph(self, graph, t):
        """The mix-up forward: a_mix = lam a_e + (1 - lam) P_e[c2] (P_e a graph input, c2 the
        second of TopK(logits, 2)), cloned from block e to z."""
        if not self.mixup:
            return {}
        block = resolve(graph, self.mix_block(), "grood.mix_block")
        c = self.head.num_classes
        means = gs.Variable(MEANS_INPUT, dtype=np.float32,
                            shape=[c, "grood_block_c", "grood_block_h", "grood_block_w"])
        graph.inputs.append(means)
        _, idx = graph.topk(t["logits"], 2, axis=1)
        c2 = graph.reshape(graph.slice_(idx, 1, 2, axis=1), [-1])
        lam = float(self.params["mix_lambda"])
        mixed = graph.add(graph.mul(block, np.float32(lam)),
                          graph.mul(graph.gather(means, c2, 0), np.float32(1.0 - lam)))
        return {Z_MIX: clone_between(graph, block, t["z"], mixed)}

    def fit_inputs(self):
        if not self.mixup:
            return {}
        means = self.scratch.get("block_means")
        if means is None:  # pass 0: the mixed forward runs on zeros and is ignored
            means = np.zeros((self.head.num_classes, 1, 1, 1), np.float32)
        return {MEANS_INPUT: means}

    def _sum(self, key, values, labels=None, classes=None):
        v = np.asarray(values, np.float64)
        sc = self.scratch
        if labels is None:
            sc[key] = sc.get(key, 0.0) + v.sum(0)
            sc[key + "_n"] = sc.get(key + "_n", 0) + len(v)
            return
        if key not in sc:
            sc[key] = np.zeros((classes, *v.shape[1:]))
            sc[key + "_n"] = np.zeros(classes, np.int64)
        np.add.at(sc[key], labels, v)
        sc[key + "_n"] += np.bincount(labels, minlength=classes)

    def fit_update(self, taps, source):
        z = taps["z"]
        if source == "jigsaw":
            self._sum("jigsaw", z)
            return
        if source == "ood":
            self._sum("ood", z)
            return
        if self.scratch.get("pass", 0) == 1:
            self._sum("z_mix", taps[Z_MIX])
            return
        c = self.head.num_classes
        labels = np.asarray(taps["labels"], np.int64).reshape(-1)
        if labels.min() < 0 or labels.max() >= c:
            raise EdgeoodError(f"grood: calibration labels must be class indices 0..{c - 1} of "
                               f"the classifier (got {labels.min()}..{labels.max()})")
        self._sum("class", z, labels, c)
        correct = np.asarray(taps["logits"]).argmax(1) == labels
        self.scratch.setdefault("correct_z", []).append(np.asarray(z, np.float32)[correct])
        if self.mixup:
            a = taps[self.mix_block()]
            self._sum("block", a, labels, c)

    def fit_pass_end(self, index):
        self.scratch["pass"] = index + 1
        if index == 0 and self.mixup:
            sums, n = self.scratch["block"], self.scratch["block_n"]
            overall = sums.sum(0) / max(n.sum(), 1)
            means = np.where((n > 0).reshape(-1, *[1] * (sums.ndim - 1)),
                             sums / np.maximum(n, 1).reshape(-1, *[1] * (sums.ndim - 1)), overall)
            self.scratch["block_means"] = np.ascontiguousarray(means, np.float32)

    def fit_end(self):
        sc, kind = self.scratch, self.params["ood_prototype"]
        source = {"mixup": "z_mix", "jigsaw": "jigsaw", "data": "ood"}[kind]
        if source not in sc:
            if kind == "data":
                raise EdgeoodError("grood.ood_prototype=data needs OOD validation images: pass "
                                   "--ood-val DIR, or use ood_prototype=mixup or jigsaw")
            raise EdgeoodError(f"grood: no {source} features reached the fit (ood_prototype="
                               f"{kind})")
        p_ood = sc[source] / sc[source + "_n"]
        sums, n = sc["class"], sc["class_n"]
        ids = np.flatnonzero(n > 0)
        prototypes = sums[ids] / n[ids, None]
        missing = int(self.head.num_classes - len(ids))
        if missing:
            msg = (f"grood: {missing} of {self.head.num_classes} classes have no calibration "
                   f"image and get no prototype ({len(ids)} prototypes); add images of every "
                   "class")
            self.warnings.append(msg)
            warn(msg)
        correct = np.concatenate(sc["correct_z"])
        if not len(correct):
            raise EdgeoodError("grood: no calibration image is classified correctly, so the "
                               "gradient bank is empty; check the labels (class indices)")
        bank = np.concatenate([ood_gradient(correct[s:s + CHUNK], prototypes, p_ood)
                               for s in range(0, len(correct), CHUNK)])
        bank = reduce_bank(bank, int(self.params["bank_size"]), self.params["bank_reduce"],
                           int(self.params["seed"]), int(self.params["kmeans_iterations"]))
        bank = bank.astype(np.float32)
        self.fitted.update(
            selected_mix_block=self.mix_block() if self.mixup else "",
            correct_count=len(correct),
            ood_prototype_count=sc[source + "_n"],
            missing_classes=missing,
            prototypes=prototypes.astype(np.float32),
            class_ids=ids.astype(np.int64),
            ood_prototype=p_ood.astype(np.float32).reshape(1, -1),
            bank=bank,
            bank_sq_norms=sq_norms(bank),
        )

    # --- scoring ------------------------------------------------------------------------------
    def taps(self):
        return ["z"]

    def build(self, graph, t):
        z = t["z"]
        f = self.fitted
        k = len(f["prototypes"])
        protos = self.array_constant(graph, "prototypes")
        p64 = np.asarray(f["prototypes"], np.float64)
        proto_sq = constant(graph, (p64 * p64).sum(1).reshape(1, -1))
        d2 = sq_distances_graph(graph, z, protos, proto_sq)
        diff = graph.sub(z, self.array_constant(graph, "ood_prototype"))
        d_ood = graph.reduce("ReduceL2", diff, [1], keepdims=True)
        s = graph.neg(graph.concat([graph.sqrt(d2), d_ood], axis=1))
        pi_ood = graph.slice_(graph.softmax(s, 1), k, k + 1, axis=1)
        g = graph.mul(diff, graph.div(pi_ood, graph.maximum(d_ood, np.float32(1e-12))))
        nearest = nearest_sq_distance_graph(graph, g, self.array_constant(graph, "bank"),
                                            self.array_constant(graph, "bank_sq_norms"))
        ids = constant(graph, f["class_ids"], "class_ids", dtype=np.int64)
        self.graph_outputs["grood_label"] = graph.gather(ids, graph.argmax(graph.neg(d2), 1), 0)
        return graph.neg(nearest)

    def reference(self, taps):
        f = self.fitted
        g = ood_gradient(taps["z"], f["prototypes"], f["ood_prototype"])
        return -nearest_sq_distance(g, f["bank"])

    def label(self, taps) -> np.ndarray:
        """grood_label in NumPy: the class of the nearest class prototype."""
        d = sq_distances(taps["z"], self.fitted["prototypes"])
        return np.asarray(self.fitted["class_ids"], np.int64).reshape(-1)[d.argmin(1)]

    # --- what is saved and shown --------------------------------------------------------------
    def derived(self):
        f = self.fitted
        if "bank" not in f:
            return {}
        n, d = np.shape(f["bank"])
        size, full = int(self.params["bank_size"]), int(f.get("correct_count", n))
        reduction = self.params["bank_reduce"] if 0 < size < full else "none"
        arrays = sum(int(np.asarray(f[k]).nbytes) for k in self.graph_arrays if k in f)
        return {"bank_entries": int(n), "bank_reduction": reduction,
                "bank_bytes": int(n * d * 4 + n * 4), "constant_bytes": arrays,
                "prototype_count": len(f["prototypes"])}

    class Presentation(presentation.Presentation):
        score = ("−min_i ‖g − G_i‖², g = π_ood (z − p_ood) / "
                 "‖z − p_ood‖ (d CE / d p_ood), π = softmax(−‖z − "
                 "p_j‖) over the class prototypes and p_ood")
        fits = ("class prototypes (labels, else predictions), p_ood (mix-up at a mid-depth "
                "block, or `--ood-val`, or jigsaw), bank G of g of the correctly classified "
                "images (two passes)")
        notes = ("exact nearest neighbour (one Gemm + ReduceMin; the official code: faiss IVF); "
                 "extra output `grood_label`; `bank_size` / `bank_reduce` shrink the bank")
        bank_fraction = 0.1  # the demo's reduced banks: 10% of the full bank's rows
        head_nodes = 22
        constant_bytes = "4*((C+1)*D + N*(D+1))"  # prototypes, p_ood, the bank and its norms
        cost_note = "N: bank images (the correctly classified ID images; bank_size caps it)"

        def summary(self, entry):
            if "bank_entries" not in entry:
                return ""
            red = entry["bank_reduction"]
            bank = f"bank {entry['bank_entries']}" + (
                f" ({red} of {entry['correct_count']})" if red != "none" else "")
            kind = entry["ood_prototype"]
            where = f" at {entry['selected_mix_block']}" if kind == "mixup" else ""
            size = entry["bank_bytes"]
            size = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
            return f"{bank}, {size}; p_ood {kind}{where}"

        def demo_variants(self, entry):
            """The bank reduced to bank_fraction of its rows, by random rows and by k-means."""
            rows = max(1, round(self.bank_fraction * entry["bank_entries"]))
            return [presentation.DemoVariant(
                f"{self.method.name} ({self.bank_fraction:.0%} {how} bank, {rows} rows)",
                {"bank_size": rows, "bank_reduce": how}) for how in ("random", "kmeans")]
