"""`edgeood deploy triton` repositories in a real Triton server (tritonserver 2.51 from
nvidia-pytriton, .ci/triton-setup.sh): Triton core parses, normalises and validates each
config.pbtxt, batches requests and serves them over gRPC. The onnxruntime platform runs on a
Python-based stand-in backend (tests/helpers/triton_ort_backend.py) that checks the config against
the model like the real backend; `--backend python` models run edgeood's own model.py.
References are independent of the server: the detector run by edgeood (edgeood.load) and
edgeood's StreamMonitor run offline. One server for the session; models are loaded and
unloaded through its API."""
from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

import edgeood
from edgeood.data import open_source
from edgeood.deploy.client import Served, run_streams
from edgeood.deploy.triton import triton_repository
from edgeood.deploy.triton_python import triton_python_repository
from edgeood.graph.preprocess import entry_point
from edgeood.stats.monitor import StreamMonitor
from tests.helpers import DATA
from tests.helpers.cli import cli
from tests.helpers.deploy import engine_sidecar
from tests.helpers.triton import LoadError, camera_streams, monitor_in_server_python

pytestmark = pytest.mark.triton

STATE_OUTPUTS = ("monitor_state_out",)
GOLDEN_ALL = DATA / "legacy" / "digits_all.onnx"  # all 12 methods, an int64 grood_label output


@pytest.fixture(scope="module")
def camera_detector(digits_model, digits_data, tmp_path_factory):
    """uint8 `image` input, the in-graph stream monitor, two methods (the monitor bets on
    energy)."""
    out = tmp_path_factory.mktemp("camera") / "camera.onnx"
    return edgeood.export(digits_model, data=digits_data.val[0], methods=["energy", "msp"],
                          recipe="digits_cnn", out=out, input="uint8", stream_monitor=True)


@functools.lru_cache(maxsize=8)
def loaded(path):
    return edgeood.load(path, device="cpu")


