"""Thresholds, conformal p-values and FeatureNorm block selection on the digits benchmark."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgeood
from edgeood.pipeline.calibrate import conformal_pvalue
from edgeood.stats.metrics import false_alarm_rate, flagged
from tests.helpers.stats import false_alarm_interval


def _reference_constant(path, method):
    """The method's sorted reference scores, read from the detector's stacked p-value table
    (one row per method, column 0 the -inf that counts the "1 +" of the p-value)."""
    model = onnx.load(str(path))
    init = {i.name: i for i in model.graph.initializer}
    where = edgeood.load(path).metadata["pvalue_references"][method]
    table = onnx.numpy_helper.to_array(init[where["constant"]])
    row = table.reshape(-1, table.shape[-1])[where["row"]]
    assert row[0] == -np.inf
    return row[1:]


def test_false_alarm_rate_on_id_test(digits_detector, digits_data):
    det = edgeood.load(digits_detector.path)
    res = det(digits_data.test[0])
    lo, hi = false_alarm_interval(len(digits_data.val[0]), len(digits_data.test[0]))
    for m, thr in det.thresholds.items():
        rate = false_alarm_rate(res.scores[m], thr)
        assert lo <= rate <= hi, f"{m}: false-alarm rate {rate:.4f} outside [{lo:.4f}, {hi:.4f}]"
    np.testing.assert_array_equal(res.is_ood, res.scores[det.primary] < det.thresholds[det.primary])


def test_a_nan_score_is_ood_with_pvalue_0(digits_detector, digits_data):
    """A NaN image (every score NaN; what an overflowing reduced-precision backbone or a broken
    upstream stage hands the graph) is flagged OOD with p-value 0 by the graph itself, run on
    the ONNX Runtime backend (the Detector's preprocessing refuses NaN input): score < threshold
    would be False for NaN and pass it as in-distribution."""
    from edgeood.runtime.onnxruntime.backend import OrtBackend
    det = edgeood.load(digits_detector.path)
    x = det.preprocess.normalize(digits_data.test[0][:4]).astype(np.float32)
    x[1] = np.nan
    out = OrtBackend(digits_detector.path).run(x)
    s = out[f"score_{det.primary}"]
    assert np.isnan(s[1]) and np.isfinite(s[[0, 2, 3]]).all()
    assert out["is_ood"][1]
    np.testing.assert_array_equal(out["is_ood"], flagged(s, det.thresholds[det.primary]))
    np.testing.assert_array_equal(out["is_ood"][[0, 2, 3]],
                                  s[[0, 2, 3]] < det.thresholds[det.primary])
    for m in det.methods:
        assert np.isnan(out[f"score_{m}"][1]) and out[f"pvalue_{m}"][1] == 0, m


def test_threshold_is_the_5th_percentile_of_calibration_scores(digits_detector, digits_data):
    det = edgeood.load(digits_detector.path)
    res = det(digits_data.val[0])
    for m, thr in det.thresholds.items():
        assert thr == pytest.approx(np.percentile(res.scores[m].astype(np.float64), 5), rel=1e-6)
        ref = _reference_constant(digits_detector.path, m)
        np.testing.assert_array_equal(ref, np.sort(res.scores[m]))
    assert digits_detector.metadata["calibration"]["count"] == len(digits_data.val[0])


def test_pvalues_match_numpy_and_are_uniform_on_id(digits_detector, digits_data):
    det = edgeood.load(digits_detector.path)
    res = det(digits_data.test[0])
    for m in det.methods:
        ref = _reference_constant(digits_detector.path, m)
        np.testing.assert_allclose(res.pvalues[m], conformal_pvalue(res.scores[m], ref), atol=1e-6)
        p = np.sort(res.pvalues[m])
        ks = np.max(np.abs(p - np.arange(1, len(p) + 1) / len(p)))
        assert ks < 0.15, f"{m}: KS distance of ID p-values from uniform {ks:.3f}"
    far = det(digits_data.far)
    assert np.median(far.pvalues["msp"]) < np.median(res.pvalues["msp"])


def test_reference_subsample_is_capped_and_seeded():
    from edgeood.pipeline.calibrate import reference_scores
    s = np.random.default_rng(0).standard_normal(12000)
    a, b = reference_scores(s, seed=3), reference_scores(s, seed=3)
    assert len(a) == 5000 and np.all(np.diff(a) >= 0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, reference_scores(s, seed=4))
    assert set(a.tolist()) <= set(s.astype(np.float32).tolist())


def test_featurenorm_normratios_reported_and_argmax_selected(digits_detector, lite0_detector):
    for det in (digits_detector, lite0_detector):
        fn = det.metadata["methods"]["featurenorm"]
        ratios = fn["norm_ratios"]
        assert len(ratios) >= 3 and all(np.isfinite(v) and v > 0 for v in ratios.values())
        assert fn["selected_block"] == max(ratios, key=ratios.get)


def test_normratio_against_independent_jigsaw(digits_model, digits_data):
    """Recompute NormRatio for every candidate with torch-free NumPy: taps from a keep-taps
    export with the block forced, jigsaw written out here with the same seeded permutations."""
    from edgeood.zoo import digits
    import tempfile, pathlib
    from edgeood.runtime.onnxruntime.backend import OrtBackend
    from edgeood.graph.model import prepare, to_model
    from edgeood.graph.taps import tapped
    x = digits.PREPROCESS.normalize(digits_data.val[0][:64])
    with tempfile.TemporaryDirectory() as tmp:
        res = edgeood.export(digits_model, data=digits_data.val[0][:64], methods=["featurenorm"],
                             recipe="digits_cnn", out=pathlib.Path(tmp) / "d.onnx", batch=16)
    ratios = res.metadata["methods"]["featurenorm"]["norm_ratios"]
    g = tapped(prepare(onnx.load(str(digits_model))), list(ratios))
    backend = OrtBackend(to_model(g).SerializeToString())
    rng = np.random.default_rng(0)
    fill = (0 - 0.3) / 0.4
    jig = np.full_like(x, fill)
    for start in range(0, 64, 16):  # same batching and permutation order as calibration
        for i in range(start, start + 16):
            perm = rng.permutation(9)
            for dst in range(9):
                src = perm[dst]
                jig[i, :, 2 * (dst // 3):2 * (dst // 3) + 2, 2 * (dst % 3):2 * (dst % 3) + 2] = \
                    x[i, :, 2 * (src // 3):2 * (src // 3) + 2, 2 * (src % 3):2 * (src % 3) + 2]
    a, b = backend.run(x), backend.run(jig)
    for name, got in ratios.items():
        fa = np.sqrt((np.maximum(a[name], 0) ** 2).sum((2, 3))).mean(1)
        fb = np.sqrt((np.maximum(b[name], 0) ** 2).sum((2, 3))).mean(1)
        assert got == pytest.approx(np.mean(fa / fb), rel=1e-5)
