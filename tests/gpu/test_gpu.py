"""On a GPU (marker `gpu`; skipped, with the reason, elsewhere): ONNX Runtime's CUDA provider
with TF32 off gives the CPU provider's outputs, leaves no node to the CPU, and replays a
captured CUDA graph exactly; a TensorRT engine built by edgeood build runs like the detector.

Run: python -m pytest -q -m gpu tests/gpu/test_gpu.py (needs onnxruntime-gpu, and TensorRT +
cuda-python for the engine tests)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import edgeood
from edgeood.runtime.onnxruntime import providers as P
from edgeood.runtime.onnxruntime.backend import OrtBackend
from edgeood.runtime.tensorrt.backend import tensorrt_or_none

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not P.provider_usable(P.CUDA),
    reason="no usable CUDAExecutionProvider here (needs onnxruntime-gpu and an NVIDIA GPU; "
           f"installed: {', '.join(P.installed_runtimes())})")]

METHODS = ["energy", "msp", "maxlogit", "react", "scale", "featurenorm", "weiper_msp",
           "weiper_kld", "grood", "layer_energy"]
ADASCALE = ["adascale_a", "adascale_l"]
TOL = 1e-4


def _needs_tensorrt():
    if tensorrt_or_none() is None:
        pytest.skip("TensorRT is not installed here (import tensorrt gives no Builder)")


@pytest.fixture(scope="module")
def gpu_detectors(tmp_path_factory, digits_model, digits_data):
    d = tmp_path_factory.mktemp("gpu")
    plain = edgeood.export(digits_model, data=digits_data.val[0], methods=METHODS,
                           recipe="digits_cnn", out=d / "plain.onnx", batch=32)
    ada = edgeood.export(digits_model, data=digits_data.val[0], methods=ADASCALE,
                         recipe="digits_cnn", out=d / "ada.onnx", batch=32)
    return plain.path, ada.path


def _images(digits_data, n=64):
    from edgeood.zoo import digits
    return digits.PREPROCESS.normalize(np.concatenate([digits_data.test[0][:n // 2],
                                                       digits_data.far[:n // 2]]))


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b) / np.maximum(1.0, np.abs(b))


def test_cuda_matches_cpu_every_method(gpu_detectors, digits_data):
    """TF32 off: every output within 1e-4 of the CPU provider's. AdaSCALE's score is
    discontinuous (its least-|g| mask and top-k sets flip on near-ties), so a flip may move a
    few images further: at most 2 of 64 may exceed the tolerance, the rest may not."""
    x = _images(digits_data)
    for path in gpu_detectors:
        cpu = OrtBackend(path, device="cpu").run(x)
        gpu_backend = OrtBackend(path, device="cuda")
        assert gpu_backend.providers[0] == P.CUDA and gpu_backend.target["precision"] == "float32"
        gpu = gpu_backend.run(x)
        for name, want in cpu.items():
            if want.dtype == bool:
                continue
            bad = _rel(gpu[name], want).reshape(len(x), -1).max(axis=1) > TOL
            allowed = 2 if any(m in name for m in ADASCALE) else 0
            assert bad.sum() <= allowed, (path.name, name, bad.sum())


def test_no_node_falls_back_to_the_cpu(gpu_detectors):
    plain, ada = gpu_detectors
    assert OrtBackend(plain, device="cuda", report_fallback=True).fallback == Counter()
    fallback = OrtBackend(ada, device="cuda", report_fallback=True).fallback
    # prepare() turns x.view(x.size(0), -1) into Reshape(x, [0, -1]) and AdaSCALE reshapes its
    # mask with a constant shape, so no batch-size Shape/Gather/Concat chain is left for the CPU
    assert fallback == Counter(), f"nodes on the CPU: {dict(fallback)}"


def test_cuda_graph_replay_equals_plain_runs(gpu_detectors, digits_data):
    plain_path, _ = gpu_detectors
    x = _images(digits_data, 48)
    plain = OrtBackend(plain_path, device="cuda")
    graph = OrtBackend(plain_path, device="cuda", cuda_graph=True, graph_batch=16)
    for start in (0, 16, 32, 40):  # new data each replay, and a padded last batch
        chunk = x[start:start + 16]
        a, b = plain.run(chunk), graph.run(chunk)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_tensorrt_engine_runs_like_the_detector(gpu_detectors, digits_data, tmp_path):
    _needs_tensorrt()
    plain_path, _ = gpu_detectors
    res = edgeood.build(plain_path, batch=16, dynamic=True, out=tmp_path / "d.engine",
                        timing_cache=tmp_path / "t.cache")
    assert not res.reused and res.path.read_bytes()[:4] != b"{\"ed"  # a plain plan
    assert edgeood.build(plain_path, batch=16, dynamic=True, out=tmp_path / "d.engine").reused
    x = _images(digits_data, 40)
    want = OrtBackend(plain_path, device="cpu").run(x)
    det = edgeood.load(res.path)
    got = det.backend.run(x)
    for name, w in want.items():
        if w.dtype != bool:
            assert _rel(got[name], w).max() <= 1e-3, name
    graph = edgeood.load(res.path, cuda_graph=True)
    for start in (0, 16, 32):
        a, b = det.backend.run(x[start:start + 16]), graph.backend.run(x[start:start + 16])
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert det.backend.layer_times(x[:16], 3)
    det.backend.close()
    graph.backend.close()
