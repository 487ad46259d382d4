"""`edgeood calibrate ENGINE --data ID_DIR`: recalibrate on the engine itself.

Thresholds and p-value references are constants of the graph, so an engine cannot be edited in
place: its source detector (named, with its sha256, in the engine's sidecar) is rescored with
the engine (TensorRT, its precision and device), refitted and saved, and the engine rebuilt
from it with the options it was built with. The sidecar then records the new calibration and
its target (tensorrt, gpu|dlaN, precision).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from edgeood.errors import EdgeoodError

if TYPE_CHECKING:  # built by edgeood.api from keyword arguments
    from edgeood.config import CalibrateConfig


def source_of(engine: Path, section: dict) -> Path:
    """The source detector of an engine, checked against the sha256 its sidecar records."""
    from edgeood.tensorrt.builder import detector_sha256
    src = (section.get("source") or {})
    path = (engine.parent / str(src.get("path", ""))).resolve()
    if not src.get("path") or not path.is_file():
        raise EdgeoodError(f"recalibrating {engine.name} refits its source detector "
                           f"{src.get('path') or '(not recorded)'}, which is not there; keep it "
                           "beside the engine or rebuild the engine with edgeood build")
    if src.get("sha256") and detector_sha256(path) != src["sha256"]:
        raise EdgeoodError(f"{path} changed since {engine.name} was built from it; rebuild the "
                           f"engine (edgeood build {path}) before recalibrating it")
    return path


def _frame_size(recorded) -> tuple | None:
    """The --frame-size an engine's build options record ({"min": [H, W], ...}), or None."""
    if not recorded:
        return None
    return tuple(tuple(int(v) for v in recorded[k]) for k in ("min", "opt", "max"))


def calibrate_engine(engine, cfg: CalibrateConfig):
    """Recalibrate an engine's source detector on the engine (cfg's data, tpr, batch, seed,
    out), then rebuild the engine."""
    from edgeood.pipeline.export import ExportResult, calibrate
    from edgeood.tensorrt.builder import build_engine, validate_build
    from edgeood.runtime import backend_for, engine_metadata
    from edgeood.runtime.tensorrt.backend import engine_section
    engine = Path(engine)
    meta = engine_metadata(engine)
    section = engine_section(engine, meta)
    source = source_of(engine, section)
    opts = section.get("build_options") or {}
    with backend_for(engine, meta) as backend:
        res = calibrate(source, dataclasses.replace(
            cfg, arl=None, delta=None, stride=None, stream_monitor=None, monitor_methods=None,
            device=None, scorer=backend))
    device = str(opts.get("device", "gpu"))
    req = validate_build(res.path, half=bool(opts.get("fp16_flag")),
                         batch=opts.get("max_batch"), dynamic=bool(opts.get("dynamic")),
                         workspace=opts.get("workspace_gb"),
                         timing_cache=section.get("timing_cache"),
                         device="gpu" if device == "gpu" else f"dla:{device[3:]}",
                         out=engine, tf32=bool(opts.get("tf32")),
                         frame_size=_frame_size(opts.get("frame_size")))
    built = build_engine(req, force=True)
    return ExportResult(built.path, built.metadata)
