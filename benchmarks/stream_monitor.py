"""The stream-level shift alarm (edgeood.StreamMonitor) on the digits demo detector.

For each method and for the combined monitor (the mean of all the methods' bets), at A = 1000
and A = 10000:
  - the fraction of ID streams with a false alarm within 1000 frames (frames drawn at random
    from the 217 ID test images: independent by construction);
  - the median and 90th-percentile delay (OOD frames seen when the alarm rings) after a switch
    to near-OOD (digits 6-9) and far-OOD (photo patches, noise), after 150 ID frames;
  - on a correlated stream (each ID image repeated 10 times, a still scene at 30 fps) the
    false-alarm fraction within 1000 frames at stride 1 and at stride 10.
The p-values come from the detector graph; the Shiryaev-Roberts recursion is run vectorised over
the streams with StreamMonitor's bets, and checked against StreamMonitor.update_batch itself on
a few streams. Also writes a plot of R_t over one stream with the switch and the alarm.

    python benchmarks/stream_monitor.py [--streams 2000] [--out benchmarks/results/stream_monitor.json]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import edgeood
from common import save_result  # noqa: E402 (benchmarks/common.py)
from edgeood.stats.monitor import StreamMonitor
from edgeood.runtime.onnxruntime.backend import OrtBackend
from edgeood.zoo import digits

METHODS = ["energy", "msp", "maxlogit", "react", "scale", "featurenorm"]
ARLS = [1000, 10000]
ID_FRAMES_BEFORE = 150
HORIZON = 1000         # frames per ID stream; OOD frames after the switch at most
REPEAT = 10            # the still scene: each ID image 10 times


def sr_first_alarm(bets: np.ndarray, arl: float) -> np.ndarray:
    """Index of the first frame with R_t >= A per stream (rows), -1 when none; bets may be NaN
    for frames a stride skips."""
    r = np.zeros(len(bets))
    first = np.full(len(bets), -1)
    for t in range(bets.shape[1]):
        b = bets[:, t]
        live = (first < 0) & ~np.isnan(b)
        r[live] = (1.0 + r[live]) * b[live]
        newly = live & (r >= arl)
        first[newly] = t
    return first


def percentile(v: np.ndarray, q: float) -> float | None:
    return float(np.percentile(v, q)) if len(v) else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/stream_monitor.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = digits.load_data(seed=0)
    model = digits.model_path(seed=0, data=data)
    with tempfile.TemporaryDirectory() as tmp:
        res = edgeood.export(model, data=data.val[0], methods=METHODS, recipe="digits_cnn",
                             out=Path(tmp) / "digits.onnx")
        backend = OrtBackend(res.path)
        sets = {"id": data.test[0], "near": data.near, "far": data.far}
        pv = {k: {m: backend.run(digits.PREPROCESS.normalize(v))[f"pvalue_{m}"].astype(np.float64)
                  for m in METHODS} for k, v in sets.items()}
    monitors = {m: [m] for m in METHODS}
    monitors["combined"] = list(METHODS)
    rng = np.random.default_rng(args.seed)
    s = args.streams
    n_id = len(pv["id"]["energy"])
    # the same frames for every monitor: ID streams, switch streams, the still scene
    id_idx = rng.integers(0, n_id, (s, HORIZON))
    pre_idx = rng.integers(0, n_id, (s, ID_FRAMES_BEFORE))
    ood_idx = {k: rng.integers(0, len(pv[k]["energy"]), (s, HORIZON)) for k in ("near", "far")}
    still_idx = np.repeat(rng.integers(0, n_id, (s, HORIZON // REPEAT)), REPEAT, axis=1)
    results = {"detector": {"methods": METHODS, "reference_size": res.metadata["methods"][
        "energy"]["reference_size"], "model": "shipped digits CNN"},
        "streams": s, "id_frames_before_switch": ID_FRAMES_BEFORE, "horizon": HORIZON,
        "repeat": REPEAT, "monitors": {}}
    plot_stream = None
    for name, methods in monitors.items():
        entry = {"methods": methods}
        for arl in ARLS:
            mon = StreamMonitor.from_detector(res.metadata, arl=arl, methods=methods)
            bet = {k: mon.bets({m: pv[k][m] for m in methods}) for k in pv}
            row = {"bet_scale": mon.bet_scale, "largest_bet": mon.largest_bet}
            first = sr_first_alarm(bet["id"][id_idx], arl)
            row["id_false_alarm_1000"] = float((first >= 0).mean())
            for k in ("near", "far"):
                seq = np.concatenate([bet["id"][pre_idx], bet[k][ood_idx[k]]], axis=1)
                first = sr_first_alarm(seq, arl)
                early = (first >= 0) & (first < ID_FRAMES_BEFORE)
                delay = first[first >= ID_FRAMES_BEFORE] - ID_FRAMES_BEFORE + 1
                row[k] = {"alarm_before_switch": float(early.mean()),
                          "detected": float((first >= ID_FRAMES_BEFORE).mean()),
                          "median_delay": percentile(delay, 50), "p90_delay": percentile(delay, 90)}
            still = bet["id"][still_idx]
            for stride in (1, REPEAT):
                b = still.copy()
                b[:, np.arange(HORIZON) % stride != 0] = np.nan
                row[f"still_false_alarm_stride{stride}"] = float(
                    (sr_first_alarm(b, arl) >= 0).mean())
            # the vectorised recursion is StreamMonitor's own on a few streams
            for i in range(3):
                mon.reset()
                own = mon.update_batch({m: pv["near"][m][ood_idx["near"][i]] for m in methods})
                want = sr_first_alarm(bet["near"][ood_idx["near"][i]][None], arl)[0]
                got = int(np.argmax(own.alarm)) if own.alarm.any() else -1
                assert got == want, (name, arl, got, want)
            entry[str(arl)] = row
            if name == "energy" and arl == ARLS[0]:
                mon.reset()
                seq = {m: np.concatenate([pv["id"][m][pre_idx[0]], pv["near"][m][ood_idx["near"][0]]])
                       for m in methods}
                steps = mon.update_batch(seq)
                plot_stream = (steps.statistic[:ID_FRAMES_BEFORE + 60], arl, mon.alarm_frame)
        results["monitors"][name] = entry
        print(f"{name:12s} " + "  ".join(
            f"A={a}: ID FA {entry[str(a)]['id_false_alarm_1000']:.3f}, near "
            f"{entry[str(a)]['near']['median_delay']}/{entry[str(a)]['near']['p90_delay']}, far "
            f"{entry[str(a)]['far']['median_delay']}/{entry[str(a)]['far']['p90_delay']}, still "
            f"{entry[str(a)]['still_false_alarm_stride1']:.3f}/"
            f"{entry[str(a)]['still_false_alarm_stride10']:.3f}" for a in ARLS), flush=True)
    results["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_result(out, results)
    print(f"wrote {out}")
    print(markdown(results))
    plot(plot_stream, out.with_suffix(".png"))


def markdown(results: dict) -> str:
    """The stream-alarm table (the docs render it from the JSON): one row per monitor and A."""
    head = ["monitor", "A", "ID false alarms in 1000 frames", "near delay median / p90",
            "far delay median / p90", f"still scene (x{REPEAT}): stride 1", f"stride {REPEAT}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
    for name, entry in results["monitors"].items():
        for a in ARLS:
            r = entry[str(a)]
            lines.append("| " + " | ".join([
                name, str(a), f"{100 * r['id_false_alarm_1000']:.1f}%",
                f"{fmt(r['near']['median_delay'])} / {fmt(r['near']['p90_delay'])}",
                f"{fmt(r['far']['median_delay'])} / {fmt(r['far']['p90_delay'])}",
                f"{100 * r['still_false_alarm_stride1']:.1f}%",
                f"{100 * r[f'still_false_alarm_stride{REPEAT}']:.1f}%"]) + " |")
    return "\n".join(lines) + "\n"


def plot(stream, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    stat, arl, alarm = stream
    fig, ax = plt.subplots(figsize=(8, 3.6))
    t = np.arange(len(stat))
    ax.semilogy(t, np.maximum(stat, 1e-3), lw=1.4, label="R_t (energy)")
    ax.axhline(arl, color="tab:red", ls="--", lw=1, label=f"A = {arl}")
    ax.axvline(ID_FRAMES_BEFORE - 0.5, color="gray", ls=":", lw=1.2, label="switch to near-OOD")
    if alarm is not None and alarm < len(stat):
        ax.plot([alarm], [stat[alarm]], "v", color="tab:red", ms=9,
                label=f"alarm (frame {alarm}, {alarm - ID_FRAMES_BEFORE + 1} OOD frames)")
    ax.set_xlabel("frame")
    ax.set_ylabel("Shiryaev-Roberts statistic")
    ax.set_title("digits detector: 150 ID frames, then digits 6-9")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
