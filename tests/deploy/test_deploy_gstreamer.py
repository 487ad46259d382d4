"""samples/gstreamer_camera.py for real: a few hundred videotestsrc frames through GStreamer's
appsink into the Detector, the decision drawn on each frame and pushed through appsrc."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

import edgeood
from tests.helpers import REPO

SAMPLE = REPO / "samples" / "gstreamer_camera.py"


def _load_sample():
    spec = importlib.util.spec_from_file_location("gstreamer_camera", SAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cam = _load_sample()
try:
    Gst, _, _ = cam.import_gst()
    _missing = [e for e in ("videotestsrc", "videoconvert", "videoscale", "appsink", "appsrc",
                            "fakesink") if Gst.ElementFactory.find(e) is None]
    REASON = f"GStreamer lacks {', '.join(_missing)}" if _missing else None
except (ImportError, ValueError) as exc:
    REASON = (f"PyGObject / GStreamer unavailable ({exc}); install python3-gi "
              "gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base (and pip install PyGObject in "
              "a virtualenv), as .ci/run does")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def _run(det, desc, n):
    sink = cam.FrameSink("fakesink sync=false")
    results = list(cam.camera_loop(det, desc, 0, sink))
    sink.close()
    assert len(results) == n and sink.count == n
    return results


def _check_per_frame(det, results):
    """The loop's per-frame outputs equal the detector run on the same frames at once; the
    border drawn on each frame is the decision's colour."""
    frames = np.stack([r.frame for r in results])
    batch = det(frames)
    for i, r in enumerate(results):
        assert r.index == i and r.label == int(batch.labels[i])
        assert r.is_ood == bool(batch.is_ood[i])
        for m, s in batch.scores.items():
            assert r.scores[m] == pytest.approx(float(s[i]), rel=1e-5, abs=1e-5)
            assert r.pvalues[m] == pytest.approx(float(batch.pvalues[m][i]), abs=1e-6)
        color = cam.OOD_COLOR if r.is_ood else cam.OK_COLOR
        corner = r.annotated[-1, -1].astype(int)
        want = color if r.annotated.shape[2] == 3 else [int(np.mean(color))]
        assert corner.tolist() == list(want)
    return frames, batch


def test_videotestsrc_frames_through_a_uint8_digits_detector(digits_model, digits_data,
                                                              tmp_path):
    """300 moving-ball GRAY8 frames at 62 x 47 (rows padded to 64 bytes by GStreamer) go into
    the graph as they are; the graph resizes them to 8 x 8."""
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy", "msp"],
                         mean=[0.3], std=[0.4], out=tmp_path / "cam.onnx", input="uint8")
    det = edgeood.load(res.path)
    desc = cam.pipeline_description("test", 62, 47, 30, channels=1, frames=300,
                                    pattern="ball", live=False)
    assert "videotestsrc pattern=ball num-buffers=300" in desc and "GRAY8" in desc
    results = _run(det, desc, 300)
    frames, batch = _check_per_frame(det, results)
    assert frames.shape == (300, 47, 62, 1) and frames.dtype == np.uint8
    assert len({f.tobytes() for f in frames}) > 100          # the ball moves
    assert 0 < int(batch.is_ood.sum()) <= 300


def test_videotestsrc_rgb_frames_scaled_by_the_pipeline(tmp_path):
    """RGB frames (30 pixels wide: 90-byte rows padded to 92) for a float-input BGR model
    that the pipeline scales to its 16 x 16 (--scale; nvvidconv on a Jetson)."""
    from tests.helpers.deploy import bgr_detector
    det = edgeood.load(bgr_detector(tmp_path, input="float", methods=("energy", "react")).path)
    desc = cam.pipeline_description("test", 30, 22, 30, channels=3,
                                    scale_to=cam.model_scaling(det, True), frames=200,
                                    pattern="smpte", live=False)
    results = _run(det, desc, 200)
    frames, _ = _check_per_frame(det, results)
    assert frames.shape == (200, 16, 16, 3)


def test_pipeline_strings_for_cameras():
    csi = cam.pipeline_description("csi", 1280, 720, 30, channels=3, scale_to=(224, 224))
    assert csi.startswith("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280")
    assert "nvvidconv ! video/x-raw,format=BGRx,width=224,height=224" in csi
    assert csi.endswith("appsink name=frames sync=false max-buffers=1 drop=true")
    usb = cam.pipeline_description("usb", 640, 480, 30, channels=1, device="/dev/video2")
    assert usb.startswith("v4l2src device=/dev/video2 ! video/x-raw,width=640,height=480")
    assert "format=GRAY8" in usb
    if Gst.ElementFactory.find("v4l2src") is not None:   # builds (no camera needed to build)
        assert Gst.parse_launch(usb) is not None
    with pytest.raises(ValueError):
        cam.pipeline_description("rtsp")


def test_sample_main_prints_every_frame(digits_model, digits_data, tmp_path, capsys):
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy"],
                         recipe="digits_cnn", out=tmp_path / "d.onnx")
    assert cam.main([str(res.path), "--test", "--frames", "40", "--width", "32", "--height",
                     "24", "--json"]) == 0
    out = capsys.readouterr()
    rows = [line for line in out.out.splitlines() if line.startswith("{")]
    assert len(rows) == 40 and "40 frames" in out.err
