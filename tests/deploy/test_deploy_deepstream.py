"""`edgeood deploy deepstream`: the nvinfer config checked against the detector's metadata
(net-scale-factor and offsets reproduce its preprocessing), the written model run the way
nvinfer feeds it, the probe's decoding, engines from their sidecar alone."""
from __future__ import annotations

import configparser
import importlib.util
import json
import py_compile

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edgeood
from edgeood.data import Preprocess
from edgeood.deploy.deepstream import deepstream_config
from edgeood.errors import EdgeoodError
from tests.helpers.deploy import bgr_detector, engine_sidecar, photo_frames

COLOR = {"RGB": 0, "BGR": 1, "GRAY": 2}


def read_config(path) -> dict:
    cp = configparser.ConfigParser()
    cp.optionxform = str  # keep the keys as written
    cp.read_string(path.read_text())
    return dict(cp["property"])


def floats(value: str) -> list[float]:
    return [float(v) for v in value.split(";")]


def nvinfer_input(frames: np.ndarray, props: dict) -> np.ndarray:
    """What nvinfer feeds the network for RGB uint8 frames at the network size:
    y = net-scale-factor * (x - offsets[c]) in the model-color-format order, N x C x H x W."""
    x = frames.astype(np.float32)
    if int(props["model-color-format"]) == 1:
        x = x[..., ::-1]
    y = float(props["net-scale-factor"]) * (x - np.asarray(floats(props["offsets"]), np.float32))
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2), dtype=np.float32)


def check_preprocessing(props: dict, meta: dict, channel_scale=None) -> None:
    """scale * (x - offsets[c]) (* the model's per-channel Mul) == (x / 255 - mean) / std for
    every pixel value x."""
    pre = Preprocess.from_dict(meta["preprocessing"])
    x = np.arange(256, dtype=np.float64)[:, None]
    ds = float(props["net-scale-factor"]) * (x - np.asarray(floats(props["offsets"])))
    if channel_scale is not None:
        ds = ds * np.asarray(channel_scale)
    want = (x / 255.0 - np.asarray(pre.mean)) / np.asarray(pre.std)
    np.testing.assert_allclose(ds, want, rtol=1e-12, atol=1e-12)
    assert int(props["model-color-format"]) == COLOR[pre.color]
    assert floats(props["infer-dims"]) == [pre.channels, *pre.size]


def load_probe(path):
    spec = importlib.util.spec_from_file_location("edgeood_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_config_reproduces_the_preprocessing(digits_detector, digits_data, tmp_path):
    det = digits_detector
    res = deepstream_config(det.path, tmp_path / "ds", batch=4)
    props = read_config(res.config)
    check_preprocessing(props, det.metadata)
    ds_meta = det.metadata["preprocessing"]["deepstream"]  # the metadata's own entry agrees
    assert float(props["net-scale-factor"]) == pytest.approx(ds_meta["net-scale-factor"])
    assert floats(props["offsets"]) == pytest.approx(ds_meta["offsets"])
    assert props["network-type"] == "100" and props["output-tensor-meta"] == "1"
    assert props["batch-size"] == "4" and props["network-mode"] == "0"
    assert props["onnx-file"] == "digits_detector.onnx" and "model-engine-file" in props
    assert props["process-mode"] == "1" and props["maintain-aspect-ratio"] == "0"
    model = onnx.load(str(res.model))
    assert [i.name for i in model.graph.input] == ["input"]
    assert props["output-blob-names"].split(";") == [o.name for o in model.graph.output]
    # nvinfer's layer types: is_ood comes out as int32
    types = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert types["is_ood"] == onnx.TensorProto.INT32
    assert types["score_energy"] == onnx.TensorProto.FLOAT
    # run it the way nvinfer feeds it: the same scores as the detector's host path
    frames = digits_data.test[0][:16]
    sess = ort.InferenceSession(str(res.model))
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {"input": nvinfer_input(frames, props)})))
    want = edgeood.load(det.path)(frames)
    for m, s in want.scores.items():
        np.testing.assert_allclose(got[f"score_{m}"], s, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["is_ood"].astype(bool), want.is_ood)
    # the probe: compiles, and its decoding of one frame's layers gives the detector's row
    py_compile.compile(str(res.probe), doraise=True)
    probe = load_probe(res.probe)
    spec = probe.load_spec(res.config)
    assert spec["primary"] == det.metadata["primary"] and spec["thresholds"]
    assert {o["name"]: o["dtype"] for o in spec["outputs"]}["is_ood"] == "int32"
    for i in range(len(frames)):
        row = probe.frame_result({n: v[i] for n, v in got.items()}, spec)
        assert row["label"] == int(want.labels[i])
        assert row["is_ood"] == bool(want.is_ood[i]) == row["is_ood_check"]
        assert row["pvalues"]["energy"] == pytest.approx(float(want.pvalues["energy"][i]))


