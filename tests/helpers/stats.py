"""The sampling interval of a measured false-alarm rate (shared by the calibration, precision and
GROOD tests)."""
from __future__ import annotations

import numpy as np


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
