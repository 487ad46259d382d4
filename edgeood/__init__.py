"""edgeood: fold out-of-distribution scoring into a classifier's ONNX graph, calibrate it on
in-distribution images, and run it on ONNX Runtime or TensorRT."""
__version__ = "0.1.0"


def export(*args, **kwargs):
    from edgeood.api import export as _export
    return _export(*args, **kwargs)


export.__doc__ = "See edgeood.api.export."


def calibrate(*args, **kwargs):
    from edgeood.api import calibrate as _calibrate
    return _calibrate(*args, **kwargs)


def load(path, providers=None):
    """A Detector for an exported .onnx detector (or a TensorRT engine with its sidecar)."""
    from edgeood.runtime import load as _load
    return _load(path, providers)
