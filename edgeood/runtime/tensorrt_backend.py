"""TensorRT backend (plain TensorRT plan files with a JSON sidecar).

Engine building and the TensorRT runner are not part of this release yet; loading an engine
fails with a clear message instead of a half-working path.
"""
from __future__ import annotations

from pathlib import Path

from edgeood.errors import EdgeoodError


class TensorRTBackend:
    def __init__(self, path: Path):
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            raise EdgeoodError(f"{path} is a TensorRT engine and needs the tensorrt package "
                               "(pip install 'edgeood[trt]' on a machine with an NVIDIA GPU); "
                               "or run the .onnx detector instead") from None
        raise EdgeoodError("running TensorRT engines is not implemented in this edgeood "
                           "version yet; run the .onnx detector with ONNX Runtime (its "
                           "TensorRT execution provider is used when installed)")
