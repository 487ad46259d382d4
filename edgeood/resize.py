"""The resize rules a detector's preprocessing can use, named in its metadata
(`preprocessing.resize_rule`), so that the host path and the graph resize the same way.

- ``pil_bilinear`` (the default of detectors with a float input only): PIL's ``BILINEAR``.
  PIL widens its triangle filter by the scale when it downscales (antialiasing) and rounds the
  result to uint8. No ONNX Resize (and no TensorRT resize layer) reproduces it.
- ``half_pixel_linear`` (detectors exported with ``--input uint8``): ONNX ``Resize`` with
  ``mode=linear``, ``coordinate_transformation_mode=half_pixel`` and no antialiasing, on float
  pixel values (no rounding). Output pixel i of n_out samples the input at
  ``x = (i + 0.5) * n_in / n_out - 0.5``, clamped to ``[0, n_in - 1]``, and interpolates
  linearly between ``floor(x)`` and ``floor(x) + 1``; rows and columns each. It equals PIL's
  bilinear when upscaling (up to PIL's uint8 rounding) and is the identity at the same size;
  when downscaling by more than 2x it skips pixels (no antialiasing): scale in the camera
  pipeline (nvvidconv, videoscale) first if that matters. TensorRT's resize layer implements
  the same rule, so the in-graph resize runs unchanged in an engine.
"""
from __future__ import annotations

import numpy as np

PIL_BILINEAR = "pil_bilinear"
HALF_PIXEL_LINEAR = "half_pixel_linear"
RULES = (PIL_BILINEAR, HALF_PIXEL_LINEAR)


def half_pixel_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, weight of the upper) for each of n_out output samples."""
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0.0, n_in - 1)
    lo = np.floor(x).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (x - lo).astype(np.float32)


def half_pixel_linear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H x W x C (any dtype) -> size[0] x size[1] x C float32 pixel values (0..255 for uint8
    images), by the ``half_pixel_linear`` rule: what the graph's Resize computes."""
    x = np.asarray(img, np.float32)
    for axis, (n_in, n_out) in enumerate(zip(x.shape[:2], size)):
        if n_in == n_out:
            continue
        lo, hi, w = half_pixel_taps(n_in, n_out)
        shape = [1] * x.ndim
        shape[axis] = n_out
        a, b = np.take(x, lo, axis=axis), np.take(x, hi, axis=axis)
        x = a + (b - a) * w.reshape(shape)
    return np.ascontiguousarray(x, dtype=np.float32)


def pil_bilinear(img: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """H x W x C uint8 -> size[0] x size[1] x C uint8 with PIL's BILINEAR."""
    from PIL import Image
    mode = "L" if channels == 1 else "RGB"
    pil = Image.fromarray(img[:, :, 0] if channels == 1 else img, mode)
    out = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR))
    return out.reshape(size[0], size[1], channels)


def resize(img: np.ndarray, size: tuple[int, int], channels: int, rule: str) -> np.ndarray:
    """One H x W x C image at the model size by the named rule."""
    if rule == HALF_PIXEL_LINEAR:
        return half_pixel_linear(img, size)
    return pil_bilinear(img, size, channels)
