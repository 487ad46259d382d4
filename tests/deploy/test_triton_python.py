"""`edgeood deploy triton --backend python` without a server: the shipped per-stream monitors
(edgeood/deploy/triton_stream.py, NumPy only) equal edgeood's StreamMonitor bit for bit under
the same NumPy, streams interleaved frame by frame; the generated config parses against Triton's
ModelConfig schema; what the flavour refuses, in one line."""
from __future__ import annotations

import ast

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from edgeood.deploy.triton_python import triton_python_repository
from edgeood.deploy.triton_stream import Streams, power_mixture
from tests.helpers import REPO
from edgeood.errors import EdgeoodError
from edgeood.graph.preprocess import entry_point
from edgeood.stats import monitor as edgeood_monitor
from edgeood.stats.monitor import StreamMonitor
from tests.helpers import DATA
from tests.helpers.deploy import engine_sidecar

GOLDEN_MONITOR = DATA / "legacy" / "digits_uint8_monitor.onnx"


def test_power_mixture_is_edgeood_s():
    p = np.concatenate([np.arange(1, 1002) / 1001.0, [0.0, 1.0, 1e-300, 0.6065306597126334]])
    np.testing.assert_array_equal(power_mixture(p), edgeood_monitor.power_mixture(p))


@pytest.mark.parametrize("stride,rearm,methods", [(1, False, ["a"]), (3, False, ["a", "b"]),
                                                  (1, True, ["a"])])
def test_interleaved_streams_equal_one_monitor_each(stride, rearm, methods):
    rng = np.random.default_rng(1)
    n_ref = {m: 216 for m in methods}
    ref = StreamMonitor(50.0, n_ref, stride=stride, methods=methods, rearm=rearm)
    config = {"methods": methods, "arl": 50.0, "stride": stride, "bet_scale": ref.bet_scale,
              "rearm": rearm}
    streams = Streams(config, idle_s=60.0)
    n_streams, length = 5, 120
    # each stream drifts to small p-values from its own frame on (alarms, with rearm again)
    p = {m: rng.integers(1, 218, (n_streams, length)) / 217.0 for m in methods}
    for k in range(n_streams):
        for m in methods:
            p[m][k, 30 + 10 * k:] = rng.integers(1, 6, length - 30 - 10 * k) / 217.0
    got = {k: ([], []) for k in range(n_streams)}
    for t in range(length):  # frame t of every stream, streams interleaved
        for k in range(n_streams):
            if t == 0:
                streams.start(k, now=0.0)
            stat, alarm = streams.update(k, {m: p[m][k, t:t + 1] for m in methods}, now=0.0)
            got[k][0].append(stat[0])
            got[k][1].append(alarm[0])
    for k in range(n_streams):
        mon = StreamMonitor(50.0, n_ref, stride=stride, methods=methods, rearm=rearm)
        steps = mon.update_batch({m: p[m][k] for m in methods})
        np.testing.assert_array_equal(np.array(got[k][0]), steps.statistic)
        np.testing.assert_array_equal(np.array(got[k][1]), steps.alarm)
        assert steps.alarm.any()
    # several frames of one stream in one request: the same
    streams.start("x", now=0.0)
    stat, alarm = streams.update("x", {m: p[m][0] for m in methods}, now=0.0)
    mon = StreamMonitor(50.0, n_ref, stride=stride, methods=methods, rearm=rearm)
    np.testing.assert_array_equal(stat, mon.update_batch({m: p[m][0] for m in methods}).statistic)


def test_streams_free_state_on_end_and_idle():
    streams = Streams({"methods": ["a"], "arl": 10.0, "bet_scale": 1.0}, idle_s=2.0)
    streams.update(1, {"a": [0.01]}, now=0.0)
    streams.update(2, {"a": [0.01]}, now=1.5)
    assert streams.end(1) and len(streams) == 1
    assert streams.sweep(now=3.0) == [] and streams.sweep(now=3.6) == [2] and len(streams) == 0
    stat, _ = streams.update(2, {"a": [0.5]}, now=4.0)  # back: from R = 0
    assert stat[0] == power_mixture(0.5)


def test_python_repository_files_and_config(tmp_path):
    res = triton_python_repository(GOLDEN_MONITOR, tmp_path, "cam", max_batch=16, streams=32)
    cfg = text_format.Parse(res.config.read_text(), mc.ModelConfig())
    assert cfg.backend == "python" and cfg.max_batch_size == 16
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert [i.name for i in cfg.input] == ["image"]
    names = [o.name for o in cfg.output]
    assert "monitor_state_out" not in names and names[-3:] == ["stream_alarm", "stream_statistic",
                                                               "stream_frame"]
    seq = cfg.sequence_batching
    assert seq.oldest.max_candidate_sequences == 32 and not seq.state
    assert sorted(c.name for c in seq.control_input) == ["CORRID", "END", "START"]
    files = sorted(p.name for p in (res.model_dir / "1").iterdir())
    assert files == ["betting.py", "model.onnx", "model.py", "stream.json", "triton_stream.py"]
    # model.py, triton_stream.py and betting.py (edgeood's own) need NumPy and ONNX Runtime only
    assert (res.model_dir / "1" / "betting.py").read_bytes() == \
        (REPO / "edgeood" / "stats" / "betting.py").read_bytes()
    for f in ("model.py", "triton_stream.py", "betting.py"):
        tree = ast.parse((res.model_dir / "1" / f).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                    for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module}
        assert imported <= {"__future__", "importlib", "json", "time", "pathlib", "numpy",
                            "onnxruntime", "triton_python_backend_utils"}, (f, imported)


def test_python_backend_refusals(tmp_path):
    plan = tmp_path / "x.engine"
    engine_sidecar(entry_point(onnx.load(str(GOLDEN_MONITOR)), "image"), plan, 8, True)
    with pytest.raises(EdgeoodError, match="runs the .onnx detector with ONNX Runtime"):
        triton_python_repository(plan, tmp_path / "r")
    with pytest.raises(EdgeoodError, match="--kind tpu must be one of"):
        triton_python_repository(GOLDEN_MONITOR, tmp_path / "r", kind="tpu")
    assert not (tmp_path / "r" / "digits_uint8_monitor").exists()
