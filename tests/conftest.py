"""Shared fixtures: the digits benchmark and EfficientNet-Lite0, exported once per session.
Shared plain code (no fixtures) lives in tests/helpers."""
from __future__ import annotations

import pytest

import edgeood
from tests.helpers.methods import ALL_METHODS


@pytest.fixture(scope="session")
def digits_data():
    from edgeood.zoo import digits
    return digits.load_data(seed=0)


@pytest.fixture(scope="session")
def digits_model(digits_data):
    from edgeood.zoo import digits
    return digits.model_path(seed=0, data=digits_data)


@pytest.fixture(scope="session")
def digits_detector(digits_model, digits_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "digits.detector.onnx"
    return edgeood.export(digits_model, data=digits_data.val[0], methods=ALL_METHODS,
                          recipe="digits_cnn", out=out, keep_taps=True)


@pytest.fixture(scope="session")
def lite0_model():
    from edgeood.zoo import efficientnet_lite0 as lite0
    return lite0.model_path()


@pytest.fixture(scope="session")
def lite0_photos():
    from edgeood.zoo import efficientnet_lite0 as lite0
    return lite0.photos(48, seed=0)


@pytest.fixture(scope="session")
def lite0_detector(lite0_model, lite0_photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("lite0") / "lite0.detector.onnx"
    return edgeood.export(lite0_model, data=lite0_photos[:32], methods=ALL_METHODS,
                          recipe="efficientnet_lite0", out=out, keep_taps=True, batch=16)

