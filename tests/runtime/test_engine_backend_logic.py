"""The TensorRT backend's own logic, run here against a stand-in for TensorRT and CUDA (the
real calls are type-checked by mypy; they run on a GPU in tests/gpu/test_gpu.py): buffers sized
from the optimization profile and bound once, chunking and padding of batches, input shapes
set only when they change, outputs cut to the real batch, CUDA-graph capture then replay, the
profiler's per-layer times, and the calibration-target warning for an engine."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import edgeood
from edgeood.tensorrt.builder import build_key, detector_sha256, engine_metadata, write_engine
from edgeood.runtime.tensorrt import backend as tb
from edgeood.runtime.tensorrt.cuda import GpuInfo
from tests.helpers.detectors import TRT10, tiny_detector

MEMORY: dict[int, np.ndarray] = {}


class FakeDevice:
    def __init__(self, nbytes):
        self.ptr = 1000 + len(MEMORY)
        MEMORY[self.ptr] = np.zeros(max(int(nbytes), 1), np.uint8)

    def free(self):
        MEMORY.pop(self.ptr, None)


class FakePinned:
    def __init__(self, shape, dtype):
        self.dtype = np.dtype(dtype)
        self.array = np.zeros(shape, self.dtype)
        self.ptr = 1000 + len(MEMORY)
        MEMORY[self.ptr] = self.array.reshape(-1).view(np.uint8)

    def free(self):
        MEMORY.pop(self.ptr, None)


class FakeStream:
    def __init__(self):
        self.ptr, self.recording, self.graph, self.launches = 7, None, None, 0

    @property
    def captured(self):
        return self.graph is not None

    def to_device(self, dst, src, n):
        MEMORY[dst][:n] = MEMORY[src][:n]

    to_host = to_device

    def synchronize(self):
        pass

    def begin_capture(self):
        self.recording = []

    def end_capture(self):
        self.graph, self.recording = self.recording, None

    def launch(self):
        self.launches += 1
        for op in self.graph:
            op()

    def destroy(self):
        pass


STREAMS: list[FakeStream] = []


def _stream():
    s = FakeStream()
    STREAMS.append(s)
    return s


SHAPES = {"input": (-1, 1, 8, 8), "logits": (-1, 3), "score_energy": (-1,)}


class FakeContext:
    def __init__(self):
        self.addr, self.shape, self.profiler, self.runs = {}, {}, None, 0

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr
        return True

    def set_input_shape(self, name, shape):
        if not 1 <= shape[0] <= 4:
            return False
        self.shape[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        n = self.shape["input"][0]
        return (n, 1, 8, 8) if name == "input" else (n, 3) if name == "logits" else (n,)

    def execute_async_v3(self, stream):
        def run():
            n = self.shape["input"][0]
            x = MEMORY[self.addr["input"]].view(np.float32)[:n * 64].reshape(n, 64)
            logits = x[:, :3] * 2 + x[:, 3:6]
            MEMORY[self.addr["logits"]].view(np.float32)[:n * 3] = logits.reshape(-1)
            MEMORY[self.addr["score_energy"]].view(np.float32)[:n] = logits.max(1)
            self.runs += 1
            if self.profiler is not None:
                self.profiler.report_layer_time("fc", 0.25)
                self.profiler.report_layer_time("score_energy/max", 0.05)
        s = STREAMS[-1]
        (s.recording.append if s.recording is not None else lambda f: f())(run)
        return True


class FakeEngine:
    names = ["input", "logits", "score_energy"]

    def __init__(self):
        self.contexts = []

    num_io_tensors = 3

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return FakeTrt.TensorIOMode.INPUT if name == "input" else FakeTrt.TensorIOMode.OUTPUT

    def get_tensor_shape(self, name):
        return SHAPES[name]

    def get_tensor_dtype(self, name):
        return types.SimpleNamespace(name="FLOAT")

    def get_tensor_profile_shape(self, name, profile):
        return [(1, 1, 8, 8), (4, 1, 8, 8), (4, 1, 8, 8)]

    def create_execution_context(self):
        self.contexts.append(FakeContext())
        return self.contexts[-1]


class FakeTrt(types.ModuleType):
    __version__ = "10.3.0"
    Builder = object
    TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class IProfiler:
        def __init__(self):
            pass

    plugin_namespaces: list = []  # init_libnvinfer_plugins calls (before any Runtime)

    @staticmethod
    def init_libnvinfer_plugins(logger, namespace):
        FakeTrt.plugin_namespaces.append(namespace)
        return True

    class Runtime:
        def __init__(self, logger):
            assert FakeTrt.plugin_namespaces, "plugins registered before the runtime"
            self.DLA_core = None

        def deserialize_cuda_engine(self, plan):
            return FakeEngine() if plan == b"plan" else None


@pytest.fixture
def engine(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTrt("tensorrt"))
    monkeypatch.setattr(tb, "gpu_info", lambda: GpuInfo("Orin", "8.7"))
    monkeypatch.setattr(tb, "DeviceBuffer", FakeDevice)
    monkeypatch.setattr(tb, "PinnedBuffer", FakePinned)
    monkeypatch.setattr(tb, "Stream", _stream)
    det = tiny_detector(tmp_path / "tiny.onnx")
    from edgeood.tensorrt.builder import validate_build
    req = validate_build(det, half=True, batch=4, dynamic=True, features=TRT10,
                         out=tmp_path / "d.engine")
    key = build_key(req.options, detector_sha256(det), "10.3.0",
                    {"name": "Orin", "compute_capability": "8.7"})
    io = [tb.engine_tensor(n, "input" if n == "input" else "output", SHAPES[n], "FLOAT")
          for n in FakeEngine.names]
    return write_engine(req.out, b"plan", engine_metadata(req, key, io, b"plan", []))


def _want(x):
    flat = x.reshape(len(x), -1)
    logits = flat[:, :3] * 2 + flat[:, 3:6]
    return logits, logits.max(1)


def test_dynamic_engine_runs_in_chunks(engine, capsys):
    det = edgeood.load(engine)
    assert "calibrated on onnxruntime/cpu/float32" in capsys.readouterr().err  # said once
    b = det.backend
    assert b.providers == ["TensorRT 10.3.0"] and b.max_batch == 4 and b.fixed_batch is None
    assert b.target == {"backend": "tensorrt", "device": "gpu", "precision": "float16"}
    assert {n: MEMORY[buf.ptr].nbytes for n, buf in b.device.items()} == {
        "input": 4 * 64 * 4, "logits": 4 * 3 * 4, "score_energy": 4 * 4}
    x = np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)
    out = b.run(x)  # chunks of 4 and 2: the engine's shape follows
    logits, score = _want(x)
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-6)
    np.testing.assert_allclose(out["score_energy"], score, rtol=1e-6)
    assert b.context.shape["input"] == (2, 1, 8, 8)
    res = det(x)  # through the Detector: the same interface as ONNX Runtime
    np.testing.assert_allclose(res.scores["energy"], score, rtol=1e-6)
    b.close()


def test_cuda_graph_captures_once_and_replays(engine):
    b = edgeood.load(engine, cuda_graph=True).backend
    assert b.fixed_batch == 4  # a captured graph replays fixed shapes: batches are padded
    x = np.random.default_rng(1).standard_normal((10, 1, 8, 8)).astype(np.float32)
    out = b.run(x)
    logits, score = _want(x)
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-6)
    assert len(out["score_energy"]) == 10
    assert b.stream.captured and b.stream.launches == 3
    assert b.context.shape["input"] == (4, 1, 8, 8)
    y = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(b.run(y)["score_energy"], _want(y)[1], rtol=1e-6)


def test_layer_times_from_the_profiler(engine):
    b = edgeood.load(engine).backend
    x = np.zeros((4, 1, 8, 8), np.float32)
    times = b.layer_times(x, iterations=4)
    assert times == {"fc": pytest.approx(0.25), "score_energy/max": pytest.approx(0.05)}
    assert b.engine.contexts[0].profiler is None  # the main context stays unprofiled


def test_refuses_a_plan_that_does_not_deserialize(engine):
    engine.write_bytes(b"nope")
    with pytest.raises(edgeood.errors.EdgeoodError, match="sha256 differs"):
        edgeood.load(engine)
