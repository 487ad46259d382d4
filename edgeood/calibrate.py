"""Calibration: stream ID batches through the tapped graph to fit each method, then score the
ID set with the folded graph to set thresholds and keep p-value references.

Knows nothing of any method's formula: it moves tap values to Method.fit_update and scores out
of the graph.
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.data import ImageSource, Preprocess, jigsaw
from edgeood.errors import EdgeoodError
from edgeood.graph.head import ClassifierHead
from edgeood.graph.model import to_model
from edgeood.graph.ops import scope
from edgeood.metadata import session_source
from edgeood.methods.base import Method
from edgeood.progress import track, warn
from edgeood.runtime.batches import run_over
from edgeood.runtime.ort_backend import OrtBackend

MIN_IMAGES = 20
RECOMMENDED_IMAGES = 100
MAX_REFERENCE = 5000


def check_count(source: ImageSource) -> int:
    n = len(source)
    if n < MIN_IMAGES:
        raise EdgeoodError(f"{source.name} holds {n} images; calibration needs at least "
                           f"{MIN_IMAGES} (>= {RECOMMENDED_IMAGES} recommended): add ID images")
    if n < RECOMMENDED_IMAGES:
        warn(f"{source.name} holds {n} images; thresholds from fewer than "
             f"{RECOMMENDED_IMAGES} calibration images are unreliable")
    return n


def fit_methods(graph: gs.Graph, head: ClassifierHead, methods: list[Method],
                source: ImageSource, pre: Preprocess, batch_size: int, seed: int,
                progress: bool = False, ood: ImageSource | None = None) -> None:
    """Run the tapped graph over the ID images (and their jigsaws when a method asks) and feed
    every method that fits statistics; OOD validation images, when given, go to the methods
    that tune against them (source "ood")."""
    fitting = [m for m in methods if m.needs_fit]
    if not fitting:
        return
    g = graph.copy()
    tensors = g.tensors()
    alias = {"logits": head.logits, "z": head.z}
    keys = list(dict.fromkeys(k for m in fitting for k in m.fit_taps()))
    outputs = {k: tensors[alias.get(k, k)] for k in keys}
    available = {"logits": tensors[head.logits], "z": tensors[head.z], "input": g.inputs[0]}
    for m in fitting:
        with scope(g, f"fit/{m.name}"):
            outputs.update(m.fit_graph(g, available))
    for t in outputs.values():
        t.dtype = t.dtype or np.float32
    g.outputs = list({t.name: t for t in outputs.values()}.values())
    keys = list(outputs)
    names = [outputs[k].name for k in keys]
    with tempfile.TemporaryDirectory() as tmp:
        backend = OrtBackend(session_source(to_model(g), tmp))
        _fit_loop(backend, keys, names, fitting, source, pre, batch_size, seed, progress, ood)


def _fit_loop(backend, keys, names, fitting, source, pre, batch_size, seed, progress, ood):
    """The passes over the data (run while the session's temporary files exist)."""
    def taps_of(x):
        out = backend.run(x, names)
        return {k: out[n] for k, n in zip(keys, names)}

    rng = np.random.default_rng(seed)
    want_jigsaw = any(m.needs_jigsaw for m in fitting)
    passes = max(m.fit_passes for m in fitting)
    for index in range(passes):
        active = [m for m in fitting if m.fit_passes > index]
        jig = want_jigsaw and index == 0
        label = "fitting" if passes == 1 else f"fitting (pass {index + 1}/{passes})"
        for batch in track(source.batches(pre, batch_size), -(-len(source) // batch_size),
                           label, progress):
            runs = [("id", batch.x)]
            if jig:
                runs.append(("jigsaw", jigsaw(batch.x, rng, pre.zero_pixel())))
            for kind, x in runs:
                taps = taps_of(x)
                for m in active:
                    if kind == "id" or m.needs_jigsaw:
                        m.fit_update(taps, kind)
        for m in active:
            m.fit_pass_end(index)
    if ood is not None and any(m.tunes_on_ood for m in fitting):
        for batch in track(ood.batches(pre, batch_size), -(-len(ood) // batch_size),
                           "OOD validation", progress):
            taps = taps_of(batch.x)
            for m in fitting:
                if m.tunes_on_ood:
                    m.fit_update(taps, "ood")
    for m in fitting:
        m.fit_end()


@dataclass
class ScoredSet:
    scores: dict[str, np.ndarray]
    logits: np.ndarray
    count: int
    data_hash: str


def score_source(backend: OrtBackend, methods: list[str], source: ImageSource, pre: Preprocess,
                 batch_size: int, progress: bool = False) -> ScoredSet:
    """Scores of every method (from the folded graph) over a source."""
    names = ["logits"] + [f"score_{m}" for m in methods]
    h = hashlib.sha256()
    cat = run_over(backend, source, pre, batch_size, names, "scoring", progress,
                   on_batch=lambda x: h.update(x.tobytes()))
    return ScoredSet({m: cat[f"score_{m}"] for m in methods}, cat["logits"], len(source),
                     h.hexdigest()[:16])


def threshold_at(scores: np.ndarray, tpr: float) -> float:
    """The score below which a fraction 1 - tpr of ID images falls (5th percentile at 0.95)."""
    if not 0 < tpr < 1:
        raise EdgeoodError(f"--tpr {tpr} must be in (0, 1); e.g. 0.95")
    finite = scores[np.isfinite(scores)]
    if len(finite) < len(scores):
        raise EdgeoodError(f"{len(scores) - len(finite)} calibration scores are NaN/Inf; the "
                           "model or method is numerically unstable on these images")
    return float(np.percentile(finite.astype(np.float64), 100.0 * (1.0 - tpr)))


def reference_scores(scores: np.ndarray, seed: int, max_n: int = MAX_REFERENCE) -> np.ndarray:
    """Sorted ID scores for conformal p-values, a seeded subsample of at most max_n."""
    s = np.asarray(scores, np.float32)
    if len(s) > max_n:
        s = np.random.default_rng(seed).choice(s, size=max_n, replace=False)
    return np.sort(s)


def conformal_pvalue(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """p(s) = (1 + #{ref <= s}) / (n + 1), in NumPy (for tests and host-side use)."""
    ref = np.sort(np.asarray(reference, np.float32))
    counts = np.searchsorted(ref, np.asarray(scores, np.float32), side="right")
    return (1.0 + counts) / (len(ref) + 1.0)
