"""ONNX Runtime execution providers: which one a session actually gets, the options that keep
float32 float32 on a GPU, and the nodes a GPU session leaves to the CPU.

- A provider is used only where a session gets it: onnxruntime-gpu lists the TensorRT EP even
  where libnvinfer is absent, and asking for it then prints ONNX Runtime's "EP Error ...
  Falling back" block on every session. `provider_usable` opens one tiny session per provider,
  quietly (logger severity 4, no fallback), once per process.
- `--device cpu|cuda|tensorrt` picks the providers; the default is the CUDA provider where a
  session gets it, else the CPU. The TensorRT EP only runs when asked for: it builds an engine
  for every new graph it sees (export opens several), and `edgeood build` makes real engines.
- TF32 is off on the GPU (CUDA provider `use_tf32=0`; the TensorRT EP has no switch, so
  NVIDIA_TF32_OVERRIDE=0 is set for it) unless tf32=True: with TF32 an H100 moved
  EfficientNet-Lite1 logits by 1.4e-2 and AdaSCALE's p-values by up to 0.24.
- Nodes that fall back to the CPU are found with `session.disable_cpu_ep_fallback` and named
  by op type from one profiled run (each node's provider is in ONNX Runtime's profile).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np
import onnxruntime as ort

from edgeood.errors import EdgeoodError, did_you_mean, spell

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
DEVICE_PROVIDERS = {"cpu": (CPU,), "cuda": (CUDA, CPU), "tensorrt": (TENSORRT, CUDA, CPU)}
DEVICES = tuple(DEVICE_PROVIDERS)
PROVIDER_DEVICE = {CPU: "cpu", CUDA: "cuda", TENSORRT: "tensorrt"}
GPU_PROVIDERS = (TENSORRT, CUDA)
ProviderSpec = Union[str, tuple[str, dict[str, str]]]

# onnxruntime and onnxruntime-gpu install into the same package folder: uninstalling one
# removes files of the other, hence the forced reinstall (docs/deploy/onnxruntime-gpu.md).
SWITCH_TO_GPU = ("pip install 'edgeood[gpu]' && pip uninstall -y onnxruntime && "
                 "pip install --force-reinstall --no-deps onnxruntime-gpu")
SWITCH_TO_CPU = ("pip uninstall -y onnxruntime-gpu && "
                 "pip install --force-reinstall --no-deps onnxruntime")

_usable: dict[str, bool] = {}


def _probe_model() -> bytes:
    """A one-node float32 model: enough for a session to load a provider."""
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@contextlib.contextmanager
def quiet_ort() -> Iterator[None]:
    """ONNX Runtime's process-wide logger at FATAL only (provider libraries that fail to load
    log an error there), back at its default (WARNING) afterwards."""
    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)


def provider_usable(name: str) -> bool:
    """Whether a session actually gets `name` here (probed once per process, quietly)."""
    if name == CPU:
        return True
    if name not in ort.get_available_providers():
        return False
    if name not in _usable:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        with quiet_ort(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Specified provider ... is not available"
            try:
                sess = ort.InferenceSession(_probe_model(), opts, providers=[name, CPU],
                                            enable_fallback=0)
                _usable[name] = sess.get_providers()[0] == name
            except Exception:  # the provider's libraries are missing or broken
                _usable[name] = False
    return _usable[name]


def default_providers() -> list[str]:
    """The CUDA provider where a session gets it, then the CPU."""
    return [p for p in (CUDA,) if provider_usable(p)] + [CPU]


def check_device(device: str | None) -> str | None:
    if device is None or device in DEVICES:
        return device
    raise EdgeoodError(f"{spell('device')} {device} is not one of {', '.join(DEVICES)}"
                       f"{did_you_mean(device, DEVICES)}")


def installed_runtimes() -> list[str]:
    """The ONNX Runtime distributions installed (onnxruntime, onnxruntime-gpu, ...)."""
    names = []
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"):
        try:
            names.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return names


def install_hint(installed: Sequence[str]) -> str:
    """How to get ONNX Runtime's CUDA provider, given the installed distributions."""
    dists = {s.split(" ")[0] for s in installed}
    if "onnxruntime-gpu" in dists and "onnxruntime" in dists:
        return ("onnxruntime and onnxruntime-gpu are both installed into one package folder and "
                "the CPU one wins; keep the GPU one: " + SWITCH_TO_GPU)
    if "onnxruntime-gpu" in dists:
        return ("onnxruntime-gpu is installed but its CUDA provider does not load: it needs an "
                "NVIDIA driver and the CUDA and cuDNN 9 libraries of its build (PyPI's: CUDA 13)")
    return "install the GPU build: " + SWITCH_TO_GPU


def unavailable(device: str, name: str) -> EdgeoodError:
    installed = installed_runtimes()
    return EdgeoodError(f"{spell('device')} {device}: ONNX Runtime has no usable {name} here "
                        f"({', '.join(installed) or 'onnxruntime'}, providers "
                        f"{', '.join(ort.get_available_providers())}); {install_hint(installed)}")


def cache_folder() -> Path:
    """Where the TensorRT EP keeps engines and timing caches ($EDGEOOD_CACHE/ort_trt)."""
    base = Path(os.environ.get("EDGEOOD_CACHE", Path.home() / ".cache" / "edgeood"))
    return base / "ort_trt"


