"""TensorRT backend: a plain serialized plan (what `edgeood build`, trtexec and DeepStream
write and load) with its `<engine>.json` sidecar.

One execution context, device buffers allocated once at the engine's largest shapes and
bound with set_tensor_address once, pinned host buffers, async copies and execute_async_v3
on one CUDA stream (cuda-python), and optionally one captured CUDA graph for fixed shapes.
An engine is refused, in one line, when its sidecar is missing, names another TensorRT
version or GPU, no longer matches the plan file, or lists other I/O tensors than the plan.

Written against the TensorRT 10 Python API (JetPack 6 ships 10.3) and TensorRT 11; checked
with mypy --strict against tensorrt-stubs (see pyproject.toml), run only where TensorRT is.
"""
from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeood.artifact.names import IMAGE_INPUT, MONITOR_STATE
from edgeood.artifact.tensors import TensorSpec
from edgeood.errors import EdgeoodError
from edgeood.artifact.metadata import sidecar_path
from edgeood.runtime.backend import closed_error
from edgeood.runtime.tensorrt.cuda import DeviceBuffer, GpuInfo, PinnedBuffer, Stream, gpu_info

if TYPE_CHECKING:
    import tensorrt as trt

NDArray = np.ndarray[Any, Any]

# TensorRT DataType names -> NumPy (trt.nptype is untyped; this table is the same mapping)
DTYPES: dict[str, type[np.generic]] = {
    "FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
    "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}


def tensorrt_or_none() -> ModuleType | None:
    """The tensorrt module, or None where TensorRT is not installed. tensorrt-stubs alone
    leaves an empty `tensorrt` namespace package behind (no Builder): that counts as absent."""
    try:
        module = importlib.import_module("tensorrt")
    except ImportError:
        return None
    return module if hasattr(module, "Builder") and hasattr(module, "__version__") else None


def tensorrt_version() -> str | None:
    module = tensorrt_or_none()
    return str(module.__version__) if module is not None else None


def require_tensorrt(what: str = "running a TensorRT engine") -> ModuleType:
    module = tensorrt_or_none()
    if module is None:
        raise EdgeoodError(f"{what} needs TensorRT, which is not installed here (JetPack ships "
                           "it; on a desktop GPU: pip install 'edgeood[trt]'); or run the .onnx "
                           "detector with ONNX Runtime")
    return module


def engine_tensor(name: str, mode: str, shape: tuple[int, ...], dtype: str) -> TensorSpec:
    """An engine's I/O tensor as TensorRT gives it: mode "input" | "output", shape -1 where
    dynamic, dtype a DataType name (FLOAT, HALF, INT64, ...)."""
    return TensorSpec.from_engine_io({"name": name, "mode": mode, "shape": list(shape),
                                      "dtype": dtype})


# --- the sidecar, checked before the plan is touched ------------------------------------------
def engine_section(path: Path, meta: dict[str, Any] | None) -> dict[str, Any]:
    """The sidecar's "engine" section, or a one-line refusal."""
    side = sidecar_path(path)
    if meta is None:
        raise EdgeoodError(f"{path} has no {side.name} sidecar; keep the JSON written by "
                           "edgeood build next to the engine (or rebuild: edgeood build "
                           "DETECTOR.onnx)")
    section = meta.get("engine")
    if not isinstance(section, dict):
        raise EdgeoodError(f"{side} was not written by edgeood build (no \"engine\" section); "
                           "rebuild the engine with edgeood build DETECTOR.onnx")
    return section


def check_engine_target(path: Path, section: dict[str, Any], version: str,
                        gpu: GpuInfo | None) -> None:
    """Refuse an engine built with another TensorRT version or for another GPU."""
    source = section.get("source", {}).get("path", "DETECTOR.onnx")
    built = str(section.get("tensorrt_version"))
    if built != version:
        raise EdgeoodError(f"{path} was built with TensorRT {built}; this machine has TensorRT "
                           f"{version}, which cannot load it: rebuild with edgeood build {source}")
    want = section.get("gpu") or {}
    if gpu is not None and (want.get("name") != gpu.name
                            or want.get("compute_capability") != gpu.compute_capability):
        raise EdgeoodError(f"{path} was built for {want.get('name')} (compute capability "
                           f"{want.get('compute_capability')}); this GPU is {gpu.name} "
                           f"({gpu.compute_capability}): rebuild with edgeood build {source}")


def check_plan(path: Path, section: dict[str, Any], plan: bytes) -> None:
    want = section.get("plan_sha256")
    if want and hashlib.sha256(plan).hexdigest() != want:
        raise EdgeoodError(f"{path} is not the plan its sidecar describes (sha256 differs): the "
                           "engine file was replaced; rebuild it with edgeood build")


def check_io(path: Path, section: dict[str, Any], actual: list[TensorSpec]) -> None:
    """Refuse a plan whose I/O tensor names (and directions) differ from the sidecar's."""
    listed = section.get("io") or []
    want = sorted((str(t["name"]), str(t["mode"])) for t in listed)
    have = sorted((t.name, t.mode) for t in actual)
    if want != have:
        missing = sorted({n for n, _ in want} - {n for n, _ in have})
        extra = sorted({n for n, _ in have} - {n for n, _ in want})
        raise EdgeoodError(f"{path}: the engine's I/O tensors do not match its sidecar "
                           f"(sidecar only: {', '.join(missing) or '-'}; engine only: "
                           f"{', '.join(extra) or '-'}); rebuild with edgeood build")


def engine_target(section: dict[str, Any]) -> dict[str, str]:
    return {"backend": "tensorrt", "device": str(section.get("device", "gpu")),
            "precision": str(section.get("target_precision", section.get("precision",
                                                                          "float32")))}


# --- the runtime ------------------------------------------------------------------------------
class _LayerTimes:
    """Per-layer milliseconds reported by TensorRT's profiler, summed over runs."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.runs = 0

    def add(self, layer_name: str, ms: float) -> None:
        self.total[layer_name] = self.total.get(layer_name, 0.0) + float(ms)


def make_profiler(times: _LayerTimes) -> trt.IProfiler:
    """A TensorRT IProfiler that adds every layer's time to `times`."""
    import tensorrt as trt

    class Profiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            times.add(layer_name, ms)

    return Profiler()


def dims(d: trt.Dims) -> tuple[int, ...]:
    """A TensorRT Dims as a tuple (-1 where dynamic)."""
    return tuple(int(d[i]) for i in range(len(d)))


class TensorRTBackend:
    """Runs a TensorRT engine (Backend protocol: edgeood/runtime/backend.py)."""

    def __init__(self, path: str | Path, metadata: dict[str, Any] | None = None,
                 cuda_graph: bool = False):
        path = Path(path)
        module = require_tensorrt()
        import tensorrt as trt
        self.path = path
        self.section = engine_section(path, metadata)
        self.version = str(module.__version__)
        check_engine_target(path, self.section, self.version, gpu_info())
        plan = path.read_bytes()
        check_plan(path, self.section, plan)
        self.logger = trt.Logger(trt.Logger.WARNING)
        # plugins an engine may hold (WeiPer's ScatterElements with reduction="add")
        trt.init_libnvinfer_plugins(self.logger, "")
        self.runtime = trt.Runtime(self.logger)
        dla = self.section.get("dla_core")
        if isinstance(dla, int):
            self.runtime.DLA_core = dla
        engine: trt.ICudaEngine | None = self.runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EdgeoodError(f"TensorRT could not deserialize {path}; rebuild it with "
                               "edgeood build on this machine")
        self.engine: trt.ICudaEngine = engine
        self.tensors = self._io_tensors()
        check_io(path, self.section, self.tensors)
        context: trt.IExecutionContext | None = engine.create_execution_context()
        if context is None:
            raise EdgeoodError(f"TensorRT could not create an execution context for {path} "
                               "(out of GPU memory?)")
        self.context: trt.IExecutionContext = context
        self.stream = Stream()
        inputs = [t for t in self.tensors if t.mode == "input"]
        image = next((t for t in inputs if len(t.shape) == 4
                      and t.trt_dtype in ("FLOAT", "HALF") and t.name != IMAGE_INPUT), inputs[0])
        self.input_name = image.name
        frames = next((t for t in inputs if t.name == IMAGE_INPUT and t.trt_dtype == "UINT8"), None)
        self.image_input: str | None = frames.name if frames is not None else None
        # the entries of an --input uint8 detector (float batches, uint8 frames): the one not
        # fed gets an empty batch
        self.entries = {image.name, frames.name} if frames is not None else set()
        self.input_shape: list[Any] = [d if d >= 0 else None for d in image.dims()]
        self.output_names = [t.name for t in self.tensors if t.mode == "output"]
        self.output_shapes: dict[str, list[Any]] = {
            t.name: [d if d >= 0 else None for d in t.dims()]
            for t in self.tensors if t.mode == "output"}
        self.dynamic = image.dims()[0] < 0
        self.max_batch = self._max_shape(image)[0]
        self.cuda_graph = bool(cuda_graph)
        # a dynamic engine runs any batch up to max_batch; a fixed one (or a captured graph,
        # which replays fixed shapes) is fed padded chunks of max_batch
        self.fixed_batch: int | None = None if self.dynamic and not self.cuda_graph \
            else self.max_batch
        self.device: dict[str, DeviceBuffer] = {}
        self.host: dict[str, PinnedBuffer] = {}
        for t in self.tensors:
            shape = self._max_shape(t)
            dtype = np.dtype(DTYPES.get(t.trt_dtype, np.float32))
            self.device[t.name] = DeviceBuffer(int(np.prod(shape)) * dtype.itemsize)
            self.host[t.name] = PinnedBuffer(shape, dtype)
            if not self.context.set_tensor_address(t.name, self.device[t.name].ptr):
                raise EdgeoodError(f"TensorRT refused the address of {t.name} in {path}")
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.closed = False

    # -- engine introspection
    def _io_tensors(self) -> list[TensorSpec]:
        import tensorrt as trt
        out = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            out.append(engine_tensor(name, "input" if mode == trt.TensorIOMode.INPUT else "output",
                                  dims(self.engine.get_tensor_shape(name)),
                                  self.engine.get_tensor_dtype(name).name))
        return out

    def _max_shape(self, t: TensorSpec) -> tuple[int, ...]:
        """The largest shape a tensor takes: its own where static, the optimization profile's
        maximum for dynamic inputs, and for outputs the input batch maximum on axis 0."""
        shape = t.dims()
        if all(d >= 0 for d in shape):
            return shape
        if t.mode == "input":
            return dims(self.engine.get_tensor_profile_shape(t.name, 0)[2])
        first = next(s for s in self.tensors if s.mode == "input")
        batch = int(self.engine.get_tensor_profile_shape(first.name, 0)[2][0]) \
            if first.dims()[0] < 0 else first.dims()[0]
        if any(d < 0 for d in shape[1:]):
            raise EdgeoodError(f"{self.path}: output {t.name} has a data-dependent shape "
                               f"{list(shape)}; edgeood engines have fixed output shapes")
        return (batch, *shape[1:])

    # -- Backend protocol
    def _check_open(self) -> None:
        if self.closed:
            raise closed_error(f"the TensorRT backend of {self.path}")

    @property
    def providers(self) -> list[str]:
        return [f"TensorRT {self.version}"]

    @property
    def target(self) -> dict[str, str]:
        return engine_target(self.section)

    @property
    def runs_on(self) -> str:
        device = self.target["device"]
        graph = ", CUDA graph" if self.cuda_graph else ""
        return f"runs on TensorRT {self.version} ({device}{graph})"

    def run(self, x: NDArray, outputs: list[str] | None = None,
            extra: dict[str, NDArray] | None = None) -> dict[str, NDArray]:
        """The named outputs for the batch x (any length: cut into chunks of at most
        max_batch; fixed-batch engines get the last chunk padded). uint8 N x H x W x C frames
        go to a uint8 `image` input where the engine has one (in-graph preprocessing)."""
        self._check_open()
        names = outputs or self.output_names
        entry = self.image_input if self.image_input and x.dtype == np.uint8 \
            else self.input_name
        parts: dict[str, list[NDArray]] = {n: [] for n in names}
        for start in range(0, len(x), self.max_batch):
            chunk = x[start:start + self.max_batch]
            n = len(chunk)
            feeds = {entry: chunk}
            for name, value in (extra or {}).items():
                feeds[name] = value[start:start + n] if self._batched(name) else value
            out = self._run_chunk(feeds, n, names)
            for name in names:
                parts[name].append(out[name])
        return {n: np.concatenate(v) for n, v in parts.items()}

    def _batched(self, name: str) -> bool:
        spec = next(t for t in self.tensors if t.name == name)
        return spec.dims()[0] < 0 or spec.dims()[0] == self.max_batch

    def _default_feed(self, t: TensorSpec, n: int) -> NDArray:
        """What an input not given gets: the other image entry an empty batch, a folded
        stream monitor's state zeros (each image starts a fresh stream)."""
        if t.name in self.entries:
            return np.zeros((0, *self._max_shape(t)[1:]), self.host[t.name].dtype)
        if t.name == MONITOR_STATE:
            return np.zeros((n, *self._max_shape(t)[1:]), np.float32)
        raise EdgeoodError(f"{self.path} needs the input {t.name}; pass it in extra")

    def _run_chunk(self, feeds: dict[str, NDArray], n: int,
                   names: list[str]) -> dict[str, NDArray]:
        batch = n if self.fixed_batch is None else self.fixed_batch
        for t in self.tensors:
            if t.mode != "input":
                continue
            given = feeds[t.name] if t.name in feeds else self._default_feed(t, n)
            value = np.ascontiguousarray(given, dtype=self.host[t.name].dtype)
            if self._batched(t.name) and 0 < len(value) < batch:
                value = np.concatenate([value, np.repeat(value[-1:], batch - len(value), 0)])
            shape = tuple(int(d) for d in value.shape)
            host = self.host[t.name]
            np.copyto(host.array.reshape(-1)[:value.size].reshape(shape), value)
            if t.dims() != shape and self._shapes.get(t.name) != shape:
                if not self.context.set_input_shape(t.name, shape):
                    raise EdgeoodError(f"{self.path}: TensorRT refused the shape {list(shape)} "
                                       f"for {t.name} (profile max {list(self._max_shape(t))})")
                self._shapes[t.name] = shape
            if value.nbytes:
                self.stream.to_device(self.device[t.name].ptr, host.ptr, value.nbytes)
        self._execute()
        shapes: dict[str, tuple[int, ...]] = {}
        for name in names:
            shapes[name] = dims(self.context.get_tensor_shape(name))
            size = int(np.prod(shapes[name])) * self.host[name].dtype.itemsize
            if size:
                self.stream.to_host(self.host[name].ptr, self.device[name].ptr, size)
        self.stream.synchronize()
        result = {}
        for name in names:
            count = int(np.prod(shapes[name]))
            arr = self.host[name].array.reshape(-1)[:count].reshape(shapes[name])
            result[name] = arr[:n].copy()
        return result

    def _execute(self) -> None:
        if self.cuda_graph and not self.stream.captured:
            # one plain run first (TensorRT finishes shape-dependent set-up in it), then the
            # capture; every buffer address stays fixed, so the graph replays on new data
            self._enqueue()
            self.stream.synchronize()
            self.stream.begin_capture()
            self._enqueue()
            self.stream.end_capture()
        if self.cuda_graph:
            self.stream.launch()
        else:
            self._enqueue()

    def _enqueue(self, context: trt.IExecutionContext | None = None) -> None:
        ctx = context or self.context
        if not ctx.execute_async_v3(self.stream.ptr):
            raise EdgeoodError(f"TensorRT failed to run {self.path} (execute_async_v3)")

    def layer_times(self, x: NDArray, iterations: int = 10) -> dict[str, float]:
        """Mean milliseconds per layer over `iterations` runs of x, from TensorRT's profiler
        (on a second execution context, so the main one stays unprofiled)."""
        self._check_open()
        times = _LayerTimes()
        ctx: trt.IExecutionContext | None = self.engine.create_execution_context()
        if ctx is None:
            raise EdgeoodError("TensorRT could not create a profiling context")
        for t in self.tensors:
            ctx.set_tensor_address(t.name, self.device[t.name].ptr)
            if t.mode == "input" and t.name in self._shapes:
                ctx.set_input_shape(t.name, self._shapes[t.name])
        self.run(x[:self.max_batch])  # shapes and inputs in place
        for t in self.tensors:
            if t.mode == "input" and t.name in self._shapes:
                ctx.set_input_shape(t.name, self._shapes[t.name])
        ctx.profiler = make_profiler(times)
        for _ in range(max(1, iterations)):
            self._enqueue(ctx)
            self.stream.synchronize()
            times.runs += 1
        return {k: v / times.runs for k, v in times.total.items()}

    def close(self) -> None:
        """Free the device and pinned buffers and the stream; idempotent."""
        if self.closed:
            return
        self.closed = True
        for buf in list(self.device.values()):
            buf.free()
        for host in list(self.host.values()):
            host.free()
        self.device, self.host = {}, {}
        self.stream.destroy()

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
