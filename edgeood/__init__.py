"""edgeood: fold out-of-distribution scoring into a classifier's ONNX graph, calibrate it on
in-distribution images, and run it on ONNX Runtime or TensorRT.

`import edgeood` is cheap: the API (and with it onnx, onnxruntime and the methods) is imported
on first use of a name below.
"""
from edgeood.version import __version__  # noqa: F401
from edgeood import progress as _progress  # noqa: F401 - warnings reach stderr by default

_LAZY = {"export": "edgeood.api", "calibrate": "edgeood.api", "load": "edgeood.api",
         "build": "edgeood.api", "StreamMonitor": "edgeood.stats.monitor"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    """The public API, imported on first use (PEP 562)."""
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgeood' has no attribute {name!r}")
