"""Loading engines without TensorRT: the backend is chosen from the file, and an engine is
refused in one line when its sidecar is missing, not edgeood's, names another TensorRT or GPU,
describes another plan or other I/O tensors. Running one needs TensorRT (tests/gpu/test_gpu.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import edgeood
from edgeood.errors import EdgeoodError
from edgeood.runtime.tensorrt.cuda import GpuInfo
from edgeood.runtime.tensorrt.backend import (engine_tensor, check_engine_target, check_io,
                                              check_plan, engine_section, engine_target,
                                              require_tensorrt, tensorrt_or_none)
from tests.helpers.detectors import tiny_detector

SECTION = {"tensorrt_version": "10.3.0", "gpu": {"name": "Orin", "compute_capability": "8.7"},
           "source": {"path": "tiny.onnx"}, "device": "gpu", "precision": "float16",
           "target_precision": "float16",
           "io": [{"name": "input", "mode": "input"}, {"name": "logits", "mode": "output"},
                  {"name": "score_energy", "mode": "output"}]}


def one_line(fn, *args) -> str:
    with pytest.raises(EdgeoodError) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def _engine(tmp_path, sidecar: dict | str | None) -> Path:
    path = tmp_path / "d.engine"
    path.write_bytes(b"plan")
    if sidecar is not None:
        Path(str(path) + ".json").write_text(sidecar if isinstance(sidecar, str)
                                             else json.dumps(sidecar))
    return path


def test_refuses_engine_without_sidecar(tmp_path):
    path = _engine(tmp_path, None)
    msg = one_line(edgeood.load, path)
    assert "no d.engine.json sidecar" in msg and "edgeood build" in msg


def test_refuses_sidecar_not_written_by_build(tmp_path):
    path = _engine(tmp_path, {"schema_version": 1, "primary": "energy"})
    assert "was not written by edgeood build" in one_line(edgeood.load, path)
    bad = _engine(tmp_path, "{not json")
    assert "not valid JSON" in one_line(edgeood.load, bad)


def test_engine_needs_tensorrt_here(tmp_path):
    if tensorrt_or_none() is not None:
        pytest.skip("TensorRT is installed here")
    path = _engine(tmp_path, {"schema_version": 1, "engine": SECTION})
    assert "needs TensorRT" in one_line(edgeood.load, path)
    assert "pip install 'edgeood[trt]'" in one_line(require_tensorrt)


def test_stubs_alone_are_not_tensorrt():
    """tensorrt-stubs (the test extra's type checking) leaves an empty namespace package named
    tensorrt: import succeeds, but it is not TensorRT."""
    code = ("import importlib.util, sys;"
            "from edgeood.runtime.tensorrt.backend import tensorrt_or_none;"
            "spec = importlib.util.find_spec('tensorrt');"
            "print(spec is not None, tensorrt_or_none() is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout.split()
    if out == ["True", "True"]:
        pytest.skip("a real TensorRT is installed")
    assert out[1] == "False"


def test_refuses_other_tensorrt_or_gpu():
    path = Path("d.engine")
    here = GpuInfo("Orin", "8.7")
    check_engine_target(path, SECTION, "10.3.0", here)  # the same: accepted
    msg = one_line(check_engine_target, path, SECTION, "10.13.0", here)
    assert "built with TensorRT 10.3.0" in msg and "rebuild with edgeood build tiny.onnx" in msg
    msg = one_line(check_engine_target, path, SECTION, "10.3.0", GpuInfo("NVIDIA H100", "9.0"))
    assert "built for Orin" in msg and "NVIDIA H100" in msg


def test_refuses_other_plan_or_io():
    path = Path("d.engine")
    import hashlib
    check_plan(path, {"plan_sha256": hashlib.sha256(b"plan").hexdigest()}, b"plan")
    assert "sha256 differs" in one_line(check_plan, path, {"plan_sha256": "0" * 64}, b"plan")
    io = [engine_tensor("input", "input", (-1, 1, 8, 8), "FLOAT"),
          engine_tensor("logits", "output", (-1, 3), "FLOAT"),
          engine_tensor("score_energy", "output", (-1,), "FLOAT")]
    check_io(path, SECTION, io)
    msg = one_line(check_io, path, SECTION, io[:2] + [engine_tensor("score_msp", "output", (-1,),
                                                                 "FLOAT")])
    assert "sidecar only: score_energy" in msg and "engine only: score_msp" in msg


def test_engine_target_and_section():
    assert engine_target(SECTION) == {"backend": "tensorrt", "device": "gpu",
                                      "precision": "float16"}
    assert engine_section(Path("x.engine"), {"engine": SECTION}) is SECTION


def test_backend_is_chosen_from_the_file(tmp_path):
    det = tiny_detector(tmp_path / "t.onnx")
    d = edgeood.load(det)
    assert type(d.backend).__name__ == "OrtBackend"
    assert "unknown detector type" in one_line(edgeood.load, tmp_path / "t.bin")
    path = _engine(tmp_path, {"schema_version": 1, "engine": SECTION})
    with pytest.raises(EdgeoodError, match="applies to .onnx detectors"):
        edgeood.load(path, device="cuda")
