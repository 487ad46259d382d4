"""A stream-level shift alarm: a conformal test martingale over the per-frame p-values.

Pure NumPy. The monitor knows p-values only (any method's, by name), never a method's formula.

Why it works
------------
A detector emits per frame a conformal p-value p_t = (1 + #{ref <= s_t}) / (n + 1) against n
reference scores of ID calibration images. While the frames are ID (and independent of each
other and of the reference), p_t is super-uniform: P(p_t <= u) <= u. A betting function f >= 0
with integral_0^1 f(u) du = 1 then has E[f(p_t)] <= 1 (f is decreasing, so a super-uniform p
can only lower the expectation), i.e. f(p_t) is an e-value, and products of them are a test
martingale against "the stream is ID".

Betting function (`power_mixture`): the mixture over e in (0, 1) of the power calibrators
e p^(e - 1) (each integrates to 1 over (0, 1)):

    f(p) = integral_0^1 e p^(e-1) de.

With x = -ln p and p^(e-1) = exp((1 - e) x):  integral_0^1 e exp((1 - e) x) de
= (e^x - 1 - x) / x^2 = (1 - p + p ln p) / (p ln^2 p)   (integrate by parts twice).
Expanding exp((1 - e) x) = sum_k (1 - e)^k x^k / k! and integral_0^1 e (1 - e)^k de
= 1 / ((k + 1)(k + 2)) gives the series  f = sum_k x^k / (k + 2)!  = 1/2 + x/6 + x^2/24 + ...,
so f(1) = 1/2, every coefficient is positive (f increases in x, i.e. decreases in p), and the
series is the stable form near p = 1 where the closed form cancels (it is used for x < 1/2).
Fubini: integral_0^1 f(p) dp = integral_0^1 e integral_0^1 p^(e-1) dp de = integral_0^1 1 de
= 1. The largest bet a conformal p-value can earn is f(1/(n+1)) = (n - ln(n+1)) / ln^2(n+1):
7.3 at n = 216, 20.8 at n = 1000, 69 at n = 5000.

Change detection (Shiryaev-Roberts): R_0 = 0, R_t = (1 + R_{t-1}) g(p_t), alarm when R_t >= A.
If E[g(p_t) | past] <= 1 then E[R_t - t | past] = (1 + R_{t-1}) E[g] - t <= R_{t-1} - (t - 1):
R_t - t is a supermartingale, so by optional stopping the mean time to the first false alarm
T satisfies E[R_T] - E[T] <= 0, hence E[T] >= A. For a horizon m, R_t - t + m (t <= m) is a
non-negative supermartingale starting at m, and R_t >= A implies R_t - t + m >= A, so Ville's
inequality gives P(an alarm within m frames) <= m / A for every m.

Calibration-conditional validity (`bet_quantile`): every frame is compared with the same n
reference scores, so given that set the p-values are not exactly uniform. Given the reference,
p = (k + 1) / (n + 1) exactly when the frame's score falls between the k-th and (k+1)-th
reference score, which happens with probability D_k = F(r_(k+1)) - F(r_(k)); D = (D_0..D_n),
the spacings of n uniform order statistics, is Dirichlet(1, ..., 1) whatever the continuous
score distribution F. So E[f(p) | reference] = sum_k f((k + 1)/(n + 1)) D_k, a random variable
whose law depends on n alone. q(n, delta) is its (1 - delta) quantile, estimated once by seeded
Monte Carlo (D = E / sum E with E_k i.i.d. exponential; draws are added until the 99% confidence
interval of the quantile is within 0.5% of it, in chunks when n is in the thousands), and the bet
is g = f / max(1, q): with probability >= 1 - delta over the calibration draw,
E[g(p) | reference] <= 1, so the guarantees above hold given the stored reference. Never betting
more than f keeps them for any super-uniform p-value fed by hand. Measured: q(216, 0.01) = 0.964,
q(5000, 0.01) = 0.953 (the discrete p-value grid already loses mass: at delta = 0.01 the bet is
f itself), q is about 1.05 at delta = 0.001 for n from 20 to 100. (Shifting p by a DKW epsilon
instead would cut the largest bet at n = 216 from 7.3 to 1.2.)

Several methods: the bet is the mean of the methods' bets (a mean of e-values is an e-value);
each method is held to delta / (number of methods) (a union bound over the methods' reference
sets), and one common scale, the largest max(1, q) of them, keeps every bet at most f.

Dependence between frames: the guarantee needs independent frames, and consecutive video frames
are not (a still scene repeats one p-value, and one low p-value repeated 10 times multiplies R
by up to 7.3^10). `stride` (use every k-th frame) is the lever; A counts sampled frames, so the
mean time to a false alarm is at least A * stride frames. benchmarks/stream_monitor.py measures
it on a still scene (each ID image repeated 10 times).

After an alarm the statistic is frozen and the alarm is reported until reset(); with
rearm=True the statistic restarts from 0 at the next sampled frame instead (each alarm is then
counted in `alarms`). The graph folded with `--stream-monitor` computes the same update
(edgeood/graph/monitor.py), frozen after an alarm; a stream restarts there from state 0.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgeood.artifact.names import MONITOR_STATE, MONITOR_STATE_OUT, STREAM_ALARM
from edgeood.errors import EdgeoodError, did_you_mean
from edgeood.stats.betting import SERIES_BELOW, power_mixture, shiryaev_roberts  # noqa: F401

if TYPE_CHECKING:  # the monitor itself needs NumPy only (it also runs inside a Triton model)
    from edgeood.artifact.metadata import DetectorMetadata

DEFAULT_ARL = 10000.0
DEFAULT_DELTA = 0.01
DEFAULT_STRIDE = 1
QUANTILE_RTOL = 0.005         # Monte Carlo: 99% interval of q within 0.5% of q
QUANTILE_FIRST_DRAWS = 20000
QUANTILE_MAX_DRAWS = 1_280_000
CHUNK_VALUES = 2_000_000      # exponentials drawn at once (chunks of draws for large n)
SMALL_REFERENCE = 1000        # below this many reference scores the monitor advises more
STATE_KIND = "edgeood.StreamMonitor"
STATE_VERSION = 1


# --- the betting function: power_mixture (edgeood/stats/betting.py) ------------------------------
def largest_bet(n: int) -> float:
    """f(1/(n+1)): the most one frame's p-value against n reference scores can earn."""
    return float(power_mixture(1.0 / (n + 1)))


