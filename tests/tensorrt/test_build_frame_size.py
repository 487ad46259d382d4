"""`edgeood build --input uint8 --frame-size`: a camera's fixed frame size (or a min/opt/max
range over H and W) reaches the trtexec line, the engine's optimization profile and its build
options; nothing is written when the build does not validate; the written uint8 entry runs in
ONNX Runtime like the float detector on frames resized on the host by the same rule."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import edgeood
from edgeood.config import BuildConfig
from edgeood.errors import EdgeoodError
from edgeood.resize import HALF_PIXEL_LINEAR
from edgeood.runtime.tensorrt.backend import tensorrt_or_none
from edgeood.tensorrt.builder import TrtFeatures
from tests.helpers.deploy import bgr_detector, photo_frames

TRT103 = TrtFeatures.assumed("10.3")
no_trt = pytest.mark.skipif(tensorrt_or_none() is not None,
                            reason="--trt-version names another machine's TensorRT")


@pytest.fixture(scope="module")
def float_det(tmp_path_factory):
    """The tiny BGR CNN (16 x 16, resize allowed), exported without --input uint8."""
    return bgr_detector(tmp_path_factory.mktemp("fs"), input="float").path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeood.cli", "build", *map(str, args)],
                          capture_output=True, text=True, timeout=180)


def _frames(n, h, w, seed):
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR))
                     for f in photo_frames(n, 96, seed=seed)])


def _host(det_path, frames):
    """The float detector on frames resized on the host with the graph's rule."""
    det = edgeood.load(det_path)
    pre = dataclasses.replace(det.preprocess, resize_rule=HALF_PIXEL_LINEAR)
    return det(pre.normalize(np.stack([pre.fit_image(f) for f in frames])))


def _close(a, b, tol):
    """max |a - b| relative to max(1, |b|) (as tests/graph/test_uint8_input.py)."""
    err = float(np.abs(np.asarray(a, np.float64) - b).max() / max(1.0, float(np.abs(b).max())))
    assert err <= tol, err


