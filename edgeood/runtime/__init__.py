"""Runtime: one Detector interface, one backend class per engine kind, chosen from the file."""
from __future__ import annotations

from pathlib import Path

from edgeood.errors import EdgeoodError
from edgeood.metadata import read_metadata, sidecar_path
from edgeood.runtime.detector import Detection, Detector  # noqa: F401

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def load(path, providers: list[str] | None = None) -> Detector:
    path = Path(path)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        from edgeood.runtime.tensorrt_backend import TensorRTBackend
        if not sidecar_path(path).is_file():
            raise EdgeoodError(f"{path} has no {sidecar_path(path).name} sidecar; keep the JSON "
                               "written by edgeood build next to the engine")
        return Detector(TensorRTBackend(path), read_metadata(path), path)
    if path.suffix.lower() != ".onnx":
        raise EdgeoodError(f"{path}: unknown detector type; pass an .onnx detector or a "
                           f"TensorRT engine ({', '.join(ENGINE_SUFFIXES)})")
    meta = read_metadata(path)
    from edgeood.runtime.ort_backend import OrtBackend
    return Detector(OrtBackend(path, providers), meta, path)
