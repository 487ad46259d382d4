"""The Python API the CLI calls: export(), calibrate(), load(), build().

Each function hands its arguments to the layer that does the work: the export pipeline
(edgeood.pipeline), the runtime (edgeood.runtime) or the TensorRT builder (edgeood.tensorrt).
"""
from __future__ import annotations

from pathlib import Path

from edgeood.artifact.files import is_engine
from edgeood.pipeline.export import ExportResult, export  # noqa: F401


def calibrate(detector, data, tpr: float | None = None, batch: int = 32, out=None,
              seed: int | None = None, progress: bool = False, arl: float | None = None,
              delta: float | None = None, stride: int | None = None,
              stream_monitor: bool | None = None, monitor_methods=None,
              device: str | None = None, scorer=None) -> ExportResult:
    """Re-fit the thresholds and p-value references of an existing detector on new ID images
    (fitted statistics are kept); a TensorRT engine recalibrates its source detector on the
    engine itself and is rebuilt (edgeood.pipeline.engine_calibrate)."""
    path = Path(detector)
    if is_engine(path) and scorer is None:
        from edgeood.pipeline.engine_calibrate import calibrate_engine
        return calibrate_engine(path, data, tpr=tpr, batch=batch, seed=seed, progress=progress,
                                out=out)
    from edgeood.pipeline.export import calibrate as calibrate_detector
    return calibrate_detector(path, data, tpr=tpr, batch=batch, out=out, seed=seed,
                              progress=progress, arl=arl, delta=delta, stride=stride,
                              stream_monitor=stream_monitor, monitor_methods=monitor_methods,
                              device=device, scorer=scorer)


def load(path, providers: list[str] | None = None, **options):
    """A Detector for an exported file (backend chosen from the file; options: device, tf32,
    cuda_graph, batch as in edgeood.runtime.load)."""
    from edgeood.runtime import load as _load
    return _load(path, providers, **options)


def build(detector, half: bool = False, int8: bool = False, batch: int | None = None,
          dynamic: bool = False, workspace: float | None = None, timing_cache=None,
          device: str = "gpu", out=None, tf32: bool = False, force: bool = False):
    """A TensorRT engine (plain plan + <engine>.json) from a detector; see
    edgeood.tensorrt.builder. An engine whose source, TensorRT version, GPU and options match
    is reused."""
    from edgeood.tensorrt.builder import build_engine, validate_build
    req = validate_build(detector, half, int8, batch, dynamic, workspace, timing_cache, device,
                         out, tf32)
    return build_engine(req, force=force)
