"""CUDA through cuda-python: the runtime module, one status check for every call, the GPU's
name and compute capability, device / pinned host buffers, a stream and a captured graph.

cuda-python returns a tuple from every call, its first element a cudaError_t; `check` is the
one place that looks at it. The runtime module is `cuda.bindings.runtime` (cuda-python >= 12.6)
with the older `cuda.cudart` (JetPack 6 images may ship cuda-python 12.2-12.4) as fallback.
Importing this module needs neither cuda-python nor a GPU; the functions below do.
"""
from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np

from edgeood.errors import EdgeoodError

T = TypeVar("T")

RUNTIME_MODULES = ("cuda.bindings.runtime", "cuda.cudart")


class CudaError(EdgeoodError):
    """A CUDA runtime call failed (the message names the call and the CUDA error)."""


class _LazyRuntime:
    """Stands for the runtime module and imports it on first use (cuda-python takes ~0.2 s to
    import, and edgeood imports this module on machines without it)."""

    def __init__(self, names: tuple[str, ...] = RUNTIME_MODULES):
        self._names = names
        self._module: ModuleType | None = None

    def load(self) -> ModuleType:
        if self._module is None:
            for name in self._names:
                try:
                    self._module = importlib.import_module(name)
                    break
                except ImportError:
                    continue
            else:
                raise EdgeoodError("the TensorRT runtime needs cuda-python: pip install "
                                   "'edgeood[trt]' (or pip install cuda-python)")
        return self._module

    def __getattr__(self, name: str) -> Any:
        return getattr(self.load(), name)


# Type checkers see the real module (typings/cuda/bindings/runtime.pyi), so every call below
# is checked against its signature; at run time `rt` is the lazy stand-in.
_runtime = _LazyRuntime()
if TYPE_CHECKING:
    from cuda.bindings import runtime as rt
else:
    rt = _runtime


def cudart() -> ModuleType:
    """The CUDA runtime bindings: cuda.bindings.runtime, else the older cuda.cudart."""
    return _runtime.load()


def error_text(err: Any) -> str:
    """'cudaErrorMemoryAllocation (out of memory)' for a cudaError_t."""
    try:
        name = rt.cudaGetErrorName(err)[1].decode()
        desc = rt.cudaGetErrorString(err)[1].decode()
    except Exception:  # a code this runtime cannot name, or no runtime at all
        return f"CUDA error {int(err)}"
    return f"{name} ({desc})"


@overload
def check(result: tuple[Any], what: str) -> None: ...
@overload
def check(result: tuple[Any, T], what: str) -> T: ...
def check(result: tuple[Any, ...], what: str) -> Any:
    """The value(s) of a cuda-python call after its status, or CudaError naming the call:
    check(rt.cudaMalloc(n), "cudaMalloc") -> the device pointer."""
    err, *values = result
    if int(err) != 0:
        raise CudaError(f"CUDA call {what} failed: {error_text(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"
    index: int = 0

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "compute_capability": self.compute_capability}


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device `device` (CudaError without one)."""
    count = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if count <= device:
        raise CudaError(f"no CUDA device {device} (this machine has {count})")
    prop = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    raw = prop.name
    name = (raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes)
            else str(raw)).strip()
    return GpuInfo(name, f"{prop.major}.{prop.minor}", device)


class DeviceBuffer:
    """cudaMalloc'ed device memory of a fixed size, freed once."""

    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int = int(check(rt.cudaMalloc(self.nbytes), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            check(rt.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost) seen as a NumPy array of a fixed shape and
    dtype; async copies from and to it overlap with the GPU."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any]):
        self.dtype = np.dtype(dtype)
        self.nbytes = max(int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize, 1)
        self.ptr: int = int(check(rt.cudaMallocHost(self.nbytes), "cudaMallocHost"))
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        flat = np.ctypeslib.as_array(raw)
        count = int(np.prod(shape, dtype=np.int64))
        self.array: np.ndarray[Any, Any] = flat[:count * self.dtype.itemsize].view(
            self.dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            del self.array
            check(rt.cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


class Stream:
    """One non-blocking CUDA stream with async copies and an optional captured graph."""

    def __init__(self) -> None:
        self.handle: rt.cudaStream_t | None = check(
            rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self.graph: rt.cudaGraph_t | None = None
        self.graph_exec: rt.cudaGraphExec_t | None = None

    @property
    def live(self) -> rt.cudaStream_t:
        if self.handle is None:
            raise CudaError("the CUDA stream was destroyed")
        return self.handle

    @property
    def ptr(self) -> int:
        """The stream handle as TensorRT's execute_async_v3 takes it."""
        return int(self.live)

    def to_device(self, dst: int, src: int, nbytes: int) -> None:
        check(rt.cudaMemcpyAsync(dst, src, nbytes,
                                      rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.live),
              "cudaMemcpyAsync(host to device)")

    def to_host(self, dst: int, src: int, nbytes: int) -> None:
        check(rt.cudaMemcpyAsync(dst, src, nbytes,
                                      rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.live),
              "cudaMemcpyAsync(device to host)")

    def synchronize(self) -> None:
        check(rt.cudaStreamSynchronize(self.live), "cudaStreamSynchronize")

    def begin_capture(self) -> None:
        check(rt.cudaStreamBeginCapture(
            self.live, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
            "cudaStreamBeginCapture")

    def end_capture(self) -> None:
        """Finish a capture and instantiate the graph for launch()."""
        graph = check(rt.cudaStreamEndCapture(self.live), "cudaStreamEndCapture")
        self.graph = graph
        self.graph_exec = check(rt.cudaGraphInstantiateWithFlags(graph, 0),
                                "cudaGraphInstantiateWithFlags")

    @property
    def captured(self) -> bool:
        return self.graph_exec is not None

    def launch(self) -> None:
        if self.graph_exec is None:
            raise CudaError("no captured CUDA graph to launch")
        check(rt.cudaGraphLaunch(self.graph_exec, self.live), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self.graph_exec is not None:
            check(rt.cudaGraphExecDestroy(self.graph_exec), "cudaGraphExecDestroy")
            self.graph_exec = None
        if self.graph is not None:
            check(rt.cudaGraphDestroy(self.graph), "cudaGraphDestroy")
            self.graph = None
        if self.handle is not None:
            check(rt.cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None
