"""The one interface every runtime backend implements (ONNX Runtime, TensorRT engines).

The Detector, calibration scoring and profiling only use what is declared here; the backend is
chosen from the file it is given (`edgeood.runtime.backend_for`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

# What a backend's `target` says: where its numbers come from. Thresholds and p-value
# references belong to the target they were calibrated on (docs/design/index.md, Conventions).
TARGET_KEYS = ("backend", "device", "precision")


@runtime_checkable
class Backend(Protocol):
    """A loaded model that maps an input batch to named output arrays.

    input_name / input_shape: the image input and its shape (batch first; a str or None where
    a dimension is dynamic). output_names / output_shapes: every output, in graph order.
    fixed_batch: the batch the model must be fed (None: any batch up to max_batch).
    providers: what actually runs it, as read back from the runtime (ONNX Runtime's
    session.get_providers(), or "TensorRT <version>"). target: {backend, device, precision}.
    """

    input_name: str
    input_shape: list[Any]
    output_names: list[str]
    output_shapes: dict[str, list[Any]]
    fixed_batch: int | None

    @property
    def providers(self) -> list[str]: ...

    @property
    def target(self) -> dict[str, str]: ...

    def run(self, x: np.ndarray[Any, Any], outputs: list[str] | None = None,
            extra: dict[str, np.ndarray[Any, Any]] | None = None
            ) -> dict[str, np.ndarray[Any, Any]]: ...


def describe_target(target: dict[str, str] | None) -> str:
    """'onnxruntime/cpu/float32' (or 'unknown' for detectors calibrated before targets were
    recorded)."""
    if not target:
        return "unknown"
    return "/".join(str(target.get(k, "?")) for k in TARGET_KEYS)


def same_target(a: dict[str, str] | None, b: dict[str, str] | None) -> bool:
    return bool(a) and bool(b) and all(a.get(k) == b.get(k)  # type: ignore[union-attr]
                                       for k in TARGET_KEYS)


def target_mismatch(metadata: dict[str, Any], target: dict[str, str] | None) -> str | None:
    """The one-line note when a detector runs on another target than it was calibrated on
    (None when they agree or the detector records no calibration target)."""
    calibration = metadata.get("calibration") or {}
    calibrated = calibration.get("target") if isinstance(calibration, dict) else None
    if not calibrated or not target or same_target(calibrated, target):
        return None
    return (f"thresholds and p-values were calibrated on {describe_target(calibrated)} and "
            f"this runs on {describe_target(target)}: scores may move (TF32, float16, int8, "
            "another device); recalibrate on this target with edgeood calibrate DETECTOR "
            "--data ID_DIR" + (" --device " + target["device"]
                               if target.get("backend") == "onnxruntime" else ""))


if TYPE_CHECKING:  # both backends conform (checked by mypy, no import at run time)
    from edgeood.runtime.onnxruntime.backend import OrtBackend
    from edgeood.runtime.tensorrt.backend import TensorRTBackend

    def _ort_is_a_backend(b: OrtBackend) -> Backend:
        return b

    def _tensorrt_is_a_backend(b: TensorRTBackend) -> Backend:
        return b
