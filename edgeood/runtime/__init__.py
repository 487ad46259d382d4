"""Runtime: one Detector interface, one backend class per engine kind, chosen from the file."""
from __future__ import annotations

from pathlib import Path

from edgeood.errors import EdgeoodError, spell
from edgeood.artifact.files import ENGINE_SUFFIXES, is_engine, kind_of  # noqa: F401
from edgeood.artifact.metadata import read_metadata, sidecar_path
from edgeood.runtime.detector import Detection, Detector  # noqa: F401

__all__ = ["ENGINE_SUFFIXES", "Detection", "Detector", "load", "backend_for", "engine_metadata",
           "onnx_metadata"]


def load(path, providers: list | None = None, device: str | None = None, tf32: bool = False,
         cuda_graph: bool = False, batch: int | None = None) -> Detector:
    """A Detector for a detector file, its backend chosen from the file: an .onnx detector
    runs on ONNX Runtime (device: cpu | cuda | tensorrt, default the CUDA provider where a
    session gets it, else the CPU), an engine (.engine / .plan / .trt with its sidecar) on
    TensorRT. tf32: allow TF32 on the GPU; cuda_graph: replay one captured CUDA graph (fixed
    shapes; batch: the batch to capture for a dynamic-batch .onnx detector)."""
    path = Path(path)
    meta = onnx_metadata(path) if kind_of(path) == "onnx" else engine_metadata(path)
    backend = backend_for(path, meta, providers, device, tf32, cuda_graph, batch)
    return Detector(backend, meta, path)


def onnx_metadata(path: Path) -> dict:
    """An .onnx detector's metadata, checked against its graph (the graph decides)."""
    from edgeood.artifact.metadata import read_with_model
    from edgeood.artifact.truth import check_graph
    meta, model = read_with_model(path)
    check_graph(path, meta, model)
    return meta


def engine_metadata(path: Path) -> dict:
    """An engine's sidecar, refused in one line when missing or not written by edgeood build
    (checked before TensorRT is needed)."""
    from edgeood.runtime.tensorrt.backend import engine_section
    if not path.is_file():
        raise EdgeoodError(f"{path}: no such file; build an engine with edgeood build "
                           "DETECTOR.onnx")
    if not sidecar_path(path).is_file():
        engine_section(path, None)  # raises: no sidecar
    try:
        meta = read_metadata(path)
    except ValueError:
        raise EdgeoodError(f"{sidecar_path(path)} is not valid JSON; rebuild the engine with "
                           "edgeood build") from None
    engine_section(path, meta)
    return meta


def backend_for(path: Path, meta: dict | None = None, providers: list | None = None,
                device: str | None = None, tf32: bool = False, cuda_graph: bool = False,
                batch: int | None = None, threads: int | None = None):
    """The backend that runs this file (edgeood.runtime.backend.Backend), the one place a
    file is mapped to a backend class: an engine (meta: its sidecar) on TensorRT, an .onnx
    model or detector (meta: its metadata, None for a plain model) on ONNX Runtime."""
    path = Path(path)
    if kind_of(path) == "engine":
        if device not in (None, "gpu") and not str(device).startswith("dla"):
            raise EdgeoodError(f"{spell('device')} {device} applies to .onnx detectors; "
                               f"{path.name} is a "
                               "TensorRT engine and runs on the device it was built for")
        from edgeood.runtime.tensorrt.backend import TensorRTBackend
        return TensorRTBackend(path, meta, cuda_graph=cuda_graph)
    from edgeood.runtime.onnxruntime.backend import OrtBackend
    return OrtBackend(path, providers, threads, device=device, tf32=tf32, cuda_graph=cuda_graph,
                      precision=str((meta or {}).get("precision", "float32")),
                      report_fallback=True, graph_batch=batch)
