"""Latency profiling of a model or detector with ONNX Runtime (random input, fixed batch)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeood.errors import EdgeoodError


def input_for(backend, batch: int, imgsz=None, seed: int = 0) -> np.ndarray:
    """A float32 random input of the model's shape with the given batch."""
    c, h, w = backend.input_shape[1:]
    if not isinstance(h, int) or not isinstance(w, int):
        if imgsz is None:
            raise EdgeoodError("the model's input size is dynamic; pass --imgsz H,W")
        h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
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


def latency_stats(ms: np.ndarray, batch: int, percentiles=(50, 90, 99)) -> dict:
    stats = {f"p{p:g}": float(np.percentile(ms, p)) for p in percentiles}
    stats.update(mean=float(ms.mean()), min=float(ms.min()), std=float(ms.std()))
    return {"latency_ms": stats, "throughput_ips": float(batch * 1e3 / ms.mean()),
            "iterations": int(len(ms))}


def profile(path, batch: int = 1, warmup: int = 10, iterations: int = 100, imgsz=None,
            percentiles=(50, 90, 99), providers=None, threads: int | None = None) -> dict:
    from edgeood.graph.model import load_model
    from edgeood.runtime.ort_backend import OrtBackend
    if batch < 1 or iterations < 1 or warmup < 0:
        raise EdgeoodError("--batch and --iterations must be >= 1 and --warmup >= 0")
    load_model(path)  # clear error for missing/corrupt files
    backend = OrtBackend(Path(path), providers, threads)
    x = input_for(backend, batch, imgsz)
    ms = time_runs(lambda: backend.run(x), warmup, iterations)
    return {"model": str(path), "batch": batch, "providers": backend.providers,
            **latency_stats(ms, batch, percentiles)}
