"""The stream monitor on the digits detector: metadata, the update folded into the graph (parity
with StreamMonitor, TensorRT parser limits, re-calibration), ID / near-OOD streams, and the
CLI (export / calibrate options, inspect, watch)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image
from scipy.stats import binom
from typer.testing import CliRunner

import edgeood
from edgeood.cli.app import app
from edgeood.artifact.names import MONITOR_STATE, MONITOR_STATE_OUT, STREAM_ALARM
from edgeood.tensorrt.check import check_model
from edgeood.stats.monitor import StreamMonitor
from edgeood.runtime.onnxruntime.backend import OrtBackend

METHODS = ["energy", "msp"]


@pytest.fixture(scope="module")
def monitored(digits_model, digits_data, tmp_path_factory):
    """A digits detector with the monitor folded in, and its p-values on the test sets."""
    from edgeood.zoo import digits
    d = tmp_path_factory.mktemp("monitor")
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=METHODS,
                         recipe="digits_cnn", out=d / "mon.onnx", stream_monitor=True,
                         monitor_methods="all", arl=500)
    backend = OrtBackend(res.path)
    x = {k: digits.PREPROCESS.normalize(v) for k, v in
         (("id", digits_data.test[0]), ("near", digits_data.near), ("far", digits_data.far))}
    pv = {k: {m: backend.run(v)[f"pvalue_{m}"].astype(np.float64) for m in METHODS}
          for k, v in x.items()}
    return {"res": res, "dir": d, "backend": backend, "x": x, "pv": pv}


def test_metadata_keeps_the_monitor_and_the_graph_stays_within_tensorrt(monitored):
    meta = monitored["res"].metadata
    mon = meta["monitor"]
    assert mon["methods"] == METHODS and mon["arl"] == 500 and mon["delta"] == 0.01
    assert mon["stride"] == 1 and mon["n_reference"] == {"energy": 216, "msp": 216}
    assert mon["in_graph"] and mon["delta_per_method"] == 0.005
    assert mon["bet_scale"] == max(1.0, *mon["q"].values())
    assert mon["largest_bet"] == pytest.approx(7.277, abs=1e-3) and "216 ID scores" in mon["advice"]
    st = mon["state"]
    assert (st["input"]["name"], st["output"]["name"], st["alarm"]["name"]) == \
        (MONITOR_STATE, MONITOR_STATE_OUT, STREAM_ALARM)
    model = onnx.load(str(monitored["res"].path))
    assert [i.name for i in model.graph.input] == ["input", MONITOR_STATE]
    assert [o.name for o in model.graph.output][-2:] == [MONITOR_STATE_OUT, STREAM_ALARM]
    assert check_model(model) == []
    assert not {n.op_type for n in model.graph.node if n.name.startswith("monitor/")} - {
        "Mul", "Add", "Floor", "Max", "Min", "Cast", "Gather", "Squeeze", "Unsqueeze", "Less",
        "Where"}
    # StreamMonitor.from_detector reads the same (no second Monte Carlo)
    host = StreamMonitor.from_detector(monitored["res"].path)
    assert host.methods == METHODS and host.arl == 500 and host.bet_scale == mon["bet_scale"]


def test_folded_update_equals_stream_monitor_over_1000_frames(monitored, digits_data):
    """One frame per call, the state fed back: the graph's R_t equals StreamMonitor's to 1e-6
    relative on every frame (900 ID frames, then near-OOD until and after the alarm)."""
    rng = np.random.default_rng(3)
    x = np.concatenate([monitored["x"]["id"], monitored["x"]["near"]])
    n_id = len(monitored["x"]["id"])
    order = np.concatenate([rng.integers(0, n_id, 900), n_id + rng.integers(0, len(x) - n_id, 100)])
    backend = monitored["backend"]
    host = StreamMonitor.from_detector(monitored["res"].metadata, arl=1e12)
    graph_arl = StreamMonitor.from_detector(monitored["res"].metadata)
    state = np.zeros((1, 1), np.float32)
    worst = 0.0
    alarms = []
    for j in order:
        out = backend.run(x[j:j + 1], extra={MONITOR_STATE: state})
        step = graph_arl.update({m: out[f"pvalue_{m}"][0] for m in METHODS})
        state = out[MONITOR_STATE_OUT]
        worst = max(worst, abs(float(state[0, 0]) - step.statistic) / step.statistic)
        assert bool(out[STREAM_ALARM][0]) == step.alarm
        alarms.append(step.alarm)
        host.update({m: out[f"pvalue_{m}"][0] for m in METHODS})
    assert worst <= 1e-6, worst
    assert not any(alarms[:900]) and alarms[-1]  # ID kept quiet, near-OOD rang, held after
    assert host.statistic > 500  # without the freeze it kept growing
    # one stream per batch slot: three streams in one batch, each its own monitor
    states = np.zeros((3, 1), np.float32)
    hosts = [StreamMonitor.from_detector(monitored["res"].metadata) for _ in range(3)]
    picks = [rng.integers(0, n_id, 30), n_id + rng.integers(0, len(x) - n_id, 30),
             rng.integers(0, len(x), 30)]
    for t in range(30):
        out = backend.run(np.stack([x[p[t]] for p in picks]), extra={MONITOR_STATE: states})
        states = out[MONITOR_STATE_OUT]
        for k, h in enumerate(hosts):
            s = h.update({m: out[f"pvalue_{m}"][k] for m in METHODS})
            assert abs(float(states[k, 0]) - s.statistic) <= 1e-6 * s.statistic
            assert bool(out[STREAM_ALARM][k]) == s.alarm
    # without a fed state every image is a fresh stream (Detector, eval, calibration)
    det = edgeood.load(monitored["res"].path)
    assert len(det(digits_data.test[0][:5]).pvalues["energy"]) == 5


def _streams(rng, monitor, before, after=None, count=200):
    """First alarm frame per stream (inf when none): `before` frames in random order, then
    `after` frames in random order."""
    first = np.full(count, np.inf)
    for i in range(count):
        monitor.reset()
        pa = rng.permutation(len(next(iter(before.values()))))
        seq = {m: before[m][pa] for m in before}
        if after is not None:
            pb = rng.permutation(len(next(iter(after.values()))))
            seq = {m: np.concatenate([seq[m], after[m][pb]]) for m in before}
        steps = monitor.update_batch(seq)
        if steps.alarm.any():
            first[i] = int(np.argmax(steps.alarm))
    return first


def test_digits_id_streams_keep_the_bound_and_near_ood_rings(monitored):
    """ID test frames in random order (independent by construction) keep P(alarm within m)
    <= m / A; after 150 ID frames a switch to near-OOD rings in at least 95% of streams."""
    rng = np.random.default_rng(11)
    pv = monitored["pv"]
    meta = monitored["res"].metadata
    count, arl = 200, 500
    for methods in (["energy"], ["msp"], METHODS):
        mon = StreamMonitor.from_detector(meta, arl=arl, methods=methods)
        ids = {m: pv["id"][m] for m in methods}
        quiet = _streams(rng, mon, ids, count=count)
        m_frames = len(pv["id"]["energy"])
        assert (quiet < m_frames).mean() <= binom.ppf(0.999, count, m_frames / arl) / count
        pre = {m: v[:150] for m, v in ids.items()}
        first = _streams(rng, mon, pre, {m: pv["near"][m] for m in methods}, count=count)
        assert (first < 150).mean() <= binom.ppf(0.999, count, 150 / arl) / count
        detected = (first >= 150) & np.isfinite(first)
        assert detected.mean() >= 0.95, (methods, detected.mean())
        assert np.median(first[detected] - 150) < 40


def test_calibrate_refolds_the_monitor_with_new_options(monitored, digits_data, tmp_path):
    out = tmp_path / "recal.onnx"
    res = edgeood.calibrate(monitored["res"].path, digits_data.test[0], out=out, arl=2000,
                            stride=5)
    mon = res.metadata["monitor"]
    assert mon["in_graph"] and mon["arl"] == 2000 and mon["stride"] == 5
    assert mon["methods"] == METHODS and mon["n_reference"] == {"energy": 217, "msp": 217}
    assert mon["detector_id"] != monitored["res"].metadata["monitor"]["detector_id"]
    model = onnx.load(str(out))
    names = [o.name for o in model.graph.output]
    assert names.count("pvalue_energy") == 1 and names[-2:] == [MONITOR_STATE_OUT, STREAM_ALARM]
    assert check_model(model) == []
    held = np.array([[0.0], [1999.0], [2000.0], [3000.0]], np.float32)  # A = 2000
    ran = OrtBackend(out).run(monitored["x"]["near"][:4], extra={MONITOR_STATE: held})
    assert ran[STREAM_ALARM][2:].tolist() == [True, True]  # frozen once R >= A
    assert ran[MONITOR_STATE_OUT][2:, 0].tolist() == [2000.0, 3000.0]
    host = StreamMonitor.from_detector(res.metadata)
    want = (1 + held[:2, 0]) * host.bets({m: ran[f"pvalue_{m}"][:2] for m in METHODS})
    np.testing.assert_allclose(ran[MONITOR_STATE_OUT][:2, 0], want, rtol=1e-6)
    off = edgeood.calibrate(out, digits_data.test[0], out=tmp_path / "off.onnx",
                            stream_monitor=False)
    assert not off.metadata["monitor"]["in_graph"] and off.metadata["monitor"]["arl"] == 2000
    assert MONITOR_STATE not in [i.name for i in onnx.load(str(tmp_path / "off.onnx")).graph.input]


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_export_inspect_watch(monitored, digits_model, digits_data, tmp_path):
    np.savez(tmp_path / "val.npz", images=digits_data.val[0])
    det = tmp_path / "cli.onnx"
    r = _invoke("export", digits_model, "--data", tmp_path / "val.npz", "--recipe", "digits_cnn",
                "--methods", "energy,msp", "--arl", "1000", "--delta", "0.005", "--stride", "2",
                "--stream-monitor", "--out", det, "--json")
    assert r.exit_code == 0, r.output
    mon = json.loads(r.output)["metadata"]["monitor"]
    assert (mon["arl"], mon["delta"], mon["stride"], mon["methods"], mon["in_graph"]) == \
        (1000, 0.005, 2, ["energy"], True)
    text = _invoke("inspect", det, "--fps", "10").output
    assert "stream monitor: energy, A = 1000 sampled frames, delta 0.005, stride 2" in text
    assert "2000 frames = 3.3 min at 10 fps" in text and "folded into the graph" in text
    assert json.loads(_invoke("inspect", det, "--json").output)["monitor"][
        "mean_time_between_false_alarms_s"] == 1000 * 2 / 30
    # watch: ID frames then near-OOD; --fail-on-alarm exits 3
    stream = np.concatenate([digits_data.test[0][:100], digits_data.near[:100]])
    np.save(tmp_path / "stream.npy", stream)
    r = _invoke("watch", det, tmp_path / "stream.npy", "--stride", "1", "--fail-on-alarm")
    assert r.exit_code == 3, r.output
    assert "ALARM at frame 1" in r.output and "alarm at frame" in r.output
    lines = [json.loads(s) for s in _invoke("watch", det, tmp_path / "stream.npy", "--json",
                                            "--max-frames", "20").output.splitlines()]
    frames, summary = lines[:-1], lines[-1]["summary"]
    assert [f["frame"] for f in frames] == list(range(20))
    assert [f["used"] for f in frames[:4]] == [True, False, True, False]  # stride 2 kept
    assert summary["frames"] == 20 and summary["sampled"] == 10 and not summary["alarm"]
    # a folder of images in name order
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, img in enumerate(stream[:12]):
        Image.fromarray(img[:, :, 0]).save(folder / f"f{i:03d}.png")
    rows = [json.loads(s) for s in _invoke("watch", det, folder, "--json").output.splitlines()]
    assert [row["source"].rsplit("/", 1)[-1] for row in rows[:-1]] == \
        [f"f{i:03d}.png" for i in range(12)]
    # state across restarts: 60 + 140 frames equal 200 in one go
    whole = _invoke("watch", det, tmp_path / "stream.npy", "--json").output.splitlines()
    np.save(tmp_path / "a.npy", stream[:60])
    np.save(tmp_path / "b.npy", stream[60:])
    st = tmp_path / "state.json"
    _invoke("watch", det, tmp_path / "a.npy", "--state", st, "--quiet")
    resumed = _invoke("watch", det, tmp_path / "b.npy", "--state", st, "--json").output
    assert json.loads(resumed.splitlines()[-1]) == json.loads(whole[-1])
    # a state from another detector (here: the same model calibrated on other images) is refused
    np.save(tmp_path / "test.npy", digits_data.test[0])
    other = tmp_path / "other.onnx"
    r = _invoke("calibrate", det, "--data", tmp_path / "test.npy", "--out", other, "--quiet")
    assert r.exit_code == 0, r.output
    r = _invoke("watch", other, tmp_path / "b.npy", "--state", st)
    assert r.exit_code == 2 and "belongs to detector" in r.output and "\n" not in r.output.strip()
    # bad options: one line, exit 2
    for args, needle in ((["--arl", "1"], "arl 1.0 is outside the allowed range (1, inf)"),
                         (["--delta", "2"], "delta 2.0 is outside the allowed range (0, 1)"),
                         (["--monitor-methods", "enrgy"], "did you mean energy")):
        r = _invoke("export", digits_model, "--data", tmp_path / "val.npz", "--recipe",
                    "digits_cnn", "--methods", "energy,msp", "--out", tmp_path / "x.onnx", *args)
        assert r.exit_code == 2 and needle in r.output and not (tmp_path / "x.onnx").exists()
    r = _invoke("export", digits_model, "--recipe", "digits_cnn", "--methods", "energy",
                "--stream-monitor", "--out", tmp_path / "y.onnx")
    assert r.exit_code == 2 and "pass --data" in r.output
    r = _invoke("watch", det, tmp_path / "stream.npy", "--methods", "react")
    assert r.exit_code == 2 and "unknown method 'react'" in r.output


def test_watch_reads_a_video_file(monitored, digits_data, tmp_path):
    cv2 = pytest.importorskip("cv2")
    frames = np.concatenate([digits_data.test[0][:40], digits_data.near[:60]])
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"png "), 30, (8, 8))
    for f in frames:
        writer.write(cv2.cvtColor(f[:, :, 0], cv2.COLOR_GRAY2BGR))
    writer.release()
    np.save(tmp_path / "clip.npy", frames)
    video = _invoke("watch", monitored["res"].path, path, "--json").output.splitlines()
    array = _invoke("watch", monitored["res"].path, tmp_path / "clip.npy", "--json").output
    assert len(video) == 101 and json.loads(video[-1]) == json.loads(array.splitlines()[-1])
