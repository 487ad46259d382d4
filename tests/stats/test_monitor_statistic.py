"""The stream monitor's statistic against independent references: the betting function by
quadrature, q(n, delta) against reference sets drawn as sorted uniforms, validity by Monte
Carlo over exchangeable data, and the host monitor's behaviour and errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import binom

import edgeood
from edgeood.errors import EdgeoodError
from edgeood.stats import monitor as mon_mod
from edgeood.stats.monitor import (StreamMonitor, bet_quantile, largest_bet, power_mixture,
                                     reference_bets)


def _quad_f(p: float) -> float:
    """f(p) = integral_0^1 e p^(e-1) de by adaptive quadrature (the definition)."""
    val, _ = integrate.quad(lambda e: e * p ** (e - 1.0), 0.0, 1.0, epsabs=0.0, epsrel=1e-13,
                            limit=200)
    return val


P_POINTS = [1.0, 1 - 1e-12, 1 - 1e-7, 1 - 1e-4, 0.999, 0.99, 0.9, 0.7, math.exp(-0.5) + 1e-12,
            math.exp(-0.5) - 1e-12, 0.5, 0.3, 0.1, 0.05, 0.01, 1 / 217, 1e-3, 1 / 5001, 1e-6,
            1e-9]


@pytest.mark.parametrize("p", P_POINTS)
def test_betting_function_equals_the_e_integral(p):
    assert len(P_POINTS) == 20
    want = _quad_f(p)
    assert abs(float(power_mixture(p)) - want) <= 1e-9 * want, (p, float(power_mixture(p)), want)


def test_betting_function_integrates_to_one_and_decreases():
    assert float(power_mixture(1.0)) == 0.5 and np.isinf(power_mixture(0.0))
    # integral_0^1 f(p) dp with p = exp(-x): integral_0^X f(e^-x) e^-x dx + the tail beyond
    # X = 700, where f(e^-x) e^-x = (1 - e^-x (1 + x)) / x^2 = 1 / x^2 to double precision
    head, err = integrate.quad(lambda x: float(power_mixture(math.exp(-x))) * math.exp(-x),
                               0.0, 700.0, limit=500, epsabs=1e-12, points=[0.5, 5, 50])
    assert abs(head + 1.0 / 700.0 - 1.0) < 1e-9, (head, err)
    p = np.concatenate([np.logspace(-12, -1e-9, 20000), 1 - np.logspace(-1, -15, 5000),
                        math.exp(-0.5) + np.linspace(-1e-6, 1e-6, 2001)])
    p = np.unique(p)
    f = power_mixture(p)
    assert np.all(np.diff(f) <= 0), "f must be non-increasing"
    coarse = power_mixture(np.linspace(0.001, 1, 1000))
    assert np.all(np.diff(coarse) < 0)
    # the largest bet a conformal p-value earns (the figures)
    assert largest_bet(216) == pytest.approx(7.277, abs=1e-3)
    assert largest_bet(5000) == pytest.approx(68.8, abs=0.1)
    assert reference_bets(216)[0] == largest_bet(216) and reference_bets(216)[-1] == 0.5


def _spacings(rng, sets: int, n: int) -> np.ndarray:
    """Spacings of n sorted uniforms: D_k = U_(k+1) - U_(k), U_(0) = 0, U_(n+1) = 1."""
    u = np.sort(rng.random((sets, n)), axis=1)
    return np.diff(np.concatenate([np.zeros((sets, 1)), u, np.ones((sets, 1))], axis=1), axis=1)


def test_bet_quantile_against_reference_sets_of_uniforms():
    """For a few thousand reference sets, E[g(p) | reference] = sum_k g((k+1)/(n+1)) D_k
    (exact, from the spacings) exceeds 1 in at most a delta fraction (plus a binomial bound);
    and the Monte Carlo quantile is the quantile: at delta = 0.05 the fraction above q(n, 0.05)
    lies within the two-sided binomial 99.9% interval."""
    rng = np.random.default_rng(123)
    sets = 4000
    for n, delta in ((50, 0.001), (216, 0.01), (20, 0.002)):
        m = StreamMonitor(1000, n, delta=delta)
        q = bet_quantile(n, delta)
        assert m.bet_scale == max(1.0, q.q) and q.halfwidth <= 0.005 * q.q
        cond = _spacings(rng, sets, n) @ (reference_bets(n) / m.bet_scale)
        exceed = int((cond > 1).sum())
        assert exceed <= binom.ppf(0.999, sets, delta), (n, delta, exceed)
    n, delta = 100, 0.05
    q = bet_quantile(n, delta).q
    above = int((_spacings(rng, sets, n) @ reference_bets(n) > q).sum())
    assert binom.ppf(0.0005, sets, delta) <= above <= binom.ppf(0.9995, sets, delta), above
    # the measured values: the discrete grid already loses mass at delta = 0.01
    assert 0.955 <= bet_quantile(216, 0.01).q <= 0.975
    assert 1.02 <= bet_quantile(50, 0.001).q <= 1.08


def test_bet_quantile_chunks_draws_without_changing_them(monkeypatch):
    """Large n draws in chunks; the chunked stream of draws is the unchunked one."""
    whole = bet_quantile.__wrapped__(300, 0.01)
    monkeypatch.setattr(mon_mod, "CHUNK_VALUES", 301 * 777)
    chunked = bet_quantile.__wrapped__(300, 0.01)
    assert chunked == whole and chunked.draws > 777


def _conformal_streams(rng, streams: int, n: int, frames: int, scale: float = 1.0):
    """Exchangeable data: each stream's reference and frames come from one distribution;
    p = (1 + #{ref <= s}) / (n + 1), times scale."""
    ref = np.sort(rng.standard_normal((streams, n)), axis=1)
    s = rng.standard_normal((streams, frames))
    counts = np.stack([np.searchsorted(ref[i], s[i], side="right") for i in range(streams)])
    return scale * (1.0 + counts) / (n + 1.0)


def _first_alarms(monitor: StreamMonitor, pvalues: np.ndarray) -> np.ndarray:
    first = np.full(len(pvalues), np.inf)
    for i, p in enumerate(pvalues):
        monitor.reset()
        steps = monitor.update_batch(p)
        if steps.alarm.any():
            first[i] = int(np.argmax(steps.alarm)) + 1  # frames until the alarm
    return first


def test_validity_on_exchangeable_streams_and_the_test_can_fail():
    """P(alarm within m frames) <= m / A for every m (plus a binomial 99.9% bound over the
    streams); a stream whose p-values are halved (anti-conservative) breaks that bound."""
    rng = np.random.default_rng(7)
    streams, n, frames, arl = 1000, 200, 500, 1000.0
    monitor = StreamMonitor(arl, n)
    bound = lambda m: binom.ppf(0.999, streams, m / arl) / streams  # noqa: E731
    ok = _first_alarms(monitor, _conformal_streams(rng, streams, n, frames))
    for m in (50, 100, 200, 300, 500):
        assert (ok <= m).mean() <= bound(m), (m, (ok <= m).mean(), bound(m))
    bad = _first_alarms(monitor, _conformal_streams(rng, streams, n, frames, scale=0.5))
    assert (bad <= frames).mean() > bound(frames) + 0.25
    assert np.median(bad) < frames / 2


# --- host behaviour ----------------------------------------------------------------------------
def test_update_recursion_stride_latch_rearm_and_state_round_trip():
    m = edgeood.StreamMonitor(arl=50, n_reference=216)
    ps = [0.5, 0.2, 0.01, 1 / 217]  # R = 0.64, 1.51, 11.2, 88.7: the alarm rings at frame 3
    r = 0.0
    for p in ps:
        step = m.update(p)
        r = (1 + r) * float(power_mixture(p))
        assert step.statistic == pytest.approx(r, rel=1e-12) and step.used
    assert m.alarm and m.alarm_frame == 3 and m.statistic == pytest.approx(r)  # held after
    assert m.update(1.0).alarm and m.statistic == pytest.approx(r)
    m.reset()
    assert m.statistic == 0 and not m.alarm and m.frames == 0
    # stride: A counts sampled frames
    s = StreamMonitor(50, 216, stride=3)
    steps = s.update_batch(np.full(7, 0.3))
    assert steps.used.tolist() == [True, False, False, True, False, False, True]
    assert s.sampled == 3 and np.all(steps.statistic[1:3] == steps.statistic[0])
    # rearm: restart after each alarm
    ra = StreamMonitor(20, 216, rearm=True)
    out = ra.update_batch(np.full(12, 1 / 217))
    assert ra.alarms > 1 and out.rang.sum() == ra.alarms
    # a restart continues where the stream left off
    full = StreamMonitor(1e6, {"a": 216, "b": 100}, detector_id="X")
    rng = np.random.default_rng(0)
    seq = {"a": rng.random(40), "b": rng.random(40)}
    whole = full.update_batch(seq).statistic
    part = StreamMonitor(1e6, {"a": 216, "b": 100}, detector_id="X")
    part.update_batch({k: v[:25] for k, v in seq.items()})
    back = StreamMonitor.from_dict(json.loads(json.dumps(part.to_dict())))
    rest = back.update_batch({k: v[25:] for k, v in seq.items()}).statistic
    np.testing.assert_allclose(rest, whole[25:], rtol=1e-12)
    assert back.frames == 40 and back.bet_scale == full.bet_scale
    # several methods: the mean of their bets, each held to delta / 2
    assert full.delta_per_method == 0.005
    d = full.update({"a": 0.3, "b": 0.01, "c": 0.9})  # extra outputs are ignored
    assert d.bet == pytest.approx(float(power_mixture(0.3) + power_mixture(0.01)) / 2)


@pytest.mark.parametrize("call, needle", [
    (lambda: StreamMonitor(50, 216).update(1.5), "p-value 1.5 for the stream is outside the "
                                                 "allowed range [0, 1]"),
    (lambda: StreamMonitor(50, 216).update(-0.1), "p-value -0.1 "),
    (lambda: StreamMonitor(50, 216).update(float("nan")), "p-value NaN "),
    (lambda: StreamMonitor(50, 216).update_batch([0.2, np.nan]), "NaN for the stream (frame 1)"),
    (lambda: StreamMonitor(50, {"a": 216}).update({"b": 0.5}), "no p-value for method 'a'"),
    (lambda: StreamMonitor(50, {"a": 216}, methods=["ab"]), "unknown method 'ab'"),
    (lambda: StreamMonitor(1, 216), "arl 1 is outside the allowed range (1, inf)"),
    (lambda: StreamMonitor(-3, 216), "arl -3 is outside the allowed range (1, inf)"),
    (lambda: StreamMonitor(50, 216, delta=0), "delta 0 is outside the allowed range (0, 1)"),
    (lambda: StreamMonitor(50, 216, delta=1.2), "delta 1.2 is outside the allowed range (0, 1)"),
    (lambda: StreamMonitor(50, 216, stride=0), "stride 0 is outside the allowed range"),
    (lambda: StreamMonitor(50, 0), "n_reference 0 is outside the allowed range"),
    (lambda: StreamMonitor.from_dict({"kind": "x"}), "not a StreamMonitor state"),
])
def test_bad_input_is_one_line_naming_value_and_range(call, needle):
    with pytest.raises(EdgeoodError) as err:
        call()
    assert needle in str(err.value) and "\n" not in str(err.value)
