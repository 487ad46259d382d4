"""The stream alarm's arithmetic, NumPy only: the betting function and the Shiryaev-Roberts
recursion over a batch of frames (the derivation is in edgeood.stats.monitor's docstring).

One file with no edgeood import, so that the host-side StreamMonitor and the per-stream monitors
of a served Triton model (`edgeood deploy triton --backend python` copies this file beside its
model.py, where edgeood is not installed) run the same operations in the same order.
"""
from __future__ import annotations

import numpy as np

SERIES_BELOW = 0.5  # x = -ln p below this: the series; above: the closed form


def power_mixture(p) -> np.ndarray:
    """f(p) = integral_0^1 e p^(e-1) de = (1 - p + p ln p) / (p ln^2 p), f(1) = 1/2, float64.

    As a function of x = -ln p: (e^x - 1 - x) / x^2 = sum_k x^k / (k + 2)!; the series is
    used for x < 1/2 (near p = 1, where the closed form cancels), expm1 above. f(0) = inf."""
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        x = -np.log(p)
        small = x < SERIES_BELOW
        xs = np.where(small, x, 0.0)
        acc = np.zeros_like(xs)
        term = np.full_like(xs, 0.5)
        for k in range(16):  # x^k / (k+2)!; the 16th term is below 1e-17 relative at x = 1/2
            acc = acc + term
            term = term * xs / (k + 3)
        xl = np.where(small, 1.0, x)
        closed = (np.expm1(xl) - xl) / (xl * xl)
        out = np.where(small, acc, closed)
    return np.where(p == 0, np.inf, out)


def shiryaev_roberts(bet: np.ndarray, used: np.ndarray, r: float, rang: bool, arl: float,
                     rearm: bool):
    """R_t = (1 + R_{t-1}) bet_t on the used frames, alarm once R_t >= arl (then frozen, or with
    rearm restarted from 0 at the next used frame). From the state (r, rang) before the batch:
    per frame the statistic, the alarm, whether R was updated (stepped) and whether the alarm
    rang there; and the state after it."""
    t = len(bet)
    stat = np.empty(t)
    alarm = np.empty(t, bool)
    stepped = np.zeros(t, bool)
    rings = np.zeros(t, bool)
    for i in range(t):
        if used[i]:
            if rang and rearm:
                r, rang = 0.0, False
            if not rang:
                r = (1.0 + r) * bet[i]
                stepped[i] = True
                if r >= arl:
                    rang = rings[i] = True
        stat[i], alarm[i] = r, rang
    return stat, alarm, stepped, rings, float(r), bool(rang)