def test_per_channel_std_goes_into_the_model(tmp_path):
    """BGR, ImageNet's per-channel std: nvinfer's single net-scale-factor plus a per-channel
    Mul at the model's input reproduce the preprocessing; the uint8 entry and per-image
    outputs stay out of the DeepStream model."""
    res = bgr_detector(tmp_path)
    files = deepstream_config(res.path, tmp_path / "ds", half=True)
    props = read_config(files.config)
    std = np.asarray(res.metadata["preprocessing"]["std"])
    check_preprocessing(props, res.metadata, channel_scale=std[0] / std)
    assert props["model-color-format"] == "1" and props["network-mode"] == "2"
    assert props["model-engine-file"].endswith("_fp16.engine")
    assert "per-channel part of std" in files.config.read_text()
    frames = photo_frames(8, 16, seed=5)
    sess = ort.InferenceSession(str(files.model))
    assert [i.name for i in sess.get_inputs()] == ["input"]
    out = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"input": nvinfer_input(frames, props)})))
    want = edgeood.load(res.path)(frames)
    for m, s in want.scores.items():
        np.testing.assert_allclose(out[f"score_{m}"], s, rtol=1e-4, atol=1e-4)


def test_engine_config_from_its_sidecar(digits_detector, tmp_path):
    """An engine as edgeood build writes it (plan + sidecar with its io and profile): no
    TensorRT needed; nvinfer's batch-size and network-mode come from the engine."""
    meta = engine_sidecar(onnx.load(str(digits_detector.path)), tmp_path / "digits.engine",
                          max_batch=4, dynamic=False, precision="float16")
    files = deepstream_config(tmp_path / "digits.engine", tmp_path / "ds")
    props = read_config(files.config)
    assert props["model-engine-file"] == "digits.engine" and "onnx-file" not in props
    assert files.model.read_bytes() == (tmp_path / "digits.engine").read_bytes()
    assert props["network-mode"] == "2" and props["batch-size"] == "4"
    check_preprocessing(props, meta)
    spec = json.loads(files.spec.read_text())
    assert [o["name"] for o in spec["outputs"]] == meta["outputs"]
    assert props["output-blob-names"].split(";") == meta["outputs"]


def test_two_entry_engine_is_refused(tmp_path):
    res = bgr_detector(tmp_path, methods=("energy",))
    engine_sidecar(onnx.load(str(res.path)), tmp_path / "both.plan", 1, False)
    with pytest.raises(EdgeoodError, match="takes input, image"):
        deepstream_config(tmp_path / "both.plan", tmp_path / "ds")


def test_engine_with_per_channel_std_is_refused(tmp_path):
    res = bgr_detector(tmp_path, input="float", methods=("energy",))
    (tmp_path / "bgr.plan").write_bytes(b"plan")
    (tmp_path / "bgr.plan.json").write_text(json.dumps(res.metadata))
    with pytest.raises(EdgeoodError, match="per-channel std"):
        deepstream_config(tmp_path / "bgr.plan", tmp_path / "ds")


def test_cli_deploy_deepstream(digits_detector, tmp_path):
    from tests.helpers.cli import cli
    out = json.loads(cli("deploy", "deepstream", digits_detector.path, "--out", tmp_path / "ds",
                         "--device", "1", "--json").stdout)
    assert out["properties"]["gpu-id"] == 1 and out["properties"]["network-type"] == 100
    text = cli("deploy", "deepstream", digits_detector.path, "--out", tmp_path / "ds2").stdout
    assert "edgeood_probe.py --config" in text


def test_in_graph_monitor_and_image_entry_stay_out_of_the_nvinfer_model(digits_model,
                                                                        digits_data, tmp_path):
    import inspect
    from edgeood.api import export as api_export
    if "stream_monitor" not in inspect.signature(api_export).parameters:
        pytest.skip("this edgeood has no in-graph stream monitor")
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy"],
                         recipe="digits_cnn", out=tmp_path / "mon.onnx", stream_monitor=True,
                         input="uint8")
    files = deepstream_config(res.path, tmp_path / "ds")
    model = onnx.load(str(files.model))
    assert [i.name for i in model.graph.input] == ["input"]
    names = [o.name for o in model.graph.output]
    assert "monitor_state_out" not in names and "stream_alarm" not in names
    assert read_config(files.config)["output-blob-names"].split(";") == names
    sess = ort.InferenceSession(str(files.model))
    frames = digits_data.test[0][:4]
    out = sess.run(["score_energy"], {"input": nvinfer_input(frames, read_config(files.config))})
    np.testing.assert_allclose(out[0], edgeood.load(res.path)(frames).scores["energy"],
                               rtol=1e-5)
