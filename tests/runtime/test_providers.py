"""ONNX Runtime providers on this (CPU-only) machine, for real: the default is what a session
actually gets, probed quietly; GPU options keep TF32 off; a missing GPU provider is one line
with the fix; CPU fallback is read from ONNX Runtime's own profile; the calibration target is
recorded and a detector run elsewhere says so once."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

import edgeood
from edgeood.errors import EdgeoodError
from edgeood.runtime.onnxruntime import providers as P
from edgeood.runtime.backend import Backend, describe_target, target_mismatch
from edgeood.runtime.onnxruntime.backend import OrtBackend
from tests.helpers.detectors import tiny_detector

CPU_ONLY = not P.provider_usable(P.CUDA)


@pytest.fixture
def det(tmp_path):
    return tiny_detector(tmp_path / "tiny.onnx")


@pytest.mark.skipif(not CPU_ONLY, reason="this machine has a usable CUDA provider")
def test_default_is_the_cpu_here():
    assert P.default_providers() == ["CPUExecutionProvider"]


def test_probe_of_a_listed_but_broken_provider_is_quiet():
    """onnxruntime-gpu lists the TensorRT EP even without libnvinfer: the probe says 'not
    usable' and prints nothing (no 'EP Error ... Falling back' block)."""
    code = (
        "import onnxruntime as ort\n"
        "from edgeood.runtime.onnxruntime import providers as P\n"
        "real = ort.get_available_providers()\n"
        "ort.get_available_providers = lambda: ['TensorrtExecutionProvider', 'CUDAExecutionProvider'] + real\n"
        "ok = P.provider_usable('TensorrtExecutionProvider') or P.provider_usable('CUDAExecutionProvider')\n"
        "import sys; sys.stderr.flush(); print('RESULT', ok, P.default_providers())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    if not CPU_ONLY:
        pytest.skip("a real GPU provider is usable here")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "RESULT False ['CPUExecutionProvider']"
    assert proc.stderr == ""


def test_gpu_options_keep_tf32_off(monkeypatch):
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    specs = P.provider_specs(providers=[P.CUDA, P.CPU])
    assert specs == [(P.CUDA, {"device_id": "0", "use_tf32": "0"}), P.CPU]
    graph = P.provider_specs(providers=[P.CUDA, P.CPU], tf32=True, cuda_graph=True)
    assert graph[0][1]["use_tf32"] == "1" and graph[0][1]["enable_cuda_graph"] == "1"
    trt = dict(P.provider_specs(providers=[P.TENSORRT, P.CUDA, P.CPU], fp16=True)[0:1])
    opts = trt[P.TENSORRT]
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_fp16_enable"] == "True"
    assert opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"].endswith("ort_trt/engines")
    import os
    assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0"  # the TensorRT EP has no TF32 switch
    given = P.provider_specs(providers=[(P.CUDA, {"use_tf32": "1"}), P.CPU])
    assert given[0][1]["use_tf32"] == "1"  # the caller's own options win


@pytest.mark.skipif(not CPU_ONLY, reason="this machine has a usable CUDA provider")
def test_missing_gpu_provider_is_one_line_with_the_fix(det):
    with pytest.raises(EdgeoodError) as e:
        OrtBackend(det, device="cuda")
    msg = str(e.value)
    assert "\n" not in msg and "no usable CUDAExecutionProvider" in msg
    assert "pip uninstall -y onnxruntime" in msg and "onnxruntime-gpu" in msg
    with pytest.raises(EdgeoodError, match="did you mean"):
        OrtBackend(det, device="gpu")
    with pytest.raises(EdgeoodError, match="^cuda_graph needs the CUDA or TensorRT"):
        OrtBackend(det, cuda_graph=True)


def test_install_hints():
    both = P.install_hint(["onnxruntime 1.20.1", "onnxruntime-gpu 1.20.1"])
    assert "both installed" in both and P.SWITCH_TO_GPU in both
    assert "CUDA and cuDNN 9" in P.install_hint(["onnxruntime-gpu 1.22.0"])
    assert P.SWITCH_TO_GPU in P.install_hint(["onnxruntime 1.20.1"])
    assert "--force-reinstall --no-deps onnxruntime-gpu" in P.SWITCH_TO_GPU


def test_cpu_nodes_are_read_from_the_profile(det):
    events = [{"cat": "Node", "name": "fc_kernel_time", "args": {"op_name": "Gemm",
                                                                 "provider": P.CPU}},
              {"cat": "Node", "name": "fc_fence_before", "args": {"op_name": "Gemm"}},
              {"cat": "Node", "name": "g_kernel_time", "args": {"op_name": "Gather",
                                                                "provider": P.CPU}},
              {"cat": "Node", "name": "c_kernel_time", "args": {"op_name": "Conv",
                                                                "provider": P.CUDA}},
              {"cat": "Session", "name": "model_run", "args": {}}]
    assert P.cpu_nodes_in_profile(events) == Counter({"Gemm": 1, "Gather": 1})
    # a real profile of a real session: every node of a CPU session ran on the CPU
    placed = P.profiled_placement(str(det), [P.CPU])
    assert placed and set(placed) <= {"Flatten", "Gemm", "ReduceMax", "Reshape"}
    assert P.cpu_fallback(str(det), [P.CPU]) == Counter()  # the CPU is not a fallback
    line = P.describe_fallback(Counter({"Gather": 1, "Unsqueeze": 1, "Concat": 1}), P.CUDA)
    assert line == ("3 nodes fall back from CUDAExecutionProvider to the CPU: Concat x1, "
                    "Gather x1, Unsqueeze x1")


def test_backend_says_what_runs_it(det):
    b = OrtBackend(det, report_fallback=True)
    assert isinstance(b, Backend)
    assert b.target == {"backend": "onnxruntime", "device": "cpu", "precision": "float32"}
    assert b.runs_on.startswith("runs on CPUExecutionProvider (ONNX Runtime ")
    assert b.output_shapes == {"logits": ["batch", 3], "score_energy": ["batch"]}
    assert describe_target(b.target) == "onnxruntime/cpu/float32"


def test_calibration_target_is_recorded_and_checked(det, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((24, 1, 8, 8)).astype(np.float32)
    res = edgeood.calibrate(det, x, out=tmp_path / "cal.onnx", device="cpu")
    assert res.metadata["calibration"]["target"] == {"backend": "onnxruntime", "device": "cpu",
                                                     "precision": "float32"}
    capsys.readouterr()
    d = edgeood.load(res.path)
    assert d.target_note is None and capsys.readouterr().err == ""
    meta = dict(res.metadata)
    gpu = {"backend": "tensorrt", "device": "gpu", "precision": "float16"}
    note = target_mismatch(meta, gpu)
    assert "calibrated on onnxruntime/cpu/float32" in note and "tensorrt/gpu/float16" in note
    assert "edgeood calibrate" in note
    assert target_mismatch({"calibration": None}, gpu) is None  # nothing recorded: quiet

    class Elsewhere:  # the same detector on another target: said once, at load
        target = gpu
        output_names = ["logits"]
    from edgeood.runtime.detector import Detector
    Detector(Elsewhere(), meta)
    err = capsys.readouterr().err
    assert err.count("warning: thresholds and p-values were calibrated on") == 1


def test_cli_run_says_which_provider_runs(det, tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-m", "edgeood.cli", "run", str(det),
                           str(tmp_path / "x.npy"), "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["runs_on"].startswith("runs on CPUExecutionProvider")
    assert out["providers"] == ["CPUExecutionProvider"]


def test_cuda_graph_needs_fixed_shapes():
    from edgeood.runtime.onnxruntime.graph import bound_shape
    assert bound_shape("input", ["batch", 3, 224, 224], 8) == [8, 3, 224, 224]
    with pytest.raises(EdgeoodError, match="fixed shapes"):
        bound_shape("input", ["batch", 3, "h", "w"], 8)


def test_profile_breaks_down_pre_net_post(det):
    from edgeood.tools.profile import profile
    res = profile(det, batch=2, warmup=1, iterations=3, frame_size=(48, 64))
    st = res["stages"]
    assert set(st) >= {"pre", "net", "post", "total", "throughput_ips", "frames"}
    assert st["frames"] == "64x48 uint8" and st["total"]["mean"] >= st["net"]["mean"]
    assert res["runs_on"].startswith("runs on CPUExecutionProvider")
    assert res["target"]["device"] == "cpu" and "p99" in res["latency_ms"]
    text = subprocess.run([sys.executable, "-m", "edgeood.cli", "profile", str(det),
                           "--batch", "2", "--warmup", "1", "--iterations", "3"],
                          capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "PRE / NET / POST" in text.stdout and "images/s" in text.stdout
