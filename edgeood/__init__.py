"""edgeood: fold out-of-distribution scoring into a classifier's ONNX graph, calibrate it on
in-distribution images, and run it on ONNX Runtime or TensorRT."""
from edgeood.version import __version__  # noqa: F401

# The submodule edgeood.calibrate (design layout) would replace the API function of the same
# name on first import; importing it here first keeps `edgeood.calibrate(...)` the function.
from edgeood import calibrate as _calibrate_module  # noqa: E402,F401


def export(*args, **kwargs):
    """Fold OOD scoring into a classifier and calibrate it; see edgeood.api.export."""
    from edgeood.api import export as _export
    return _export(*args, **kwargs)


def calibrate(*args, **kwargs):  # noqa: F811
    """Re-fit thresholds and p-value references; see edgeood.api.calibrate."""
    from edgeood.api import calibrate as _calibrate
    return _calibrate(*args, **kwargs)


def load(path, providers=None, **options):
    """A Detector for an exported .onnx detector (or a TensorRT engine with its sidecar);
    options: device (cpu | cuda | tensorrt), tf32, cuda_graph, batch."""
    from edgeood.runtime import load as _load
    return _load(path, providers, **options)


def __getattr__(name):
    """edgeood.StreamMonitor (the stream-level shift alarm), imported on first use."""
    if name == "StreamMonitor":
        from edgeood.runtime.monitor import StreamMonitor
        return StreamMonitor
    raise AttributeError(f"module 'edgeood' has no attribute {name!r}")
