"""Calibration: stream ID batches through the tapped graph to fit each method, tune the
methods that declare a tune space, then score the ID set with the folded graph to set
thresholds and keep p-value references.

Knows nothing of any method's formula or fitted keys: it moves tap values to
Method.fit_update, searches Method.tune_space with Method.reference, and reads scores out of
the graph.
"""
from __future__ import annotations

import hashlib
import itertools
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from edgeood.artifact.names import LOGITS, MAX_REFERENCE, score_name
from edgeood.data import ImageSource, Preprocess, jigsaw
from edgeood.errors import EdgeoodError
from edgeood.graph.fold import head_taps
from edgeood.graph.head import ClassifierHead
from edgeood.graph.model import to_model
from edgeood.graph.ops import scope
from edgeood.graph.taps import resolve
from edgeood.artifact.metadata import session_source
from edgeood.methods.base import Method
from edgeood.stats.metrics import auroc
from edgeood.progress import track, warn
from edgeood.runtime.batches import run_over
from edgeood.runtime.onnxruntime.backend import OrtBackend

MIN_IMAGES = 20
RECOMMENDED_IMAGES = 100
LABELS = "labels"


def check_count(source: ImageSource) -> int:
    n = len(source)
    if n < MIN_IMAGES:
        raise EdgeoodError(f"{source.name} holds {n} images; calibration needs at least "
                           f"{MIN_IMAGES} (>= {RECOMMENDED_IMAGES} recommended): add ID images")
    if n < RECOMMENDED_IMAGES:
        warn(f"{source.name} holds {n} images; thresholds from fewer than "
             f"{RECOMMENDED_IMAGES} calibration images are unreliable")
    return n


def tuning(m: Method) -> bool:
    return bool(m.tune_space) and bool(m.params.get("tune"))


def fit_methods(graph: gs.Graph, head: ClassifierHead, methods: list[Method],
                source: ImageSource, pre: Preprocess, batch_size: int, seed: int,
                progress: bool = False, ood: ImageSource | None = None) -> dict:
    """Run the tapped graph over the ID images (and their jigsaws when a method asks) and feed
    every method that fits statistics; then tune the methods asked to, against the OOD
    validation images when given, else against jigsaw images. Returns notes for the
    metadata (e.g. where labels came from)."""
    fitting = [m for m in methods if m.needs_fit or tuning(m)]
    if not fitting:
        return {}
    g = graph.copy()
    available = head_taps(g, head)
    outputs: dict[str, gs.Tensor] = {}
    for m in fitting:
        with scope(g, f"fit/{m.name}"):
            outputs.update(m.fit_graph(g, available))
    wanted = [k for m in fitting for k in m.fit_taps() + (m.tune_taps() if tuning(m) else [])]
    for key in dict.fromkeys(wanted):
        if key not in outputs and key != LABELS:
            outputs[key] = available.get(key) or resolve(g, key)
    if any(m.needs_labels for m in fitting):
        outputs.setdefault(LOGITS, available["logits"])
    for t in outputs.values():
        t.dtype = t.dtype or np.float32
    g.outputs = list({t.name: t for t in outputs.values()}.values())
    loop = _FitLoop(list(outputs), [outputs[k].name for k in outputs], fitting, seed)
    with tempfile.TemporaryDirectory() as tmp:
        with OrtBackend(session_source(to_model(g), tmp)) as loop.backend:
            loop.run(source, pre, batch_size, progress, ood)
    for m in fitting:
        m.scratch = {}
    return loop.notes


