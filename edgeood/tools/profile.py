"""Latency profiling of a model, detector or engine (random input, fixed batch): inference
percentiles and throughput, the PRE / NET / POST breakdown, TensorRT per-layer times."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeood.errors import EdgeoodError, spell
from edgeood.runtime.backend import Backend


def input_for(backend: Backend, batch: int, imgsz=None, seed: int = 0) -> np.ndarray:
    """A float32 random input of the model's shape with the given batch."""
    shape = list(backend.input_shape)
    if len(shape) != 4:
        shown = "x".join("N" if i == 0 else str(d) if isinstance(d, int) else "?"
                         for i, d in enumerate(shape))
        raise EdgeoodError(f"edgeood profile times image models, and input {backend.input_name} "
                           f"is {shown or 'a scalar'}; profile needs a 4-D N x C x H x W image "
                           "input (an image classifier, a detector or an engine)")
    c, h, w = shape[1:]
    if not isinstance(h, int) or not isinstance(w, int):
        if imgsz is None:
            raise EdgeoodError("the model's input size is dynamic; pass --imgsz H,W")
        h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    elif imgsz is not None:
        asked = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
        if asked != (h, w):
            from edgeood.progress import warn
            warn(f"{spell('imgsz')} {imgsz} is ignored: the model's input is fixed at {h}x{w}")
    if backend.fixed_batch and backend.fixed_batch != batch:
        raise EdgeoodError(f"the model has a fixed batch of {backend.fixed_batch}; "
                           f"pass --batch {backend.fixed_batch}")
    return np.random.default_rng(seed).standard_normal((batch, c, h, w)).astype(np.float32)


def time_runs(fn, warmup: int, iterations: int) -> np.ndarray:
    """Wall-clock milliseconds of `iterations` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = np.empty(iterations)
    for i in range(iterations):
        t0 = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def round_robin(fns: dict, rounds: int, per_round: int, warmup: int = 3) -> dict[str, np.ndarray]:
    """Milliseconds per call of every function, timed in turns (per_round calls each, `rounds`
    times), so that all variants see the same machine state: ratios measured side by side."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].extend(time_runs(fn, 0, per_round))
    return {k: np.asarray(v) for k, v in samples.items()}


def samples_for(p: float) -> int:
    """The fewest timed runs that put at least one run above the p-th percentile (p99: 100):
    with fewer, "p99" would only be the slowest run."""
    return int(np.ceil(100.0 / (100.0 - p) - 1e-9)) if p < 100 else 1


def percentile_or_none(ms: np.ndarray, p: float) -> float | None:
    """The p-th percentile of the runs, or None when there are too few runs for it."""
    return float(np.percentile(ms, p)) if len(ms) >= samples_for(p) else None


def too_few_runs(iterations: int, percentiles) -> list[float]:
    """The percentiles that `iterations` timed runs cannot estimate."""
    return [p for p in percentiles if iterations < samples_for(p)]


def latency_stats(ms: np.ndarray, batch: int, percentiles=(50, 90, 99)) -> dict:
    stats = {f"p{p:g}": percentile_or_none(ms, p) for p in percentiles}
    stats.update(mean=float(ms.mean()), min=float(ms.min()), std=float(ms.std()))
    return {"latency_ms": stats, "throughput_ips": float(batch * 1e3 / ms.mean()),
            "iterations": int(len(ms))}


def profile(path, batch: int = 1, warmup: int = 10, iterations: int = 100, imgsz=None,
            percentiles=(50, 90, 99), providers=None, threads: int | None = None,
            device: str | None = None, tf32: bool = False, cuda_graph: bool = False,
            layers: int = 0, frame_size=(480, 640)) -> dict:
    """Latency of one model, detector or engine: percentiles and throughput of the inference
    (as always), and for detectors the PRE / NET / POST breakdown (host preprocessing of uint8
    camera frames of frame_size, inference, host post-processing into per-image results); with
    a TensorRT engine and layers > 0 also the `layers` slowest layers from TensorRT's profiler."""
    if batch < 1 or iterations < 1 or warmup < 0:
        raise EdgeoodError(f"{spell('batch')} and --iterations must be >= 1 and --warmup >= 0")
    few = too_few_runs(iterations, percentiles)
    if few:
        from edgeood.progress import warn
        warn(f"{iterations} timed runs are too few for "
             f"{', '.join(f'p{p:g}' for p in few)} (p{few[-1]:g} needs "
             f"--iterations {samples_for(few[-1])}); not reported")
    backend, meta = open_backend(Path(path), providers, threads, device, tf32, cuda_graph, batch)
    with backend:
        return _profile(backend, meta, path, batch, warmup, iterations, imgsz, percentiles,
                        layers, frame_size)


