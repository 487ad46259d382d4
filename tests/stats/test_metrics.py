"""edgeood.stats.metrics against scikit-learn's implementations."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from edgeood.stats import metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_against_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    a = rng.normal(1.0, 1.0, 300)
    b = rng.normal(0.0, 1.5, 200)
    if ties:
        a, b = np.round(a), np.round(b)
    y = np.r_[np.ones(len(a)), np.zeros(len(b))]
    s = np.r_[a, b]
    assert metrics.auroc(a, b) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.aupr_in(a, b) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert metrics.aupr_out(a, b) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    assert metrics.fpr_at_tpr(a, b, 0.95) == pytest.approx(fpr[np.searchsorted(tpr, 0.95)], abs=1e-12)


def test_false_alarm_rate():
    assert metrics.false_alarm_rate(np.array([0.0, 1.0, 2.0, 3.0]), 1.5) == 0.5
