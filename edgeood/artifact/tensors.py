"""One description of an input or output tensor for every layer: the detector's signature
(metadata "io"), an engine's I/O (sidecar "engine.io", TensorRT type names), the builder's
inputs and the deploy generators' declarations.

The JSON forms stay as they were: unknown dims are written -1, named (symbolic) dims by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

Dim = Union[int, str, None]  # int: fixed; str: a named dynamic axis; None: unknown

# TensorRT DataType names <-> NumPy dtype names
TRT_TO_NUMPY = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
                "INT32": "int32", "INT64": "int64", "BOOL": "bool", "UINT8": "uint8",
                "DOUBLE": "float64"}
NUMPY_TO_TRT = {v: k for k, v in TRT_TO_NUMPY.items()}


def dim_of(value: Any) -> Dim:
    """A JSON / ONNX / TensorRT dim as a Dim: negative or empty ones unknown."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    return None


@dataclass(frozen=True)
class TensorSpec:
    """name, NumPy dtype name (float32, uint8, bool, ...), shape (batch first), and where a
    list holds both directions, mode ("input" | "output")."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    mode: str = ""

    # -- the JSON forms
    @classmethod
    def from_io(cls, d: dict[str, Any], mode: str = "") -> TensorSpec:
        """From the metadata's "io" entries ({name, dtype, shape}, -1 where unknown)."""
        return cls(str(d["name"]), str(d.get("dtype", "float32")),
                   tuple(dim_of(x) for x in d.get("shape") or []), mode)

    def to_io(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype,
                "shape": [-1 if d is None else d for d in self.shape]}

    @classmethod
    def from_engine_io(cls, d: dict[str, Any]) -> TensorSpec:
        """From an engine sidecar's "engine.io" ({name, mode, shape, dtype: TensorRT name})."""
        dtype = str(d.get("dtype", "FLOAT"))
        return cls(str(d["name"]), TRT_TO_NUMPY.get(dtype.upper(), dtype.lower()),
                   tuple(dim_of(x) for x in d.get("shape") or []), str(d.get("mode", "")))

    def to_engine_io(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "shape": list(self.dims()),
                "dtype": self.trt_dtype}

    # -- views
    @property
    def trt_dtype(self) -> str:
        return NUMPY_TO_TRT.get(self.dtype, self.dtype.upper())

    @property
    def batched(self) -> bool:
        """Whether the first axis is a dynamic (batch) one."""
        return bool(self.shape) and not (isinstance(self.shape[0], int) and self.shape[0] > 0)

    @property
    def static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def dims(self, strip_batch: bool = False, batch: int | None = None) -> tuple[int, ...]:
        """The shape as ints, -1 for every dynamic dim (what TensorRT and server configs take);
        strip_batch leaves the first axis out; with batch, a dynamic first axis is that many."""
        dims = [d if isinstance(d, int) else -1 for d in self.shape]
        if strip_batch:
            return tuple(dims[1:])
        if batch is not None and self.batched:
            dims[0] = batch
        return tuple(dims)
