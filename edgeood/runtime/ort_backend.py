"""ONNX Runtime backend: one session, fixed-batch models fed in padded chunks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def default_providers() -> list[str]:
    available = set(ort.get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in available]


class OrtBackend:
    """Runs an ONNX model (a path or serialized bytes) with ONNX Runtime."""

    def __init__(self, model: str | Path | bytes, providers: list[str] | None = None,
                 threads: int | None = None, config: dict[str, str] | None = None):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        for key, value in (config or {}).items():  # e.g. session.intra_op.allow_spinning
            opts.add_session_config_entry(key, value)
        src = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(src, opts, providers=providers or default_providers())
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        b = inp.shape[0]
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, x: np.ndarray, outputs: list[str] | None = None,
            extra: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The named outputs for the image batch x; extra feeds other (un-batched) inputs."""
        names = outputs or self.output_names
        feeds = dict(extra or {})
        if self.fixed_batch is None or len(x) == self.fixed_batch:
            return dict(zip(names, self.session.run(names, {self.input_name: x, **feeds})))
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        fb = self.fixed_batch
        for start in range(0, len(x), fb):
            chunk = x[start:start + fb]
            n = len(chunk)
            if n < fb:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fb - n, axis=0)])
            for name, value in zip(names, self.session.run(names, {self.input_name: chunk,
                                                                   **feeds})):
                parts[name].append(value[:n])
        return {n: np.concatenate(v) for n, v in parts.items()}
