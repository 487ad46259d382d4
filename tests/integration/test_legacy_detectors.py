"""Detectors written before the redesign (schema 1, commit 9313606) load, run and calibrate
with bit-identical outputs: the golden files in tests/data/legacy were made by that commit's
code (tests/data/legacy/make_golden.py), not by the code under test."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import edgeood
from tests.helpers import DATA

LEGACY = DATA / "legacy"


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(LEGACY / "outputs.npz"))


def _outputs(det, images):
    d = det(images)
    out = {"logits": d.logits, "is_ood": d.is_ood}
    out.update({f"score_{m}": s for m, s in d.scores.items()})
    out.update({f"pvalue_{m}": p for m, p in d.pvalues.items()})
    return out


@pytest.mark.parametrize("name", ["digits_all", "digits_uint8_monitor"])
def test_schema1_detector_runs_bit_identical(name, golden):
    det = edgeood.load(LEGACY / f"{name}.onnx")
    out = _outputs(det, golden["images"])
    expected = {k.split("/", 1)[1]: v for k, v in golden.items() if k.startswith(name + "/")}
    assert sorted(out) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(out[key], value, err_msg=f"{name}: {key}")


def test_schema1_detector_calibrates_bit_identical(golden, tmp_path):
    for f in ("digits_all.onnx", "digits_all.onnx.json"):
        shutil.copy(LEGACY / f, tmp_path / f)
    res = edgeood.calibrate(tmp_path / "digits_all.onnx", data=golden["calibrated/images"])
    det = edgeood.load(tmp_path / "digits_all.onnx")
    out = _outputs(det, golden["images"])
    for m in det.methods:
        assert res.metadata["methods"][m]["threshold"] == golden[f"calibrated/threshold_{m}"], m
        np.testing.assert_array_equal(out[f"score_{m}"], golden[f"calibrated/score_{m}"])
        np.testing.assert_array_equal(out[f"pvalue_{m}"], golden[f"calibrated/pvalue_{m}"])
    np.testing.assert_array_equal(out["is_ood"], golden["calibrated/is_ood"])
