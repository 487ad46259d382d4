"""Per-stream conformal test martingales for a served detector, NumPy only.

`edgeood deploy triton --backend python` copies this file next to the generated model.py, with
edgeood/stats/betting.py beside it, so the server's Python needs NumPy (1.x or 2.x) but not
edgeood. Per correlation id it keeps what edgeood.stats.monitor.StreamMonitor keeps for one
stream (float64, host-side) and runs the same arithmetic (betting.py: the Shiryaev-Roberts
statistic R_t = (1 + R_{t-1}) g(p_t), g the mean over the methods of power_mixture(p) /
bet_scale, every stride-th frame, alarm when R_t >= arl, frozen after an alarm or restarted from
0 with rearm). The configuration (methods, arl, stride, bet_scale) is the one StreamMonitor
computes for the detector, written into the model folder at deploy time; tests compare the
statistic and alarms bit for bit with StreamMonitor run offline.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np



def _betting():
    """edgeood/stats/betting.py: the copy beside this file in a served model folder (edgeood
    is not installed there), else the package's own."""
    here = Path(__file__).resolve()
    path = here.with_name("betting.py")
    if not path.is_file():
        path = here.parents[1] / "stats" / "betting.py"
    spec = importlib.util.spec_from_file_location("edgeood_served_betting", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BETTING = _betting()
power_mixture = _BETTING.power_mixture


class _Stream:
    __slots__ = ("statistic", "alarm", "frames", "seen")

    def __init__(self, now: float):
        self.statistic, self.alarm, self.frames, self.seen = 0.0, False, 0, now


class Streams:
    """One monitor state per stream id. config: {"methods": [...], "arl", "stride",
    "bet_scale", "rearm"} (StreamMonitor's); idle_s: a stream not seen for this long is freed
    (sweep)."""

    def __init__(self, config: dict, idle_s: float):
        self.methods = list(config["methods"])
        self.arl = float(config["arl"])
        self.stride = int(config.get("stride", 1))
        self.bet_scale = float(config["bet_scale"])
        self.rearm = bool(config.get("rearm", False))
        self.idle_s = float(idle_s)
        self.live: dict = {}

    def __len__(self) -> int:
        return len(self.live)

    def start(self, key, now: float | None = None) -> None:
        """A stream (re)starts from R = 0 (the sequence START flag)."""
        self.live[key] = _Stream(time.monotonic() if now is None else now)

    def end(self, key) -> bool:
        """The stream ended (the sequence END flag): its state is freed."""
        return self.live.pop(key, None) is not None

    def sweep(self, now: float | None = None) -> list:
        """Free the streams idle for longer than idle_s; returns their ids."""
        now = time.monotonic() if now is None else now
        gone = [k for k, s in self.live.items() if now - s.seen > self.idle_s]
        for k in gone:
            del self.live[k]
        return gone

    def update(self, key, pvalues: dict, now: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The stream's next frames in order: p-values by method (arrays of equal length).
        Returns (statistic float64, alarm bool) per frame; an unknown stream starts at 0."""
        now = time.monotonic() if now is None else now
        s = self.live.get(key)
        if s is None:
            s = self.live[key] = _Stream(now)
        s.seen = now
        ps = np.stack([np.asarray(pvalues[m], np.float64).reshape(-1) for m in self.methods])
        t = ps.shape[1]
        frame = s.frames + np.arange(t)
        used = frame % self.stride == 0
        bet = np.full(t, np.nan)
        if used.any():
            bet[used] = power_mixture(ps[:, used]).mean(axis=0) / self.bet_scale
        stat, alarm, _, _, s.statistic, s.alarm = _BETTING.shiryaev_roberts(
            bet, used, s.statistic, s.alarm, self.arl, self.rearm)
        s.frames += t
        return stat, alarm