class _FitLoop:
    """The passes over the data: ID (and jigsaw) batches to fit_update, then the tuner."""

    def __init__(self, keys: list[str], names: list[str], methods: list[Method], seed: int):
        self.keys, self.names, self.methods = keys, names, methods
        self.rng = np.random.default_rng(seed)
        self.backend: OrtBackend | None = None
        self.notes: dict = {}
        self.collected: dict[str, dict[str, list[dict[str, np.ndarray]]]] = {}

    def taps_of(self, x: np.ndarray, labels: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {k: v for m in self.methods for k, v in m.fit_inputs().items()}
        out = self.backend.run(x, self.names, feeds)
        taps = {k: out[n] for k, n in zip(self.keys, self.names)}
        if any(m.needs_labels for m in self.methods):
            taps[LABELS] = np.asarray(labels, np.int64) if labels is not None else \
                taps[LOGITS].argmax(1)
        return taps

    def feed(self, index: int, active: list[Method], taps: dict, kind: str) -> None:
        """Give one batch of taps to the methods that use it, and keep the tuning taps of
        each tuning method's last pass."""
        for m in active:
            if kind in ("id", "ood") or (m.needs_jigsaw and index == 0):
                m.fit_update(taps, kind)
            if tuning(m) and (kind == "ood" or index == m.fit_passes - 1):
                keep = {k: taps[k] for k in m.tune_taps()}
                self.collected.setdefault(m.name, {}).setdefault(kind, []).append(keep)

    def run(self, source: ImageSource, pre: Preprocess, batch_size: int, progress: bool,
            ood: ImageSource | None) -> None:
        methods = self.methods
        if any(m.needs_labels for m in methods):
            self.notes["labels"] = "given" if source.labels is not None else "predictions"
            if source.labels is None:
                warn(f"{source.name} has no labels (class sub-folders or an .npz 'labels' "
                     "array); the classifier's predictions stand in for them")
        tune_on_jigsaw = [m for m in methods if tuning(m) and ood is None]
        passes = max(m.fit_passes for m in methods)
        for index in range(passes):
            active = [m for m in methods if m.fit_passes > index]
            jig = (index == 0 and any(m.needs_jigsaw for m in active)) or \
                any(index == m.fit_passes - 1 for m in tune_on_jigsaw)
            label = "fitting" if passes == 1 else f"fitting (pass {index + 1}/{passes})"
            for batch in track(source.batches(pre, batch_size), -(-len(source) // batch_size),
                               label, progress):
                runs = [("id", batch.x)]
                if jig:
                    runs.append(("jigsaw", jigsaw(batch.x, self.rng, pre.zero_pixel())))
                for kind, x in runs:
                    self.feed(index, active, self.taps_of(x, batch.labels), kind)
            for m in active:
                m.fit_pass_end(index)
        if ood is not None:
            for batch in track(ood.batches(pre, batch_size), -(-len(ood) // batch_size),
                               "OOD validation", progress):
                self.feed(passes - 1, methods, self.taps_of(batch.x, None), "ood")
        for m in methods:
            m.fit_end()
        for m in methods:
            if tuning(m):
                tune(m, self.collected[m.name], "ood" if ood is not None else "jigsaw")


def tune(method: Method, collected: dict[str, list[dict]], against: str) -> None:
    """Grid search over method.tune_space: the combination whose reference scores separate ID
    from the pseudo-OOD (or OOD validation) set best by AUROC; ties go to the combination
    nearest the defaults. Sets the chosen params and method.tuning."""
    cat = lambda parts: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}  # noqa: E731
    ident, other = cat(collected["id"]), cat(collected[against])
    space = method.tune_space
    keys = list(space)
    defaults = method.accepted_params()
    results: dict[tuple, float] = {}
    for combo in itertools.product(*(space[k] for k in keys)):
        method.params.update(dict(zip(keys, combo)))
        try:
            method.validate()
        except EdgeoodError:
            continue
        results[combo] = auroc(method.reference(ident), method.reference(other))
    if not results:
        raise EdgeoodError(f"{method.name}: no value of its tune space "
                           f"{dict(space)} is valid with its other parameters")
    distance = lambda c: sum(abs(float(v) - float(defaults[k])) for k, v in zip(keys, c))  # noqa: E731
    best = max(results, key=lambda c: (results[c], -distance(c)))
    method.params.update(dict(zip(keys, best)))
    label = lambda c: ",".join(f"{v}" for v in c)  # noqa: E731
    method.tuning = {**dict(zip(keys, best)), "auroc": results[best], "against": against,
                     "grid": {label(c): a for c, a in results.items()}}


@dataclass
class ScoredSet:
    scores: dict[str, np.ndarray]
    logits: np.ndarray
    count: int
    data_hash: str
    row_hashes: list[str] = field(default_factory=list)  # image_fingerprint of every row


def score_source(backend: OrtBackend, methods: list[str], source: ImageSource, pre: Preprocess,
                 batch_size: int, progress: bool = False) -> ScoredSet:
    """Scores of every method (from the folded graph) over a source."""
    names = [LOGITS] + [score_name(m) for m in methods]
    h = hashlib.sha256()
    rows: list[str] = []

    def seen(x: np.ndarray) -> None:
        h.update(x.tobytes())
        rows.extend(image_fingerprint(r) for r in x)

    cat = run_over(backend, source, pre, batch_size, names, "scoring", progress, on_batch=seen)
    return ScoredSet({m: cat[score_name(m)] for m in methods}, cat[LOGITS], len(source),
                     h.hexdigest()[:16], rows)


def image_fingerprint(x: np.ndarray) -> str:
    """16 hex digits identifying one preprocessed image (its float32 bytes): how calibration
    recognises the images a method was fitted on."""
    return hashlib.blake2b(np.ascontiguousarray(x, np.float32).tobytes(),
                           digest_size=8).hexdigest()


def calibration_rows(entry: dict, rows: list[str]) -> np.ndarray:
    """Positions of the scored images a method may calibrate on: all of them, except the
    images its statistics were fitted on (`fitted_images` in its metadata entry; a nearest-
    neighbour bank scores its own images too high, so they would bias its threshold)."""
    fitted = set(entry.get("fitted_images") or ())
    return np.array([i for i, r in enumerate(rows) if r not in fitted], dtype=np.int64)


def threshold_at(scores: np.ndarray, tpr: float) -> float:
    """The score below which a fraction 1 - tpr of ID images falls (5th percentile at 0.95)."""
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
