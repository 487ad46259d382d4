"""Saving, re-loading and re-calibrating detectors; metadata in the file and the sidecar."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import edgeood
from edgeood.artifact.metadata import sidecar_path


def test_reload_gives_identical_outputs(digits_detector, digits_data, tmp_path):
    a = edgeood.load(digits_detector.path)(digits_data.test[0])
    b = edgeood.load(digits_detector.path)(digits_data.test[0])
    np.testing.assert_array_equal(a.logits, b.logits)
    for m in a.scores:
        np.testing.assert_array_equal(a.scores[m], b.scores[m])
        np.testing.assert_array_equal(a.pvalues[m], b.pvalues[m])
    np.testing.assert_array_equal(a.is_ood, b.is_ood)


def test_sidecar_and_embedded_metadata_agree(digits_detector):
    path = digits_detector.path
    model = onnx.load(str(path))
    embedded = json.loads({p.key: p.value for p in model.metadata_props}["edgeood"])
    side = json.loads(sidecar_path(path).read_text())
    assert embedded == side
    assert embedded["schema_version"] == 1
    assert embedded["outputs"] == [o.name for o in model.graph.output]
    for key in ("input", "preprocessing", "tpr", "primary", "calibration", "source",
                "edgeood_version", "methods"):
        assert key in embedded
    assert embedded["methods"]["react"]["percentile"] == 90.0
    assert len(embedded["source"]["sha256"]) == 64


def test_same_inputs_give_byte_identical_detectors(digits_model, digits_data, tmp_path):
    kw = dict(data=digits_data.val[0], methods=["energy", "featurenorm"], recipe="digits_cnn")
    a = edgeood.export(digits_model, out=tmp_path / "a.onnx", **kw).path
    b = edgeood.export(digits_model, out=tmp_path / "b.onnx", **kw).path
    assert a.read_bytes() == b.read_bytes()


def test_recalibrate_refits_thresholds(digits_detector, digits_data, tmp_path):
    out = tmp_path / "recal.onnx"
    res = edgeood.calibrate(digits_detector.path, digits_data.test[0], tpr=0.9, out=out)
    det = edgeood.load(out)
    scores = det(digits_data.test[0]).scores
    for m in det.methods:
        assert res.metadata["methods"][m]["threshold"] == pytest.approx(
            np.percentile(scores[m].astype(np.float64), 10), rel=1e-6)
    assert res.metadata["tpr"] == 0.9
    assert res.metadata["calibration"]["count"] == len(digits_data.test[0])
    # fitted statistics are kept
    before = digits_detector.metadata["methods"]
    assert res.metadata["methods"]["react"]["threshold_activation"] == \
        before["react"]["threshold_activation"]
    assert [o.name for o in onnx.load(str(out)).graph.output] == res.metadata["outputs"]


def test_export_without_data_then_calibrate(digits_model, digits_data, tmp_path):
    path = tmp_path / "nodata.onnx"
    res = edgeood.export(digits_model, methods=["energy", "scale"], recipe="digits_cnn", out=path)
    assert res.metadata["calibration"] is None
    det = edgeood.load(path)
    r = det(digits_data.test[0][:5])
    assert r.is_ood is None and r.pvalues == {}
    edgeood.calibrate(path, digits_data.val[0])
    r = edgeood.load(path)(digits_data.test[0][:5])
    assert r.is_ood is not None and set(r.pvalues) == {"energy", "scale"}


def test_detector_inputs(digits_detector, digits_data):
    det = edgeood.load(digits_detector.path)
    imgs = digits_data.test[0][:6]
    a = det(imgs)
    b = det(list(imgs))
    c = det(det.preprocess.normalize(imgs))
    d = det(imgs[0])  # one H x W x C image
    np.testing.assert_array_equal(a.scores["energy"], b.scores["energy"])
    np.testing.assert_array_equal(a.scores["energy"], c.scores["energy"])
    assert d.scores["energy"][0] == a.scores["energy"][0]
    assert list(a.labels) == list(a.logits.argmax(1))


def test_fixed_batch_model_is_fed_in_chunks(digits_model, digits_data, tmp_path):
    """A model exported with a fixed batch of 4 still runs on any number of images."""
    m = onnx.load(str(digits_model))
    for t in list(m.graph.input) + list(m.graph.output):
        t.type.tensor_type.shape.dim[0].dim_value = 4
    src = tmp_path / "fixed.onnx"
    onnx.save(m, str(src))
    res = edgeood.export(src, data=digits_data.val[0], methods=["energy"], recipe="digits_cnn",
                         out=tmp_path / "fixed.detector.onnx")
    det = edgeood.load(res.path)
    ref = edgeood.load(res.path)
    out = det(digits_data.test[0][:7]).scores["energy"]
    whole = [ref(digits_data.test[0][i:i + 1]).scores["energy"][0] for i in range(7)]
    np.testing.assert_allclose(out, whole, rtol=1e-6)
