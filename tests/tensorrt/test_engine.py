"""The TensorRT engine builder without TensorRT: argument validation, TensorRT 10 / 11 feature
choices, engine names, timing-cache names, the trtexec command line, the optimization profile,
parser-error lines, the sidecar and the reuse check. The build itself needs TensorRT and a GPU
(tests/gpu/test_gpu.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import onnx

from edgeood.tensorrt.builder import (TrtFeatures, build_key, default_engine_path,
                            detector_sha256, engine_metadata, existing_key, format_parser_error,
                            head_of, network_flags, parse_device, timing_cache_path,
                            trtexec_command, validate_build, version_tag, write_engine)
from edgeood.errors import EdgeoodError
from edgeood.runtime.tensorrt.backend import engine_tensor
from tests.helpers.detectors import TRT10, TRT11, tiny_detector


@pytest.fixture
def det(tmp_path):
    return tiny_detector(tmp_path / "tiny.detector.onnx")


def err(fn, *args, **kwargs) -> str:
    with pytest.raises(EdgeoodError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --- TensorRT 10 / 11 -------------------------------------------------------------------------
def _fake_trt(version, fp16=True, strongly=True):
    flags = SimpleNamespace(TF32=6, GPU_FALLBACK=3, **({"FP16": 0, "INT8": 1,
                                                       "PREFER_PRECISION_CONSTRAINTS": 10}
                                                      if fp16 else {}))
    net = SimpleNamespace(**({"STRONGLY_TYPED": 1 if fp16 else 0} if strongly else {}))
    return SimpleNamespace(__version__=version, BuilderFlag=flags,
                           NetworkDefinitionCreationFlag=net, DeviceType=SimpleNamespace(DLA=1))


def test_features_come_from_feature_checks():
    ten = TrtFeatures.of(_fake_trt("10.3.0"))
    assert ten.fp16_flag and ten.precision_constraints and not ten.always_strongly_typed
    eleven = TrtFeatures.of(_fake_trt("11.0.0", fp16=False))
    assert not eleven.fp16_flag and not eleven.precision_constraints
    assert eleven.always_strongly_typed and eleven.major == 11
    assert TRT10.fp16_flag and not TRT11.fp16_flag
    assert "e.g. 10.3" in err(TrtFeatures.assumed, "ten")
    assert "TensorRT 10 and 11" in err(TrtFeatures.assumed, "8.6")


def test_tensorrt_8_is_refused(det):
    old = TrtFeatures.of(_fake_trt("8.6.2", strongly=False))
    assert "builds with TensorRT 10 or 11" in err(validate_build, det, features=old)


def test_network_flags_never_explicit_batch():
    # TensorRT 10: STRONGLY_TYPED = 1 (EXPLICIT_BATCH = 0 is never passed); 11: always strongly
    # typed, the flag (value 0 there) deprecated: no flags at all
    ten = TrtFeatures.of(_fake_trt("10.3.0"))
    assert network_flags(SimpleNamespace(STRONGLY_TYPED=1), True, ten) == 2
    assert network_flags(SimpleNamespace(STRONGLY_TYPED=1), False, ten) == 0
    eleven = TrtFeatures.of(_fake_trt("11.1.0", fp16=False))
    assert network_flags(SimpleNamespace(STRONGLY_TYPED=0), True, eleven) == 0
    no_flag = TrtFeatures.of(_fake_trt("10.0.0", strongly=False))
    assert network_flags(SimpleNamespace(), True, no_flag) == 0


# --- validation -------------------------------------------------------------------------------
def test_precision_choices_on_10_and_11(tmp_path, det):
    assert validate_build(det, features=TRT10).options.as_dict()["strongly_typed"]
    half = validate_build(det, half=True, features=TRT10).options
    assert half.fp16_flag and not half.strongly_typed and half.precision == "float16"
    assert "export the detector with --half" in err(validate_build, det, half=True,
                                                    features=TRT11)
    fp16 = tiny_detector(tmp_path / "h.onnx", precision="float16")
    for f in (TRT10, TRT11):  # a --half detector: strongly typed on both, no FP16 flag
        o = validate_build(fp16, features=f).options
        assert o.strongly_typed and not o.fp16_flag and o.precision == "float16"
    q = tiny_detector(tmp_path / "q.onnx", precision="int8")
    o = validate_build(q, int8=True, features=TRT11).options
    assert o.precision == "int8" and o.strongly_typed
    assert "export it with --int8" in err(validate_build, det, int8=True, features=TRT10)
    assert "exclude each other" in err(validate_build, det, half=True, int8=True,
                                       features=TRT10)
    assert "drop --half" in err(validate_build, q, half=True, features=TRT10)


def test_half_keeps_the_head_float32(det):
    req = validate_build(det, half=True, features=TRT10)
    assert req.head_nodes == {"score_energy/max"} and "score_energy" in req.head_tensors
    nodes, _ = head_of(det)
    assert "fc" not in nodes and "flatten" not in nodes


def test_batch_and_device_arguments(tmp_path, det):
    fixed = tiny_detector(tmp_path / "f.onnx", batch=4)
    assert validate_build(fixed, features=TRT10).options.max_batch == 4
    assert "fixed batch of 4; pass --batch 4" in err(validate_build, fixed, batch=8,
                                                     features=TRT10)
    assert "dynamic needs a detector with a dynamic batch" in err(  # dynamic= from Python
        validate_build, fixed, dynamic=True, features=TRT10)
    assert validate_build(det, batch=16, features=TRT10).options.max_batch == 16
    assert "must be >= 1" in err(validate_build, det, batch=0, features=TRT10)
    assert "must be > 0" in err(validate_build, det, workspace=0, features=TRT10)
    assert parse_device("dla:1") == "dla1" and parse_device("GPU") == "gpu"
    assert "did you mean" in err(parse_device, "dla")
    assert "float16 and int8 only" in err(validate_build, det, device="dla:0", features=TRT10)
    assert "fixed shapes" in err(validate_build, det, half=True, dynamic=True, device="dla:0",
                                 features=TRT10)
    o = validate_build(det, half=True, device="dla:0", features=TRT10).options
    assert o.dla_core == 0 and o.device == "dla0"


def test_file_arguments(tmp_path, det):
    assert "no such file" in err(validate_build, tmp_path / "none.onnx", features=TRT10)
    assert "already an engine" in err(validate_build, tmp_path / "x.engine", features=TRT10)
    assert "ends in .engine" in err(validate_build, det, out=tmp_path / "x.bin", features=TRT10)
    assert "does not exist" in err(validate_build, det, out=tmp_path / "no" / "x.engine",
                                   features=TRT10)
    assert "does not exist" in err(validate_build, det, timing_cache=tmp_path / "no" / "t",
                                   features=TRT10)


def test_needs_tensorrt_for_a_real_build(det):
    from edgeood.runtime.tensorrt.backend import tensorrt_or_none
    if tensorrt_or_none() is not None:
        pytest.skip("TensorRT is installed here")
    assert "--print-trtexec --trt-version" in err(validate_build, det)


# --- names ------------------------------------------------------------------------------------
def test_engine_and_timing_cache_names(tmp_path, det):
    o = validate_build(det, half=True, batch=8, dynamic=True, features=TRT10).options
    path = default_engine_path(det, o, "10.3.0.30")
    assert path.name == "tiny.detector.b8.trt10.3.0.gpu.fp16.engine"
    o = validate_build(tiny_detector(tmp_path / "q.onnx", precision="int8"), device="dla:0",
                       features=TRT10).options
    assert default_engine_path(det, o, "10.3.0").name.endswith(".b1.trt10.3.0.dla0.int8.engine")
    assert version_tag("10.13.0.35") == "10.13.0"
    assert timing_cache_path(Path("c/t.cache"), "10.3.0.30").name == "t.trt10.3.0.cache"
    assert timing_cache_path(Path("c/t.trt10.3.0.cache"), "10.3.0") == Path("c/t.trt10.3.0.cache")
    assert timing_cache_path(Path("c/timing"), "11.0").name == "timing.trt11.0.cache"


# --- trtexec ----------------------------------------------------------------------------------
def test_trtexec_command_10_and_11(tmp_path, det):
    req = validate_build(det, batch=8, dynamic=True, workspace=2, features=TRT10,
                         timing_cache=tmp_path / "t.cache", out=tmp_path / "d.engine")
    cmd = trtexec_command(req)
    assert cmd[:3] == ["trtexec", f"--onnx={det}", f"--saveEngine={tmp_path / 'd.engine'}"]
    assert "--minShapes=input:1x1x8x8" in cmd and "--optShapes=input:8x1x8x8" in cmd
    assert "--maxShapes=input:8x1x8x8" in cmd
    assert "--stronglyTyped" in cmd and "--noTF32" in cmd and "--fp16" not in cmd
    assert "--memPoolSize=workspace:2048M" in cmd
    assert f"--timingCacheFile={tmp_path / 't.trt10.3.0.cache'}" in cmd
    assert cmd[-1] == "--skipInference"
    half = trtexec_command(validate_build(det, half=True, features=TRT10))
    assert "--fp16" in half and "--stronglyTyped" not in half
    assert "--precisionConstraints=prefer" in half
    assert "--layerPrecisions=score_energy/max:fp32" in half
    fixed = trtexec_command(validate_build(det, batch=4, features=TRT10))
    assert "--minShapes=input:4x1x8x8" in fixed  # no --dynamic: min = opt = max
    eleven = trtexec_command(validate_build(tiny_detector(tmp_path / "h.onnx",
                                                          precision="float16"),
                                            features=TRT11, tf32=True))
    assert "--stronglyTyped" not in eleven and "--fp16" not in eleven
    assert "--noTF32" not in eleven
    dla = trtexec_command(validate_build(det, half=True, device="dla:1", features=TRT10))
    assert "--useDLACore=1" in dla and "--allowGPUFallback" in dla


def test_profile_shapes(det):
    req = validate_build(det, batch=16, dynamic=True, features=TRT10)
    assert req.profile_shapes() == {"input": ([1, 1, 8, 8], [16, 1, 8, 8], [16, 1, 8, 8])}
    req = validate_build(det, batch=2, features=TRT10)
    assert req.profile_shapes()["input"][0] == [2, 1, 8, 8]


def test_cli_print_trtexec(det):
    proc = subprocess.run([sys.executable, "-m", "edgeood.cli", "build", str(det),
                           "--print-trtexec", "--trt-version", "10.3", "--batch", "4",
                           "--dynamic", "--json"], capture_output=True, text=True, timeout=60)
    from edgeood.runtime.tensorrt.backend import tensorrt_or_none
    if tensorrt_or_none() is not None:
        assert proc.returncode == 2  # --trt-version names another machine's TensorRT
        return
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["trtexec"].startswith("trtexec --onnx=")
    assert out["engine"].endswith("tiny.detector.b4.trt10.3.gpu.fp32.engine")
    bad = subprocess.run([sys.executable, "-m", "edgeood.cli", "build", str(det)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


# --- parser errors ----------------------------------------------------------------------------
class _Err:
    def __init__(self, desc, node=-1, name="", op=""):
        self._d, self._n, self._name, self._op = desc, node, name, op

    def desc(self):
        return self._d

    def node(self):
        return self._n

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op


def test_parser_errors_are_one_line_with_the_node():
    line = format_parser_error(_Err("TopK: K\nexceeds 3840", 12, "adascale/TopK_3", "TopK"))
    assert line == "node 'adascale/TopK_3' (TopK): TopK: K exceeds 3840"
    assert format_parser_error(_Err("bad", 4)) == "node #4: bad"
    assert format_parser_error(_Err("model is empty")) == "model is empty"

    class Old:  # ParserError before node_name() (TensorRT 8.x)
        def desc(self):
            return "x"

        def node(self):
            return 2
    assert format_parser_error(Old()) == "node #2: x"


# --- the sidecar, reuse, the plan file --------------------------------------------------------
def _request(det, tmp_path):
    return validate_build(det, half=True, batch=2, features=TRT10, out=tmp_path / "d.engine")


def test_sidecar_and_plain_plan(tmp_path, det):
    req = _request(det, tmp_path)
    key = build_key(req.options, detector_sha256(det), "10.3.0",
                    {"name": "Orin", "compute_capability": "8.7"})
    io = [engine_tensor("input", "input", (-1, 1, 8, 8), "FLOAT"),
          engine_tensor("logits", "output", (-1, 3), "FLOAT")]
    plan = b"\x00ftrt-plan-bytes" * 10
    meta = engine_metadata(req, key, io, plan, ["score_energy/max"])
    write_engine(req.out, plan, meta)
    assert req.out.read_bytes() == plan  # nothing prepended: trtexec / DeepStream load it
    side = json.loads(Path(str(req.out) + ".json").read_text())
    eng = side["engine"]
    assert eng["source"] == {"path": det.name, "name": det.name,
                             "sha256": detector_sha256(det)}
    assert eng["tensorrt_version"] == "10.3.0" and eng["gpu"]["compute_capability"] == "8.7"
    assert eng["precision"] == "float16" and eng["build_options"]["fp16_flag"]
    assert eng["gpu_fallback_layers"] == ["score_energy/max"]
    assert side["primary"] == "energy"  # the detector's metadata rides along
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # reuse: same source, version, GPU and options
    assert existing_key(req.out) == key
    other = build_key(validate_build(det, batch=2, features=TRT10).options,
                      detector_sha256(det), "10.3.0", key["gpu"])
    assert existing_key(req.out) != other
    req.out.write_bytes(plan + b"x")  # a replaced plan is not reused
    assert existing_key(req.out) is None


def _fake_engine(det, tmp_path):
    req = _request(det, tmp_path)
    key = build_key(req.options, detector_sha256(det), "10.3.0",
                    {"name": "Orin", "compute_capability": "8.7"})
    io = [engine_tensor("input", "input", (-1, 1, 8, 8), "FLOAT"),
          engine_tensor("logits", "output", (-1, 3), "FLOAT"),
          engine_tensor("score_energy", "output", (-1,), "FLOAT")]
    return write_engine(req.out, b"plan", engine_metadata(req, key, io, b"plan", []))


def test_inspect_an_engine(tmp_path, det):
    engine = _fake_engine(det, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "edgeood.cli", "inspect", str(engine)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "TensorRT 10.3.0 plan" in proc.stdout and "built from tiny.detector.onnx" in proc.stdout
    assert "outputs: logits[-1, 3], score_energy[-1]" in proc.stdout
    assert "calibration target: onnxruntime/cpu/float32" in proc.stdout


def test_recalibrating_an_engine_needs_its_unchanged_source(tmp_path, det):
    from edgeood.pipeline.engine_calibrate import source_of
    engine = _fake_engine(det, tmp_path)
    section = json.loads(Path(str(engine) + ".json").read_text())["engine"]
    assert source_of(engine, section) == det.resolve()
    det.write_bytes(det.read_bytes() + b" ")
    assert "changed since d.engine was built" in err(source_of, engine, section)
    det.unlink()
    assert "which is not there" in err(source_of, engine, section)


def test_build_input_uint8_writes_a_camera_frame_entry(digits_model, digits_data, tmp_path):
    """`edgeood build DET --input uint8` on a detector exported without --input uint8 adds the
    in-graph preprocessing and builds the single `image` entry: that ONNX file scores raw
    frames exactly like the float detector scores the host-preprocessed ones."""
    import edgeood
    import onnxruntime as ort
    from edgeood.zoo import digits
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy", "msp"],
                         recipe="digits_cnn", out=tmp_path / "d.onnx")
    proc = subprocess.run([sys.executable, "-m", "edgeood.cli", "build", str(res.path),
                           "--input", "uint8", "--print-trtexec", "--trt-version", "10.3",
                           "--batch", "4", "--dynamic", "--json"],
                          capture_output=True, text=True, timeout=120)
    from edgeood.runtime.tensorrt.backend import tensorrt_or_none
    entry = tmp_path / "d.uint8.onnx"
    assert entry.is_file() and Path(str(entry) + ".json").is_file(), proc.stderr
    if tensorrt_or_none() is None:
        assert proc.returncode == 0, proc.stderr
        trt_copy = tmp_path / "d.uint8.trt.onnx"  # log-sum-exp max-shifted for the parser
        assert f"--onnx={trt_copy}" in json.loads(proc.stdout)["trtexec"]
        from edgeood.tensorrt.rewrite import needs_rewrite
        assert needs_rewrite(onnx.load(str(entry))) and not needs_rewrite(onnx.load(str(trt_copy)))
    sess = ort.InferenceSession(str(entry), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    frames = digits_data.test[0][:16]
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": frames})))
    want = edgeood.load(res.path)(digits.PREPROCESS.normalize(frames))
    for m in ("energy", "msp"):
        np.testing.assert_allclose(got[f"score_{m}"], want.scores[m], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["is_ood"], want.is_ood)