def _same_as_host(entry, det_path, frames):
    sess = ort.InferenceSession(str(entry), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": frames})))
    want = _host(det_path, frames)
    for m, s in want.scores.items():
        _close(got[f"score_{m}"], s, 1e-3)
    # a frame whose score sits within the tolerance of its threshold may flip; none else
    for m in want.scores:
        t = edgeood.load(det_path).metadata["methods"][m]["threshold"]
        near = np.abs(want.scores[m] - t) <= 1e-3 * max(1.0, float(np.abs(want.scores[m]).max()))
        if m == edgeood.load(det_path).metadata["primary"]:
            np.testing.assert_array_equal(got["is_ood"][~near], want.is_ood[~near])


@no_trt
def test_dynamic_frames_are_refused_and_nothing_is_written(float_det):
    """The issue: --input uint8 on a resizing detector wrote det.uint8.onnx and its sidecar,
    then failed telling the user to re-export with --imgsz (which did not help)."""
    before = sorted(p.name for p in float_det.parent.iterdir())
    proc = _cli(float_det, "--input", "uint8", "--print-trtexec", "--trt-version", "10.3")
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--frame-size" in proc.stderr and "--imgsz" not in proc.stderr
    assert sorted(p.name for p in float_det.parent.iterdir()) == before
    # a build that fails later (--int8 on a float32 detector) writes nothing either
    proc = _cli(float_det, "--input", "uint8", "--frame-size", "48x64", "--int8",
                "--print-trtexec", "--trt-version", "10.3")
    assert proc.returncode == 2 and "--int8" in proc.stderr, proc.stderr
    assert sorted(p.name for p in float_det.parent.iterdir()) == before


@no_trt
def test_fixed_frame_size_reaches_trtexec_and_runs_like_the_host(float_det):
    proc = _cli(float_det, "--input", "uint8", "--frame-size", "48x64", "--batch", "4",
                "--dynamic", "--print-trtexec", "--trt-version", "10.3", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    line = out["trtexec"]
    assert "--minShapes=image:1x48x64x3" in line
    assert "--optShapes=image:4x48x64x3" in line and "--maxShapes=image:4x48x64x3" in line
    assert out["build_options"]["frame_size"] == {"min": [48, 64], "opt": [48, 64],
                                                  "max": [48, 64]}
    entry = float_det.with_name(float_det.name.removesuffix(".onnx") + ".uint8.onnx")
    sess = ort.InferenceSession(str(entry), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in sess.get_inputs()] == [("image", [48, 64, 3])]
    meta = json.loads(entry.with_name(entry.name + ".json").read_text())
    assert meta["input"]["image"]["shape"] == ["batch", 48, 64, 3]
    _same_as_host(entry, float_det, _frames(12, 48, 64, seed=5))
    # the engine-building path gets the same shapes (its request, validated for 10.3)
    from edgeood.api import validate_build
    cfg = BuildConfig.from_kwargs(input="uint8", frame_size=(48, 64), batch=4, dynamic=True)
    req = validate_build(float_det, cfg, TRT103)
    assert req.profile_shapes() == {"image": ([1, 48, 64, 3], [4, 48, 64, 3], [4, 48, 64, 3])}
    assert req.options.as_dict()["frame_size"]["opt"] == [48, 64]
    # the engine's sidecar records it, and it is part of the reuse key
    from edgeood.tensorrt.builder import (build_key, detector_sha256, engine_metadata,
                                          existing_key, write_engine)
    from edgeood.runtime.tensorrt.backend import engine_tensor
    gpu = {"name": "Orin", "compute_capability": "8.7"}
    key = build_key(req.options, detector_sha256(entry), "10.3.0", gpu)
    io = [engine_tensor("image", "input", (-1, 48, 64, 3), "UINT8")]
    write_engine(req.out, b"plan", engine_metadata(req, key, io, b"plan", []))
    side = json.loads(req.out.with_name(req.out.name + ".json").read_text())
    assert side["engine"]["build_options"]["frame_size"] == {"min": [48, 64], "opt": [48, 64],
                                                             "max": [48, 64]}
    assert existing_key(req.out) == key
    other = validate_build(float_det, dataclasses.replace(cfg, frame_size=((48, 64),) * 3),
                           TRT103)
    assert build_key(other.options, detector_sha256(entry), "10.3.0", gpu) == key
    bigger = validate_build(float_det, dataclasses.replace(
        cfg, frame_size=((48, 64), (48, 64), (96, 128))), TRT103)
    assert bigger.options.as_dict()["frame_size"]["max"] == [96, 128]
    assert build_key(bigger.options, key["source_sha256"], "10.3.0", gpu) != key
    # a detector built before --frame-size keeps its build key (no frame_size entry)
    assert "frame_size" not in validate_build(float_det, BuildConfig.from_kwargs(),
                                              TRT103).options.as_dict()


@no_trt
def test_frame_size_range_is_an_optimization_profile(float_det, tmp_path):
    import shutil
    det = tmp_path / float_det.name
    shutil.copy(float_det, det)
    shutil.copy(str(float_det) + ".json", str(det) + ".json")
    proc = _cli(det, "--input", "uint8", "--frame-size", "24x32:48x64:96x128", "--batch", "2",
                "--print-trtexec", "--trt-version", "10.3")
    assert proc.returncode == 0, proc.stderr
    assert "--minShapes=image:2x24x32x3 --optShapes=image:2x48x64x3 " \
           "--maxShapes=image:2x96x128x3" in proc.stdout
    entry = tmp_path / det.name.replace(".onnx", ".uint8.onnx")
    sess = ort.InferenceSession(str(entry), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:3] == ["image_height", "image_width"]
    for h, w, seed in ((24, 32, 6), (96, 128, 7), (40, 50, 8)):
        _same_as_host(entry, det, _frames(8, h, w, seed))
    # the range's checks: one line each, in the caller's words
    for bad, why in (("48x64:24x32:96x128", "grow"), ("480", "HxW"), ("1x2:3x4", "three"),
                     ("0x640", ">= 1")):
        with pytest.raises(EdgeoodError) as e:
            BuildConfig.from_kwargs("cli", input="uint8", frame_size=bad)
        assert str(e.value).startswith(f"--frame-size {bad} ") and why in str(e.value)
    with pytest.raises(EdgeoodError, match="^frame_size"):
        BuildConfig.from_kwargs(frame_size=(480, "640"))
    assert BuildConfig.from_kwargs(frame_size=((1, 2), (3, 4), (5, 6))).frame_size == \
        ((1, 2), (3, 4), (5, 6))


def test_frame_size_needs_the_uint8_input(float_det):
    from edgeood.api import validate_build
    for kw in ({"frame_size": (48, 64)}, {"frame_size": (48, 64), "input": "float"}):
        with pytest.raises(EdgeoodError) as e:
            validate_build(float_det, BuildConfig.from_kwargs(**kw), TRT103)
        assert "--input uint8" in str(e.value) and "\n" not in str(e.value)


def test_frame_size_of_a_detector_that_does_not_resize(digits_model, digits_data, tmp_path):
    """The digits recipe does not resize: frames are 8 x 8; another --frame-size is refused
    before anything is written, the model's own size is accepted."""
    from edgeood.api import validate_build
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy"],
                         recipe="digits_cnn", out=tmp_path / "d.onnx")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(EdgeoodError, match="frames of 8x8 only") as e:
        validate_build(res.path, BuildConfig.from_kwargs(input="uint8", frame_size=(480, 640)),
                       TRT103)
    assert "\n" not in str(e.value) and sorted(p.name for p in tmp_path.iterdir()) == before
    req = validate_build(res.path, BuildConfig.from_kwargs(input="uint8", frame_size=(8, 8),
                                                           batch=2), TRT103)
    assert req.profile_shapes() == {"image": ([2, 8, 8, 1], [2, 8, 8, 1], [2, 8, 8, 1])}