def reference_bets(n: int) -> np.ndarray:
    """f((k+1)/(n+1)) for k = 0..n: the bets on the conformal p-value grid (float64)."""
    return power_mixture(np.arange(1, n + 2, dtype=np.float64) / (n + 1))


def conditional_mean(n: int, spacings: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """E[f(p) / scale | reference] = sum_k f((k+1)/(n+1)) D_k / scale for spacings D
    (... x (n+1), each row summing to 1)."""
    return np.asarray(spacings, np.float64) @ reference_bets(n) / scale


@dataclass(frozen=True)
class Quantile:
    """q(n, delta): the (1 - delta) quantile of E[f(p) | reference], by seeded Monte Carlo."""

    n: int
    delta: float
    q: float
    halfwidth: float   # half the 99% confidence interval of the estimate
    draws: int
    seed: int


@functools.lru_cache(maxsize=64)
def bet_quantile(n: int, delta: float, seed: int = 0, rtol: float = QUANTILE_RTOL) -> Quantile:
    """q(n, delta) by Monte Carlo over D ~ Dirichlet(1, ..., 1) (n + 1 spacings, drawn as
    normalised exponentials, in chunks of at most CHUNK_VALUES values): draws are doubled from
    20000 until the distribution-free 99% interval of the quantile (order statistics
    k -+ 2.576 sqrt(M delta (1 - delta)) around k = M (1 - delta)) is within rtol of it."""
    n, delta = int(n), float(delta)
    check_reference(n)
    check_delta(delta)
    w = reference_bets(n)
    rng = np.random.default_rng([seed, n])
    chunk = max(1, CHUNK_VALUES // (n + 1))
    parts: list[np.ndarray] = []
    drawn, target = 0, QUANTILE_FIRST_DRAWS
    while True:
        while drawn < target:
            m = min(chunk, target - drawn)
            e = rng.standard_exponential((m, n + 1))
            parts.append(e @ w / e.sum(axis=1))
            drawn += m
        v = np.sort(np.concatenate(parts))
        q = float(np.quantile(v, 1.0 - delta))
        spread = 2.576 * math.sqrt(drawn * delta * (1.0 - delta))
        lo = v[max(0, int(math.floor(drawn * (1.0 - delta) - spread)))]
        hi = v[min(drawn - 1, int(math.ceil(drawn * (1.0 - delta) + spread)))]
        half = float(hi - lo) / 2.0
        if half <= rtol * q or drawn >= QUANTILE_MAX_DRAWS:
            return Quantile(n, delta, q, half, drawn, seed)
        target = 2 * drawn


# --- argument checks (one line, naming the value and the allowed range) -------------------------
def check_arl(arl, prefix: str = "") -> float:
    try:
        a = float(arl)
    except (TypeError, ValueError):
        a = float("nan")
    if not a > 1 or math.isnan(a):
        raise EdgeoodError(f"{prefix}arl {arl!r} is outside the allowed range (1, inf): it is the "
                           "mean number of sampled frames between false alarms, e.g. 10000")
    return a


def check_delta(delta, prefix: str = "") -> float:
    try:
        d = float(delta)
    except (TypeError, ValueError):
        d = float("nan")
    if not 0 < d < 1:
        raise EdgeoodError(f"{prefix}delta {delta!r} is outside the allowed range (0, 1): it is "
                           "the chance that the reference set breaks the guarantee, e.g. 0.01")
    return d


def check_stride(stride, prefix: str = "") -> int:
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        if isinstance(stride, float) and stride.is_integer() and stride >= 1:
            return int(stride)
        raise EdgeoodError(f"{prefix}stride {stride!r} is outside the allowed range: an integer "
                           ">= 1 (use every stride-th frame), e.g. 1 or 10")
    return int(stride)


def check_reference(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise EdgeoodError(f"n_reference {n!r} is outside the allowed range: the number of "
                           "reference scores behind the p-values, an integer >= 1")
    return int(n)


def _check_p(p: np.ndarray, where: str) -> np.ndarray:
    bad = ~((p >= 0) & (p <= 1))  # NaN fails both
    if bad.any():
        i = int(np.argmax(bad.ravel()))
        v = p.ravel()[i]
        what = "NaN" if np.isnan(v) else repr(float(v))
        at = f" (frame {i})" if p.size > 1 else ""
        raise EdgeoodError(f"p-value {what} for {where}{at} is outside the allowed range [0, 1]; "
                           "pass the detector's pvalue_<method> outputs")
    return p


# --- the monitor ---------------------------------------------------------------------------------
@dataclass
class MonitorStep:
    """One frame: R_t, whether the alarm is on (it rang on this frame or before, until
    reset), whether it rang on this frame, whether the frame was sampled (stride), its bet
    g(p_t) (nan when skipped) and its index."""

    frame: int
    statistic: float
    alarm: bool
    used: bool
    bet: float
    rang: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, "statistic": self.statistic, "alarm": self.alarm,
                "rang": self.rang, "used": self.used,
                "bet": None if math.isnan(self.bet) else self.bet}


@dataclass
class MonitorSteps:
    """update_batch's result: one entry per frame, in order."""

    frame: np.ndarray
    statistic: np.ndarray
    alarm: np.ndarray
    used: np.ndarray
    bet: np.ndarray
    rang: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i) -> MonitorStep:
        return MonitorStep(int(self.frame[i]), float(self.statistic[i]), bool(self.alarm[i]),
                           bool(self.used[i]), float(self.bet[i]), bool(self.rang[i]))


class StreamMonitor:
    """Shiryaev-Roberts change detector over conformal p-values (see the module docstring).

    arl: A, the alarm level; the mean time to a false alarm is at least A sampled frames and
    P(alarm within m sampled frames) <= m / A while the stream is ID and its frames independent.
    n_reference: the number of reference scores behind the p-values (an int, or a dict by method).
    delta: the chance that the reference set itself breaks the guarantee (default 0.01).
    stride: use every stride-th frame (the lever against correlated frames).
    methods: the p-value names the monitor bets on (their bets are averaged); None: one
    anonymous p-value per frame (or the single key of a dict).
    rearm: restart from 0 after an alarm instead of holding it until reset().
    bet_scale: max(1, q) when already known (from the metadata), skipping the Monte Carlo.
    """

    def __init__(self, arl: float, n_reference, delta: float = DEFAULT_DELTA,
                 stride: int = DEFAULT_STRIDE, methods=None, rearm: bool = False,
                 bet_scale: float | None = None, detector_id: str | None = None, seed: int = 0,
                 quantiles: Mapping[str, float] | None = None):
        self.arl = check_arl(arl)
        self.delta = check_delta(delta)
        self.stride = check_stride(stride)
        if isinstance(methods, str):
            methods = [methods]
        if isinstance(n_reference, Mapping):
            refs = {str(k): check_reference(v) for k, v in n_reference.items()}
            if methods is None:
                methods = list(refs)
            for m in methods:
                if m not in refs:
                    raise EdgeoodError(f"unknown method {m!r}: the monitor has p-values of "
                                       f"{', '.join(refs)}{did_you_mean(m, refs)}")
            refs = {m: refs[m] for m in methods}
        else:
            n = check_reference(n_reference)
            refs = {m: n for m in (methods or [None])}
        if not refs:
            raise EdgeoodError("methods is empty: name at least one method whose p-values the "
                               "monitor bets on")
        self.methods: list[str] | None = None if list(refs) == [None] else list(refs)
        self.n_reference: dict = refs
        self.rearm, self.seed, self.detector_id = bool(rearm), int(seed), detector_id
        self.delta_per_method = self.delta / len(refs)
        if bet_scale is None:
            found = {m: bet_quantile(n, self.delta_per_method, self.seed) for m, n in refs.items()}
            self.quantiles = {m: qe.q for m, qe in found.items()}
            self.quantile_draws = {m: qe.draws for m, qe in found.items()}
            bet_scale = max(1.0, *self.quantiles.values())
        else:
            self.quantiles = dict(quantiles or {})
            self.quantile_draws = {}
        if not float(bet_scale) >= 1:
            raise EdgeoodError(f"bet_scale {bet_scale!r} is outside the allowed range [1, inf)")
        self.bet_scale = float(bet_scale)
        self._tables = {m: reference_bets(n) for m, n in refs.items()}
        self.reset()

    # --- construction from a detector --------------------------------------------------------
    @classmethod
    def from_detector(cls, detector, arl: float | None = None, delta: float | None = None,
                      stride: int | None = None, methods=None, rearm: bool = False):
        """The monitor of a detector (a Detector, a path or its metadata dict): n per method
        from the metadata's reference sizes, defaults (methods, A, delta, stride) from its
        "monitor" entry; arguments given here override them."""
        meta = _metadata_of(detector)
        saved = meta.monitor or {}
        have = meta.reference_sizes
        if not have:
            raise EdgeoodError("the detector has no p-value reference (not calibrated); run "
                               "'edgeood calibrate DETECTOR --data ID_DIR' first")
        if isinstance(methods, str):
            methods = [s.strip() for s in methods.split(",") if s.strip()]
        if methods in (["all"], "all"):
            methods = list(have)
        chosen = list(methods or saved.get("methods") or [meta.primary])
        for m in chosen:
            if m not in have:
                raise EdgeoodError(f"unknown method {m!r}: the detector has p-values of "
                                   f"{', '.join(have)}{did_you_mean(m, have)}")
        delta = saved.get("delta", DEFAULT_DELTA) if delta is None else delta
        refs = {m: have[m] for m in chosen}
        scale = quantiles = None
        if saved.get("bet_scale") and saved.get("n_reference") == refs \
                and float(saved.get("delta", -1)) == float(delta):
            scale, quantiles = saved["bet_scale"], saved.get("q")
        return cls(saved.get("arl", DEFAULT_ARL) if arl is None else arl, refs, delta,
                   saved.get("stride", DEFAULT_STRIDE) if stride is None else stride, chosen,
                   rearm, bet_scale=scale, detector_id=saved.get("detector_id"),
                   seed=saved.get("seed", 0), quantiles=quantiles)

    # --- the update -----------------------------------------------------------------------------
    def reset(self) -> None:
        """A fresh stream: R = 0, no alarm, frame counter (and stride phase) at 0."""
        self.statistic = 0.0
        self.alarm = False
        self.alarm_frame: int | None = None
        self.alarms = 0
        self.frames = 0
        self.sampled = 0
        self.max_statistic = 0.0

    def bets(self, pvalues) -> np.ndarray:
        """g(p) per frame for p-values in the update's forms (a float, an array of frames, or a
        dict of them by method): the mean over the methods of f(p_m) / bet_scale."""
        ps = self._pvalue_matrix(pvalues)
        return power_mixture(ps).mean(axis=0) / self.bet_scale

    def update(self, p) -> MonitorStep:
        """One frame: a p-value (float) or a dict of p-values by method."""
        if isinstance(p, Mapping):
            p = {k: np.asarray(v, np.float64).reshape(-1) for k, v in p.items()}
            self._check_single(p)
        elif np.ndim(p) != 0:
            raise EdgeoodError(f"update takes one frame's p-value (a float or a dict by method), "
                               f"got an array of shape {np.shape(p)}; use update_batch for frames")
        steps = self.update_batch(p if isinstance(p, Mapping) else np.asarray([p], np.float64))
        return steps[0]

    def update_batch(self, pvalues) -> MonitorSteps:
        """Frames in order: an array of p-values, a dict of arrays by method, or a Detection
        (its .pvalues). Returns per-frame statistic, alarm, used and bet arrays."""
        if hasattr(pvalues, "pvalues") and not isinstance(pvalues, Mapping):
            pvalues = pvalues.pvalues
        ps = self._pvalue_matrix(pvalues)
        t = ps.shape[1]
        frame = self.frames + np.arange(t)
        used = frame % self.stride == 0
        bet = np.full(t, np.nan)
        if used.any():
            bet[used] = power_mixture(ps[:, used]).mean(axis=0) / self.bet_scale
        stat, alarm, stepped, rings, self.statistic, self.alarm = shiryaev_roberts(
            bet, used, self.statistic, self.alarm, self.arl, self.rearm)
        self.sampled += int(stepped.sum())
        self.alarms += int(rings.sum())
        if self.alarm_frame is None and rings.any():
            self.alarm_frame = int(frame[np.argmax(rings)])
        if stepped.any():
            self.max_statistic = max(self.max_statistic, float(stat[stepped].max()))
        self.frames += t
        return MonitorSteps(frame, stat, alarm, used, bet, rings)

    def _check_single(self, p: Mapping) -> None:
        for k, v in p.items():
            if len(v) != 1:
                raise EdgeoodError(f"update takes one frame; the p-values of {k} hold {len(v)} "
                                   "values: use update_batch for several frames")

    def _pvalue_matrix(self, pvalues) -> np.ndarray:
        """methods x frames float64, validated."""
        if isinstance(pvalues, Mapping):
            if self.methods is None:
                if len(pvalues) != 1:
                    raise EdgeoodError(f"this monitor bets on one p-value per frame but got "
                                       f"{len(pvalues)} ({', '.join(map(str, pvalues))}); build "
                                       "it with methods=[...] to combine several")
                rows = [np.asarray(next(iter(pvalues.values())), np.float64).reshape(-1)]
                names = [str(next(iter(pvalues)))]
            else:
                for m in self.methods:
                    if m not in pvalues:
                        raise EdgeoodError(f"no p-value for method {m!r}: the monitor bets on "
                                           f"{', '.join(self.methods)} and got "
                                           f"{', '.join(map(str, pvalues)) or 'none'}")
                rows = [np.asarray(pvalues[m], np.float64).reshape(-1) for m in self.methods]
                names = self.methods
            if len({len(r) for r in rows}) > 1:
                raise EdgeoodError("the methods' p-value arrays differ in length: pass the same "
                                   "frames for every method")
        else:
            if self.methods is not None and len(self.methods) > 1:
                raise EdgeoodError(f"this monitor combines {', '.join(self.methods)}: pass a dict "
                                   "of p-values by method")
            rows = [np.asarray(pvalues, np.float64).reshape(-1)]
            names = self.methods or ["the stream"]
        for r, name in zip(rows, names):
            _check_p(r, str(name))
        return np.stack(rows)

    # --- what the monitor promises -------------------------------------------------------------
    def mean_time_to_false_alarm(self, fps: float | None = None) -> float:
        """At least A * stride frames (seconds when fps is given)."""
        frames = self.arl * self.stride
        return frames / fps if fps else frames

    @property
    def largest_bet(self) -> float:
        return max(largest_bet(n) for n in self.n_reference.values()) / self.bet_scale

    @property
    def advice(self) -> str | None:
        """What a bigger reference set would give, when n is small (None otherwise)."""
        n = min(self.n_reference.values())
        if n >= SMALL_REFERENCE:
            return None
        return (f"the reference holds {n} ID scores, so one frame multiplies the statistic by at "
                f"most {largest_bet(n) / self.bet_scale:.1f}; calibrating on {SMALL_REFERENCE} ID "
                f"images would raise that to {largest_bet(SMALL_REFERENCE):.1f} (5000: "
                f"{largest_bet(5000):.0f}) and shorten the delay to an alarm")

    def describe(self) -> dict[str, Any]:
        """The monitor's defaults and derived values for the detector's metadata."""
        return {"methods": self.methods, "arl": self.arl, "delta": self.delta,
                "stride": self.stride, "n_reference": self._n_shown(),
                "delta_per_method": self.delta_per_method, "q": self.quantiles,
                "quantile_draws": self.quantile_draws, "bet_scale": self.bet_scale,
                "largest_bet": self.largest_bet, "seed": self.seed,
                "detector_id": self.detector_id, "advice": self.advice}

    # --- state across restarts -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Configuration and state as JSON-ready values (restore with from_dict)."""
        return {"kind": STATE_KIND, "version": STATE_VERSION, "detector_id": self.detector_id,
                "config": {"arl": self.arl, "delta": self.delta, "stride": self.stride,
                           "methods": self.methods,
                           "n_reference": None if self.methods is None else self.n_reference,
                           "n": None if self.methods is not None else self.n_reference[None],
                           "bet_scale": self.bet_scale, "rearm": self.rearm, "seed": self.seed,
                           "q": self.quantiles},
                "state": {"statistic": self.statistic, "alarm": self.alarm,
                          "alarm_frame": self.alarm_frame, "alarms": self.alarms,
                          "frames": self.frames, "sampled": self.sampled,
                          "max_statistic": self.max_statistic}}

    @classmethod
    def from_dict(cls, data: Mapping, detector=None) -> "StreamMonitor":
        """A monitor restored from to_dict(); with detector (a Detector, path or metadata), a
        state saved for another detector (model or calibration) is refused."""
        if not isinstance(data, Mapping) or data.get("kind") != STATE_KIND:
            raise EdgeoodError("not a StreamMonitor state (no 'kind': 'edgeood.StreamMonitor'); "
                               "pass what StreamMonitor.to_dict() wrote")
        if data.get("version") != STATE_VERSION:
            raise EdgeoodError(f"StreamMonitor state version {data.get('version')!r}; this edgeood "
                               f"reads version {STATE_VERSION}: start a fresh monitor")
        c = data["config"]
        if detector is not None:
            expected = detector_id_of(_metadata_of(detector))
            if data.get("detector_id") != expected:
                raise EdgeoodError(f"this monitor state belongs to detector "
                                   f"{data.get('detector_id')}, not to this one ({expected}: "
                                   "another model or calibration); start a fresh monitor")
        refs = c["n_reference"] if c.get("methods") is not None else c["n"]
        mon = cls(c["arl"], refs, c["delta"], c["stride"], c.get("methods"), c.get("rearm", False),
                  bet_scale=c["bet_scale"], detector_id=data.get("detector_id"),
                  seed=c.get("seed", 0), quantiles=c.get("q"))
        s = data["state"]
        mon.statistic, mon.alarm = float(s["statistic"]), bool(s["alarm"])
        mon.alarm_frame, mon.alarms = s.get("alarm_frame"), int(s.get("alarms", 0))
        mon.frames, mon.sampled = int(s["frames"]), int(s.get("sampled", 0))
        mon.max_statistic = float(s.get("max_statistic", mon.statistic))
        return mon

    def _n_shown(self):
        return self.n_reference if self.methods is not None else self.n_reference[None]

    def __repr__(self) -> str:
        return (f"StreamMonitor(arl={self.arl:g}, n_reference={self._n_shown()}, "
                f"delta={self.delta:g}, stride={self.stride}, statistic={self.statistic:.4g}, "
                f"alarm={self.alarm})")


# --- metadata helpers ---------------------------------------------------------------------------
def _metadata_of(detector) -> DetectorMetadata:
    """The typed metadata of a Detector, a metadata dict or a detector path."""
    from edgeood.artifact.metadata import DetectorMetadata
    if isinstance(detector, DetectorMetadata):
        return detector
    if isinstance(detector, Mapping):
        return DetectorMetadata.from_dict(dict(detector))
    if hasattr(detector, "metadata"):
        return DetectorMetadata.from_dict(detector.metadata)
    from edgeood.artifact.metadata import read_typed
    return read_typed(detector)


def detector_id_of(meta: Mapping | DetectorMetadata) -> str:
    """What a monitor state belongs to: the source model, the calibration and the references."""
    typed = _metadata_of(meta)
    stored = (typed.monitor or {}).get("detector_id")
    if stored:
        return stored
    return compute_detector_id(typed.to_dict())


def compute_detector_id(meta: Mapping) -> str:
    cal = meta.get("calibration") or {}
    key = {"source": (meta.get("source") or {}).get("sha256"), "calibration": cal.get("hash"),
           "seed": cal.get("seed"),
           "references": {m: d.get("reference_size") for m, d in meta["methods"].items()}}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def state_io(batch_dim) -> dict[str, Any]:
    """The folded monitor's state tensors, for serving generators (Triton's sequence batcher
    with an implicit state, DeepStream): names, shapes, dtypes and the initial value."""
    return {"input": {"name": MONITOR_STATE, "shape": [batch_dim, 1], "dtype": "float32"},
            "output": {"name": MONITOR_STATE_OUT, "shape": [batch_dim, 1], "dtype": "float32"},
            "alarm": {"name": STREAM_ALARM, "shape": [batch_dim], "dtype": "bool"},
            "initial_value": 0.0, "one_stream_per_batch_slot": True,
            "reset": "start a stream from state 0 (Triton: the sequence START flag)"}


def human_duration(seconds: float) -> str:
    """'45 s', '5.6 min', '2.8 h', '3.5 days'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
