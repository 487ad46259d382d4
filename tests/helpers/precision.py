"""The digits detectors at float32 / float16 / int8 with every method, exported once per test
process (shared by tests/integration/test_precision.py, test_report.py and
tests/tensorrt/test_trt_targets.py)."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import edgeood
from edgeood.methods import registry

ALL = list(registry())  # every method, built-in or installed
PRECISIONS = ("float32", "float16", "int8")


@functools.cache
def _folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="edgeood_precision_"))


@functools.cache
def digits():
    from edgeood.zoo import digits as d
    return d.load_data(seed=0), d.shipped_model()


@functools.cache
def detector(precision: str):
    """(path, metadata) of the digits detector with every method at this precision; labelled
    calibration images (GROOD's prototypes), keep_taps for the parity checks."""
    import numpy as np
    data, model = digits()
    npz = _folder() / "id_val.npz"
    if not npz.exists():
        np.savez(npz, images=data.val[0], labels=data.val[1])
    res = edgeood.export(model, data=npz, methods=ALL, recipe="digits_cnn", keep_taps=True,
                         out=_folder() / f"digits.{precision}.onnx",
                         half=precision == "float16", int8=precision == "int8")
    return res.path, res.metadata


@functools.cache
def comparison():
    """evaluate_many over the three detectors (scores kept), ID test vs near / far OOD."""
    from edgeood.tools.evaluate import evaluate_many
    data, _ = digits()
    return evaluate_many([detector(p)[0] for p in PRECISIONS], data.test[0],
                         {"near": data.near, "far": data.far}, keep_scores=True)
