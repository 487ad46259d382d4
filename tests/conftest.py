"""Shared fixtures: the digits benchmark and EfficientNet-Lite0, exported once per session."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgeood
from edgeood.graph.head import find_head
from edgeood.graph.model import prepare
from edgeood.methods import ModelInfo, from_metadata

ALL_METHODS = ["energy", "msp", "maxlogit", "react", "scale", "featurenorm"]


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


def fitted_methods(model_path, metadata, detector_path=None):
    """The detector's methods rebuilt from metadata (and, for statistics kept in the graph, the
    detector's constants), bound to the source model's head."""
    from edgeood.artifact.metadata import read_constants
    graph = prepare(onnx.load(str(model_path)))
    head = find_head(graph)
    info = ModelInfo(head=head, candidates=[])
    constants = read_constants(detector_path) if detector_path is not None else None
    return {name: from_metadata(name, entry, info, constants)
            for name, entry in metadata["methods"].items()}


def tap_dict(outputs: dict[str, np.ndarray], metadata) -> dict[str, np.ndarray]:
    """The detector's kept tap outputs by tap key (the metadata's "taps" map), plus logits."""
    taps = {"logits": outputs["logits"]}
    for key, name in metadata["taps"].items():
        taps[key] = outputs[name]
    return taps


def false_alarm_interval(n_cal: int, n_test: int, tpr: float = 0.95, alpha: float = 1e-3):
    """The (1 - alpha) interval of the measured ID false-alarm rate on n_test independent ID
    images when the threshold is the (1 - tpr) quantile of n_cal calibration scores.

    The threshold lies between the order statistics X_(k) and X_(k+1) of the calibration scores
    (k = floor((1 - tpr) (n_cal - 1)) + 1, NumPy's linear interpolation); F(X_(k)) is
    Beta(k, n_cal + 1 - k) for any continuous score, so the false-alarm count is beta-binomial:
    the lower end comes from X_(k), the upper from X_(k+1)."""
    from scipy.stats import betabinom
    k = int(np.floor((1 - tpr) * (n_cal - 1))) + 1
    lo = betabinom.ppf(alpha / 2, n_test, k, n_cal + 1 - k)
    hi = betabinom.ppf(1 - alpha / 2, n_test, k + 1, n_cal - k)
    return lo / n_test, hi / n_test
