"""The folded scores (ONNX Runtime) equal each method's NumPy reference on the tapped tensors,
and the tapped tensors and logits equal PyTorch's, on the digits CNN and EfficientNet-Lite0."""
from __future__ import annotations

import numpy as np
import pytest

from edgeood.runtime.onnxruntime.backend import OrtBackend
from tests.helpers.methods import ALL_METHODS, fitted_methods, tap_dict


def _run(detector_path, x):
    backend = OrtBackend(detector_path)
    return backend.run(x)


def _assert_parity(outputs, methods, meta):
    taps = tap_dict(outputs, meta)
    for name, m in methods.items():
        got = outputs[f"score_{name}"].astype(np.float64)
        want = m.reference(taps)
        scale = max(1.0, float(np.abs(want).max()))
        err = float(np.abs(got - want).max()) / scale
        assert err <= 1e-4, f"{name}: max abs diff {err:.3g} of score scale {scale:.3g}"


def test_digits_parity(digits_detector, digits_model, digits_data):
    meta = digits_detector.metadata
    x = __import__("edgeood.zoo.digits", fromlist=["PREPROCESS"]).PREPROCESS.normalize(
        np.concatenate([digits_data.test[0], digits_data.near[:100], digits_data.far[:100]]))
    out = _run(digits_detector.path, x)
    assert set(ALL_METHODS) <= {k[6:] for k in out if k.startswith("score_")}
    _assert_parity(out, fitted_methods(digits_model, meta), meta)


def test_lite0_parity(lite0_detector, lite0_model, lite0_photos):
    from edgeood.data import Preprocess
    meta = lite0_detector.metadata
    pre = Preprocess.from_dict(meta["preprocessing"])
    out = _run(lite0_detector.path, pre.normalize(lite0_photos[32:48]))
    _assert_parity(out, fitted_methods(lite0_model, meta), meta)


def test_digits_matches_pytorch(digits_detector, digits_data):
    """ORT logits and penultimate features equal the PyTorch module's."""
    from edgeood.zoo import digits
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (the reference is the PyTorch module)")
    model = digits.train_cnn(digits_data, seed=0, epochs=1)  # any weights: compare one module
    import tempfile, pathlib
    import edgeood
    with tempfile.TemporaryDirectory() as tmp:
        res = edgeood.export(model, data=digits_data.val[0], methods=["energy"],
                             recipe="digits_cnn", out=pathlib.Path(tmp) / "d.onnx",
                             keep_taps=True)
        x = digits.PREPROCESS.normalize(digits_data.test[0])
        out = OrtBackend(res.path).run(x)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        z = torch.flatten(model.pool(model.features(xt)), 1).numpy()
        logits = model(xt).numpy()
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["tap_z"], z, rtol=1e-4, atol=1e-4)


def test_lite0_matches_pytorch(lite0_detector, lite0_photos):
    from edgeood.data import Preprocess
    torch = pytest.importorskip(
        "torch", reason="torch is not installed (the reference is the PyTorch module)")
    from edgeood.zoo import efficientnet_lite0 as lite0
    meta = lite0_detector.metadata
    x = Preprocess.from_dict(meta["preprocessing"]).normalize(lite0_photos[:4])
    out = OrtBackend(lite0_detector.path).run(x)
    net = lite0.module()
    with torch.no_grad():
        feats = net.extract_features(torch.from_numpy(x))
        z = feats.mean(dim=(2, 3)).numpy()
        logits = net(torch.from_numpy(x)).numpy()
    scale = np.abs(logits).max()
    assert np.abs(out["logits"] - logits).max() / scale < 1e-4
    assert np.abs(out["tap_z"] - z).max() / np.abs(z).max() < 1e-4
    # the pretrained weights are real: the crop of the cat photo is a cat (ImageNet 281-285)
    assert lite0.PHOTOS[1] == "chelsea"
    assert 281 <= int(out["logits"][1].argmax()) <= 285


@pytest.mark.parametrize("fixture", ["digits_detector", "lite0_detector"])
def test_score_direction_energy_vs_numpy(fixture, request):
    """Energy, MSP and MaxLogit from ORT against formulas written out here."""
    det = request.getfixturevalue(fixture)
    from edgeood.runtime import load
    d = load(det.path)
    n = 8
    c, h, w = d.preprocess.channels, *d.preprocess.size
    x = np.random.default_rng(1).standard_normal((n, c, h, w)).astype(np.float32)
    r = d(x)
    logits = r.logits.astype(np.float64)
    m = logits.max(1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
    np.testing.assert_allclose(r.scores["energy"], lse, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.scores["maxlogit"], logits.max(1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(r.scores["msp"], np.exp(logits.max(1) - lse), rtol=1e-5, atol=1e-6)