def reference(path, frames: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the detector for the frames, run by edgeood (each frame a fresh stream
    for a folded monitor)."""
    return loaded(path).backend.run(frames)


def preprocessed(path, frames: np.ndarray) -> np.ndarray:
    det = loaded(path)
    return np.concatenate([b.x for b in open_source(frames).batches(det.preprocess, 64)])


def assert_same(served: dict, ref: dict, where: str) -> None:
    want = {k: v for k, v in ref.items() if k not in STATE_OUTPUTS}
    assert sorted(served) == sorted(want), where
    for name, r in want.items():
        s = served[name]
        assert s.shape == r.shape and s.dtype == r.dtype, (where, name, s.shape, r.shape)
        if r.dtype.kind == "f" and not name.startswith("pvalue_"):
            np.testing.assert_allclose(s, r, rtol=1e-5, atol=1e-5, err_msg=f"{where} {name}")
        else:
            np.testing.assert_array_equal(s, r, err_msg=f"{where} {name}")


def serve(server, name):
    server.load(name)
    return Served.grpc(server.grpc_url, name)


def test_onnxruntime_repositories_serve_the_detectors_outputs(triton_server, digits_detector,
                                                              camera_detector, digits_data):
    """Float input (all methods and kept taps), the uint8 `image` entry with the in-graph
    monitor (kind auto), and that detector's float entry: Triton loads each generated
    repository and every served output equals edgeood's run, shapes and types included."""
    frames = np.concatenate([digits_data.test[0][:13], digits_data.far[:7]])
    repo = triton_server.repository
    # float input, all methods, taps: dynamic batching, requests of 8 frames
    triton_repository(digits_detector.path, repo, "float_all", kind="cpu")
    served = serve(triton_server, "float_all")
    assert served.max_batch == 8 and "dynamic_batching" in served.config
    x = preprocessed(digits_detector.path, frames)
    assert_same(served.run(x, batch=8), reference(digits_detector.path, x), "float_all")
    # uint8 frames, the folded monitor: one sequence per frame (state 0 at its START)
    triton_repository(camera_detector.path, repo, "camera_monitor", kind="auto")
    served = serve(triton_server, "camera_monitor")
    assert served.sequence and served.input["name"] == "image"
    parts = [served.infer(frames[i:i + 1], 1000 + i, start=True, end=True)
             for i in range(len(frames))]
    got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    assert_same(got, reference(camera_detector.path, frames), "camera_monitor")
    # the same detector on its float entry
    triton_repository(camera_detector.path, repo, "camera_float", entry="float", kind="cpu")
    served = serve(triton_server, "camera_float")
    assert served.input["name"] == "input" and served.input["data_type"] == "TYPE_FP32"
    x = preprocessed(camera_detector.path, frames[:4])
    part = served.infer(x[:1], 7, start=True, end=True)
    assert_same(part, reference(camera_detector.path, x[:1]), "camera_float")
    # the golden detector with all 12 methods (float input, int64 grood_label)
    triton_repository(GOLDEN_ALL, repo, "golden_all", kind="cpu", max_batch=4)
    served = serve(triton_server, "golden_all")
    x = preprocessed(GOLDEN_ALL, frames)
    assert_same(served.run(x, batch=4), reference(GOLDEN_ALL, x), "golden_all")
    for name in ("float_all", "camera_monitor", "camera_float", "golden_all"):
        triton_server.unload(name)


def test_engine_configs_agree_with_the_network(triton_server, camera_detector,
                                               digits_detector, digits_data, tmp_path):
    """An engine's repository is written from its sidecar alone; without TensorRT its
    config.pbtxt is loaded against the network it was built from (the same ONNX on the
    onnxruntime platform): Triton core and the I/O checks accept the dims, types, batch and
    monitor state of a dynamic profile (uint8 frames, folded monitor, max 16) and of a fixed
    batch of 4 (float input, all methods and taps), whose served outputs equal edgeood's."""
    camera = entry_point(onnx.load(str(camera_detector.path)), "image")
    plain = onnx.load(str(digits_detector.path))
    for network, max_batch, dynamic in ((camera, 16, True), (plain, 4, False)):
        name = f"engine_{max_batch}"
        plan = tmp_path / f"{name}.engine"
        engine_sidecar(network, plan, max_batch=max_batch, dynamic=dynamic)
        res = triton_repository(plan, tmp_path / "repos", name, kind="cpu")
        target = triton_server.repository / name
        (target / "1").mkdir(parents=True)
        text = res.text.replace('platform: "tensorrt_plan"', 'platform: "onnxruntime_onnx"')
        (target / "config.pbtxt").write_text(text)
        onnx.save(network, str(target / "1" / "model.onnx"))
        served = serve(triton_server, name)
        if dynamic:
            assert served.max_batch == 16 and served.sequence
        else:
            assert served.max_batch == 0 and not served.sequence
            x = preprocessed(digits_detector.path, digits_data.test[0][:4])
            assert_same(served.infer(x[None]), reference(digits_detector.path, x), name)
        triton_server.unload(name)


def plant(server, source: str, name: str, old: str, new: str) -> None:
    """A copy of a generated repository with one edit to its config.pbtxt."""
    src, dst = server.repository / source, server.repository / name
    shutil.copytree(src, dst)
    text = (dst / "config.pbtxt").read_text()
    assert old in text, old
    (dst / "config.pbtxt").write_text(text.replace(f'name: "{source}"', f'name: "{name}"', 1)
                                      .replace(old, new, 1))


def test_server_refuses_bad_configs(triton_server, camera_detector):
    """Known-bad configs, each refused with its reason: wrong dims, a wrong data type, a state
    that names no model tensor, and KIND_GPU on a machine without a GPU."""
    triton_repository(camera_detector.path, triton_server.repository, "good", kind="cpu")
    cases = {
        "bad_dims": ("dims: [ 8, 8, 1 ]", "dims: [ 8, 8, 3 ]",
                     ["tensor 'image'", "the model expects 4 dimensions"]),
        "bad_dtype": ('name: "image"\n    data_type: TYPE_UINT8',
                      'name: "image"\n    data_type: TYPE_FP32',
                      ["unexpected datatype TYPE_FP32 for inference input 'image'",
                       "expecting TYPE_UINT8"]),
        "bad_state": ('input_name: "monitor_state"', 'input_name: "monitor_stat"',
                      ["monitor_stat"]),
        "bad_kind": ("kind: KIND_CPU", "kind: KIND_GPU", ["GPU"]),
    }
    for name, (old, new, words) in cases.items():
        plant(triton_server, "good", name, old, new)
        with pytest.raises(LoadError) as err:
            triton_server.load(name)
        for w in words:
            assert w in err.value.message, (name, err.value.message)
    serve(triton_server, "good")  # the unedited repository loads
    triton_server.unload("good")


def offline_monitor(path, frames):
    """The stream's p-values by edgeood's detector and edgeood's StreamMonitor over them."""
    det = loaded(path)
    out = det.backend.run(frames)
    mon = StreamMonitor.from_detector(det.metadata)
    steps = mon.update_batch({m: out[f"pvalue_{m}"] for m in mon.methods})
    return out, steps


def test_python_backend_keeps_every_streams_alarm_exact(triton_server, camera_detector,
                                                        digits_data, tmp_path):
    """8, then 32 cameras at once over gRPC, interleaved in the same batches: every stream's
    detector outputs equal edgeood's; its statistic equals edgeood's StreamMonitor run offline on
    that stream alone, bit for bit under the server's NumPy (1.x; NumPy 2 here rounds log/expm1
    differently in the last bit: alarms equal, statistic within 1e-13), and no state leaks
    between streams."""
    triton_python_repository(camera_detector.path, triton_server.repository, "py_streams",
                             threads=1)
    served = serve(triton_server, "py_streams")
    assert served.sequence and served.input["name"] == "image"
    for n, first_id in ((8, 100), (32, 200)):
        check_streams(triton_server, camera_detector, digits_data, n, first_id, tmp_path / str(n))
    stats = served.client.get_inference_statistics("py_streams", as_json=True)
    model = stats["model_stats"][0]
    # several streams' frames went through one execution (sequence batching, Oldest)
    assert int(model["inference_count"]) == 40 * (8 + 32)
    assert int(model["execution_count"]) < int(model["inference_count"])
    triton_server.unload("py_streams")


def check_streams(triton_server, camera_detector, digits_data, n, first_id, tmp_path):
    streams, changes = camera_streams(digits_data, n)
    run = run_streams(triton_server.grpc_url, "py_streams", streams, first_id=first_id)
    pvalues = []
    for k, (frames, out) in enumerate(zip(streams, run.outputs)):
        ref, steps = offline_monitor(camera_detector.path, frames)
        served_detector = {o: v for o, v in out.items() if not o.startswith("stream_")}
        ref = {o: v for o, v in ref.items() if o not in ("stream_alarm", "monitor_state_out")}
        assert_same(served_detector, ref, f"{n} streams: stream {k}")
        pvalues.append({"energy": ref["pvalue_energy"]})
        np.testing.assert_array_equal(out["stream_alarm"], steps.alarm)
        np.testing.assert_allclose(out["stream_statistic"], steps.statistic, rtol=1e-13)
        np.testing.assert_array_equal(out["stream_frame"], np.arange(len(frames)))
        assert not steps.alarm[:changes[k]].any() and steps.alarm[-1], k  # OOD alarms
    same_numpy = monitor_in_server_python(triton_server.bin_dir, camera_detector.metadata,
                                          pvalues, tmp_path)
    for k, (statistic, alarm) in enumerate(same_numpy):
        np.testing.assert_array_equal(run.outputs[k]["stream_statistic"], statistic)
        np.testing.assert_array_equal(run.outputs[k]["stream_alarm"], alarm)


def test_python_backend_serves_all_methods_on_the_float_input(triton_server, digits_data,
                                                              tmp_path):
    """--backend python on the golden detector with all 12 methods (float input, no in-graph
    monitor; the stream monitor bets on the primary method): outputs equal edgeood's and the
    statistic edgeood's StreamMonitor under the server's NumPy."""
    triton_python_repository(GOLDEN_ALL, triton_server.repository, "py_all", threads=1)
    served = serve(triton_server, "py_all")
    assert served.input["data_type"] == "TYPE_FP32"
    frames = np.concatenate([digits_data.test[0][:10], digits_data.far[:10]])
    x = preprocessed(GOLDEN_ALL, frames)
    out = served.stream(x, 9)
    ref = reference(GOLDEN_ALL, x)
    assert_same({n: v for n, v in out.items() if not n.startswith("stream_")}, ref, "py_all")
    meta = edgeood.load(GOLDEN_ALL, device="cpu").metadata
    primary = meta["primary"]
    ((statistic, alarm),) = monitor_in_server_python(
        triton_server.bin_dir, meta, [{primary: ref[f"pvalue_{primary}"]}], tmp_path / "m")
    np.testing.assert_array_equal(out["stream_statistic"], statistic)
    np.testing.assert_array_equal(out["stream_alarm"], alarm)
    triton_server.unload("py_all")


def test_python_backend_idle_stream_is_freed_and_restarts_from_zero(triton_server,
                                                                    camera_detector,
                                                                    digits_data):
    """A stream that stops without END: after the idle timeout (1 s here) Triton refuses its
    next frame without START, the model frees its state (logged), and the restarted stream
    starts from frame 0 and R = 0; a START in the middle of a stream restarts it too."""
    triton_python_repository(camera_detector.path, triton_server.repository, "py_idle",
                             idle_us=1_000_000, threads=1)
    served = serve(triton_server, "py_idle")
    streams, _ = camera_streams(digits_data, 2, length=30)
    frames = streams[0]
    first = served.stream(frames[:20], 5, end=False)
    _, steps = offline_monitor(camera_detector.path, frames[:20])
    np.testing.assert_array_equal(first["stream_alarm"], steps.alarm)
    np.testing.assert_allclose(first["stream_statistic"], steps.statistic, rtol=1e-13)
    from tritonclient.utils import InferenceServerException
    with pytest.raises(InferenceServerException, match="must specify batch-size 1"):
        served.infer(frames[20:22], 5)  # the sequence batcher: one frame a request
    time.sleep(1.6)
    with pytest.raises(InferenceServerException, match="START"):
        served.infer(frames[20:21], 5)
    served.stream(streams[1][:2], 6)  # any request: the model sweeps idle streams
    assert "edgeood: stream 5 idle for more than 1 s" in triton_server.log()
    assert "edgeood: stream 6 idle" not in triton_server.log()
    again = served.stream(frames[10:30], 5, end=False)
    _, fresh = offline_monitor(camera_detector.path, frames[10:30])
    np.testing.assert_array_equal(again["stream_frame"], np.arange(20))
    np.testing.assert_allclose(again["stream_statistic"], fresh.statistic, rtol=1e-13)
    restart = served.stream(frames[:5], 5)  # START without a prior END
    np.testing.assert_array_equal(restart["stream_statistic"], first["stream_statistic"][:5])
    triton_server.unload("py_idle")


def test_cli_backend_python_and_the_client_command(triton_server, camera_detector, digits_data,
                                                   tmp_path):
    """`edgeood deploy triton --backend python` into the server's repository, its next-step
    hint, then `python -m edgeood.deploy.client` against the running server."""
    det = tmp_path / "cam.onnx"
    shutil.copy(camera_detector.path, det)
    out = json.loads(cli("deploy", "triton", det, "--out", triton_server.repository,
                         "--name", "py_cli", "--backend", "python", "--json").stdout)
    assert out["input"] == "image" and out["model"].endswith("model.py")
    config = (triton_server.repository / "py_cli" / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "kind: KIND_CPU" in config
    text = cli("deploy", "triton", det, "--out", tmp_path / "r2", "--backend", "python").stdout
    assert "then: python -m edgeood.deploy.client cam IMAGES" in text
    bad = cli("deploy", "triton", det, "--out", tmp_path / "r3", "--backend", "tflite",
              check=False)
    assert bad.returncode == 2 and "--backend tflite must be one of onnxruntime, python" \
        in bad.stderr
    triton_server.load("py_cli")
    frames = np.concatenate([digits_data.test[0][:6], digits_data.far[:30]])
    np.save(tmp_path / "frames.npy", frames)
    proc = subprocess.run([sys.executable, "-m", "edgeood.deploy.client", "py_cli",
                           str(tmp_path / "frames.npy"), "--url", triton_server.grpc_url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    _, steps = offline_monitor(camera_detector.path, frames)
    assert len(lines) == len(frames) and lines[0].startswith("frame 0: class ")
    assert [("stream alarm YES" in line) for line in lines] == list(steps.alarm)
    triton_server.unload("py_cli")