def _profile(backend: Backend, meta: dict | None, path, batch: int, warmup: int,
             iterations: int, imgsz, percentiles, layers: int, frame_size) -> dict:
    x = input_for(backend, batch, imgsz)
    ms = time_runs(lambda: backend.run(x), warmup, iterations)
    res = {"model": str(path), "batch": batch, "providers": backend.providers,
           **latency_stats(ms, batch, percentiles)}
    res["runs_on"] = backend.runs_on
    res["target"] = backend.target
    if meta is not None and "preprocessing" in meta:
        res["stages"] = stage_breakdown(backend, meta, batch, warmup, iterations, percentiles,
                                        frame_size)
    times = backend.layer_times(x, iterations) if layers else None
    if times is not None:  # None: the backend cannot time layers (ONNX Runtime)
        res["layers"] = [{"layer": k, "ms": v} for k, v in
                         sorted(times.items(), key=lambda kv: -kv[1])[:layers]]
        res["layers_total_ms"] = float(sum(times.values()))
    return res


def open_backend(path: Path, providers=None, threads: int | None = None,
                 device: str | None = None, tf32: bool = False, cuda_graph: bool = False,
                 batch: int | None = None) -> tuple[Backend, dict | None]:
    """(backend, metadata or None) for a plain model, a detector or an engine."""
    from edgeood.artifact.files import is_engine
    from edgeood.runtime import backend_for, engine_metadata
    if is_engine(path):
        meta = engine_metadata(path)
    else:
        from edgeood.graph.model import load_model
        from edgeood.artifact.metadata import KEY
        model = load_model(path)  # clear error for missing/corrupt files
        props = {p.key: p.value for p in model.metadata_props}
        meta = None
        if KEY in props:
            import json
            meta = json.loads(props[KEY])
    backend = backend_for(path, meta, providers, device, tf32, cuda_graph, batch,
                          threads=threads)
    return backend, meta


def frames_for(pre, batch: int, frame_size=(480, 640), seed: int = 0) -> np.ndarray:
    """uint8 camera-like frames (N x H x W x C) for the host preprocessing step."""
    h, w = frame_size if pre.resize else pre.size
    return np.random.default_rng(seed).integers(0, 256, (batch, h, w, pre.channels),
                                                dtype=np.uint8)


def stage_breakdown(backend: Backend, meta: dict, batch: int, warmup: int, iterations: int,
                    percentiles=(50, 90, 99), frame_size=(480, 640)) -> dict:
    """PRE (uint8 frames -> the input batch, on the host), NET (backend.run) and POST (outputs
    -> Detection -> per-image rows), each timed per batch over the same iterations."""
    from edgeood.artifact.metadata import DetectorMetadata
    from edgeood.data import Preprocess, open_source
    from edgeood.runtime.detector import Detection
    pre = Preprocess.from_dict(DetectorMetadata.from_dict(meta).preprocessing or {})
    frames = frames_for(pre, batch, frame_size)
    in_graph = backend.image_input is not None
    names = backend.output_names
    if "logits" not in names:
        return {}

    def host_pre() -> np.ndarray:
        if in_graph:  # --input uint8: the graph resizes and normalises
            return np.ascontiguousarray(frames)
        return next(open_source(frames, "frames").batches(pre, batch)).x

    def host_post(out: dict) -> list:
        det = Detection(logits=out["logits"],
                        scores={n[6:]: out[n] for n in names if n.startswith("score_")},
                        pvalues={n[7:]: out[n] for n in names if n.startswith("pvalue_")},
                        is_ood=out.get("is_ood"))
        return det.rows()

    for _ in range(warmup):
        host_post(backend.run(host_pre()))
    times = np.empty((3, iterations))
    for i in range(iterations):
        t0 = time.perf_counter()
        xb = host_pre()
        t1 = time.perf_counter()
        out = backend.run(xb)
        t2 = time.perf_counter()
        host_post(out)
        t3 = time.perf_counter()
        times[:, i] = (t1 - t0, t2 - t1, t3 - t2)
    times *= 1e3
    stages = {}
    for key, row in zip(("pre", "net", "post"), times):
        stats = {f"p{p:g}": percentile_or_none(row, p) for p in percentiles}
        stats["mean"] = float(row.mean())
        stages[key] = stats
    total = times.sum(axis=0)
    stages["total"] = {**{f"p{p:g}": percentile_or_none(total, p) for p in percentiles},
                       "mean": float(total.mean())}
    stages["throughput_ips"] = float(batch * 1e3 / total.mean())
    stages["frames"] = f"{frames.shape[2]}x{frames.shape[1]} uint8" + \
        (" (preprocessed in the graph)" if in_graph else "")
    return stages
