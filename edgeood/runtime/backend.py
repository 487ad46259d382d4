"""The one interface every runtime backend implements (ONNX Runtime, TensorRT engines).

The Detector, calibration scoring and profiling only use what is declared here; the backend is
chosen from the file it is given (`edgeood.runtime.backend_for`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from edgeood.errors import EdgeoodError

# What a backend's `target` says: where its numbers come from. Thresholds and p-value
# references belong to the target they were calibrated on (docs/design/index.md, Conventions).
TARGET_KEYS = ("backend", "device", "precision")


@runtime_checkable
class Backend(Protocol):
    """A loaded model that maps an input batch to named output arrays.

    input_name / input_shape: the float image input and its shape (batch first; a str or None
    where a dimension is dynamic). image_input: the uint8 N x H x W x C `image` input of an
    --input uint8 detector (None when there is none); run() sends uint8 batches to it.
    output_names / output_shapes: every output, in graph order. fixed_batch: the batch the model
    must be fed (None: any batch). providers: what actually runs it, as read back from the
    runtime (ONNX Runtime's session.get_providers(), or "TensorRT <version>"). target:
    {backend, device, precision} (the device is target["device"]); runs_on: the same in one line
    for people. layer_times: mean milliseconds per layer over `iterations` runs of x, or None
    where the backend cannot time layers (ONNX Runtime). close() releases the session or the
    device memory; a closed backend refuses every call in one line (EdgeoodError); `with`
    closes it.
    """

    input_name: str
    input_shape: list[Any]
    image_input: str | None
    output_names: list[str]
    output_shapes: dict[str, list[Any]]
    fixed_batch: int | None

    @property
    def providers(self) -> list[str]: ...

    @property
    def target(self) -> dict[str, str]: ...

    @property
    def runs_on(self) -> str: ...

    def run(self, x: np.ndarray[Any, Any], outputs: list[str] | None = None,
            extra: dict[str, np.ndarray[Any, Any]] | None = None
            ) -> dict[str, np.ndarray[Any, Any]]: ...

    def layer_times(self, x: np.ndarray[Any, Any],
                    iterations: int = 10) -> dict[str, float] | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...


def closed_error(what: str) -> EdgeoodError:
    """The one-line refusal of a backend used after close()."""
    return EdgeoodError(f"{what} was closed; load the detector again (edgeood.load) to run it")


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