def provider_specs(device: str | None = None, providers: Sequence[ProviderSpec] | None = None,
                   tf32: bool = False, cuda_graph: bool = False, fp16: bool = False,
                   device_id: int = 0) -> list[ProviderSpec]:
    """The providers (with options) for a session: an explicit list, else --device, else the
    default; GPU providers get TF32 off (unless tf32) and, with cuda_graph, CUDA graphs."""
    check_device(device)
    if providers:
        names = [p if isinstance(p, str) else p[0] for p in providers]
        given = {p[0]: p[1] for p in providers if not isinstance(p, str)}
    else:
        names = list(DEVICE_PROVIDERS[device]) if device else default_providers()
        given = {}
        if device:
            for name in names:
                if not provider_usable(name):
                    raise unavailable(device, name)
    specs: list[ProviderSpec] = []
    for i, name in enumerate(names):
        opts = dict(given.get(name, {}))
        if name == CUDA:
            opts.setdefault("device_id", str(device_id))
            opts.setdefault("use_tf32", "1" if tf32 else "0")
            if cuda_graph and i == 0:
                opts.setdefault("enable_cuda_graph", "1")
        elif name == TENSORRT:
            folder = cache_folder()
            opts.setdefault("device_id", str(device_id))
            opts.setdefault("trt_engine_cache_enable", "True")
            opts.setdefault("trt_engine_cache_path", str(folder / "engines"))
            opts.setdefault("trt_timing_cache_enable", "True")
            opts.setdefault("trt_timing_cache_path", str(folder / "timing"))
            opts.setdefault("trt_fp16_enable", "True" if fp16 else "False")
            if cuda_graph and i == 0:
                opts.setdefault("trt_cuda_graph_enable", "True")
            if not tf32:
                os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
        specs.append((name, opts) if opts else name)
    return specs


def ensure_cache_folders(specs: Sequence[ProviderSpec]) -> None:
    for spec in specs:
        if not isinstance(spec, str) and spec[0] == TENSORRT:
            for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
                if key in spec[1]:
                    Path(spec[1][key]).mkdir(parents=True, exist_ok=True)


def runs_on(providers: Sequence[str], tf32: bool = False) -> str:
    """One line saying which provider runs the session ('runs on CUDAExecutionProvider
    (ONNX Runtime 1.20.1, TF32 off)')."""
    first = providers[0] if providers else CPU
    notes = [f"ONNX Runtime {ort.__version__}"]
    if first in GPU_PROVIDERS:
        notes.append("TF32 on" if tf32 else "TF32 off")
    return f"runs on {first} ({', '.join(notes)})"


# --- nodes that fall back to the CPU ----------------------------------------------------------
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
             "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
             "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def zero_feeds(session: Any, batch: int = 1) -> dict[str, np.ndarray]:
    """Zeros for every input of a session (symbolic dimensions: `batch` on axis 0, else 1)."""
    feeds: dict[str, np.ndarray] = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else (batch if i == 0 else 1)
                 for i, d in enumerate(inp.shape)]
        feeds[inp.name] = np.zeros(shape, _NP_TYPES.get(inp.type, np.float32))
    return feeds


def cpu_nodes_in_profile(events: list[dict[str, Any]], provider: str = CPU) -> Counter[str]:
    """Op types (with counts) of the nodes that ran on `provider` in an ONNX Runtime profile
    (the JSON list that session.end_profiling() writes)."""
    seen: dict[str, str] = {}
    for ev in events:
        args = ev.get("args") or {}
        if ev.get("cat") == "Node" and args.get("provider") == provider and "op_name" in args:
            node = str(ev.get("name", "")).rsplit("_kernel_time", 1)[0]
            seen.setdefault(node, str(args["op_name"]))
    return Counter(seen.values())


def cpu_fallback(model: str | bytes, specs: Sequence[ProviderSpec],
                 threads: int | None = None) -> Counter[str]:
    """Op types of the nodes that a session with `specs` leaves to the CPU (empty when the
    first provider is the CPU, or when every node stays on the GPU)."""
    gpu = [s for s in specs if (s if isinstance(s, str) else s[0]) != CPU]
    if not gpu:
        return Counter()
    strict = ort.SessionOptions()
    strict.log_severity_level = 4
    strict.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    with quiet_ort():
        try:
            ort.InferenceSession(model, strict, providers=list(gpu), enable_fallback=0)
            return Counter()
        except Exception:  # some node is assigned to the CPU: find which
            pass
    return profiled_placement(model, specs, threads)


def profiled_placement(model: str | bytes, specs: Sequence[ProviderSpec],
                       threads: int | None = None, provider: str = CPU) -> Counter[str]:
    """Op types of the nodes that ran on `provider` in one profiled run with zero inputs."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "placement")
        if threads:
            opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(model, opts, providers=list(specs), enable_fallback=0)
        sess.run(None, zero_feeds(sess))
        path = sess.end_profiling()
        events = json.loads(Path(path).read_text())
    return cpu_nodes_in_profile(events, provider)


def describe_fallback(ops: Counter[str], provider: str) -> str:
    n = sum(ops.values())
    parts = ", ".join(f"{op} x{c}" for op, c in sorted(ops.items()))
    return f"{n} node{'s' if n != 1 else ''} fall back from {provider} to the CPU: {parts}"
