"""ONNX Runtime backend: one session, fixed-batch models fed in padded chunks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeood.artifact.names import IMAGE_INPUT, MONITOR_STATE
from edgeood.errors import EdgeoodError, spell
from edgeood.progress import warn
from edgeood.runtime.backend import closed_error
from edgeood.runtime.onnxruntime.providers import (CPU, GPU_PROVIDERS, PROVIDER_DEVICE, TENSORRT,  # noqa: F401
                                       cpu_fallback, default_providers, describe_fallback,
                                       ensure_cache_folders, provider_specs, runs_on)


class OrtBackend:
    """Runs an ONNX model (a path or serialized bytes) with ONNX Runtime (the Backend protocol:
    edgeood/runtime/backend.py). close() releases the session."""

    def __init__(self, model: str | Path | bytes, providers: list | None = None,
                 threads: int | None = None, config: dict[str, str] | None = None,
                 device: str | None = None, tf32: bool = False, cuda_graph: bool = False,
                 precision: str = "float32", report_fallback: bool = False,
                 graph_batch: int | None = None):
        """device: cpu | cuda | tensorrt (None: the CUDA provider where a session gets it, else
        the CPU); tf32: allow TF32 on the GPU (off by default); cuda_graph: run as one captured
        CUDA graph with inputs and outputs bound to fixed device buffers (fixed shapes: the
        model's batch or graph_batch); report_fallback: warn, by op type, about nodes that a
        GPU session leaves to the CPU."""
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        for key, value in (config or {}).items():  # e.g. session.intra_op.allow_spinning
            opts.add_session_config_entry(key, value)
        src = model if isinstance(model, bytes) else str(model)
        specs = provider_specs(device, providers, tf32, cuda_graph,
                               fp16=precision == "float16")
        ensure_cache_folders(specs)
        if any((p if isinstance(p, str) else p[0]) == TENSORRT for p in specs):
            src = _tensorrt_source(src)  # the TensorRT EP parses with TensorRT's parser
        self._session: ort.InferenceSession | None = ort.InferenceSession(
            src, opts, providers=specs, enable_fallback=0)
        self.tf32, self.precision = tf32, precision
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_shape = list(inp.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_shapes = {o.name: list(o.shape) for o in self.session.get_outputs()}
        b = inp.shape[0]
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        first = self.providers[0]
        self.fallback = cpu_fallback(src, specs, threads) \
            if (report_fallback or cuda_graph) and first != CPU else None
        if report_fallback and self.fallback:
            warn(describe_fallback(self.fallback, first))
        self.graph_runner = None
        if cuda_graph:
            if first == CPU:
                raise EdgeoodError(f"{spell('cuda_graph')} needs the CUDA or TensorRT provider; "
                                   f"this "
                                   "session runs on the CPU (pass --device cuda)")
            if self.fallback:
                raise EdgeoodError(f"{spell('cuda_graph')} needs every node on the GPU: "
                                   f"{describe_fallback(self.fallback, first)}")
            from edgeood.runtime.onnxruntime.graph import CudaGraphRunner
            self.graph_runner = CudaGraphRunner(self.session, self.fixed_batch or graph_batch)
        # --input uint8 detectors: uint8 N x H x W x C frames go to `image`, float batches to
        # the float input, and the other entry gets an empty batch (edgeood/graph/preprocess.py)
        image = next((i for i in self.session.get_inputs()
                      if i.name == IMAGE_INPUT and i.type == "tensor(uint8)"), None)
        self.image_input = image.name if image is not None else None
        self.empty = {} if image is None else {
            self.input_name: np.zeros([0, *_fixed(inp.shape[1:])], np.float32),
            image.name: np.zeros([0, *_fixed(image.shape[1:])], np.uint8)}

    @property
    def session(self) -> ort.InferenceSession:
        """The live session (a one-line error once closed)."""
        if self._session is None:
            raise closed_error("this ONNX Runtime backend")
        return self._session

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def target(self) -> dict[str, str]:
        """Where the numbers come from: {backend, device, precision}."""
        first = self.providers[0]
        precision = self.precision
        if first in GPU_PROVIDERS and precision == "float32" and self.tf32:
            precision = "tf32"
        return {"backend": "onnxruntime", "device": PROVIDER_DEVICE.get(first, first),
                "precision": precision}

    @property
    def runs_on(self) -> str:
        return runs_on(self.providers, self.tf32)

    def layer_times(self, x: np.ndarray, iterations: int = 10) -> dict[str, float] | None:
        """None: per-layer times come from TensorRT's profiler, which a session lacks."""
        if self._session is None:  # a closed backend refuses, as every call does
            raise closed_error("this ONNX Runtime backend")
        return None

    def close(self) -> None:
        """Release the session (and a captured CUDA graph's device buffers); idempotent."""
        self.graph_runner = None
        self._session = None

    def __enter__(self) -> OrtBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, x: np.ndarray, outputs: list[str] | None = None,
            extra: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The named outputs for the image batch x; extra feeds other (un-batched) inputs."""
        session = self.session  # refuses once closed
        names = outputs or self.output_names
        feeds = dict(extra or {})
        entry = self.input_name
        if self.image_input is not None:
            entry = self.image_input if x.dtype == np.uint8 else self.input_name
            feeds = {**{k: v for k, v in self.empty.items() if k != entry}, **feeds}
        if MONITOR_STATE in self.input_names and MONITOR_STATE not in feeds:
            # a folded stream monitor: each image starts a fresh stream (state 0)
            feeds[MONITOR_STATE] = np.zeros((self.fixed_batch or len(x), 1), np.float32)
        if self.graph_runner is not None:
            return self.graph_runner.run(entry, x, names, feeds)
        if self.fixed_batch is None or len(x) == self.fixed_batch:
            return dict(zip(names, session.run(names, {entry: x, **feeds})))
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        fb = self.fixed_batch
        for start in range(0, len(x), fb):
            chunk = x[start:start + fb]
            n = len(chunk)
            if n < fb:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fb - n, axis=0)])
            for name, value in zip(names, session.run(names, {entry: chunk, **feeds})):
                parts[name].append(value[:n])
        return {n: np.concatenate(v) for n, v in parts.items()}


def _fixed(dims) -> list[int]:
    """Concrete dims for an empty feed: symbolic or unknown ones become 1."""
    return [d if isinstance(d, int) and d > 0 else 1 for d in dims]


def _tensorrt_source(src: str | bytes) -> str | bytes:
    """The model with log-sum-exp max-shifted (edgeood.tensorrt.rewrite), as bytes; a path
    that needs no rewrite, or whose weights live in external data, is passed through (the
    rewrite of such a file is left to `edgeood build`)."""
    import onnx
    from edgeood.tensorrt.rewrite import needs_rewrite, tensorrt_model
    model = onnx.load_from_string(src) if isinstance(src, bytes) else \
        onnx.load(src, load_external_data=False)
    if not needs_rewrite(model):
        return src
    if any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer):
        warn(f"{src}: its weights are in external data, so the TensorRT provider gets it as "
             "is, with ReduceLogSumExp unshifted (it overflows above 88.7); build an engine "
             "with edgeood build instead")
        return src
    return tensorrt_model(model).SerializeToString()
