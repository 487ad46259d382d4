"""--input uint8: camera frames straight into the graph (cast, resize, normalise, transpose).

At the model's size the uint8 path equals the host preprocessing path to 1e-4 on every method's
score; where the graph resizes, the host path of such a detector uses the same rule
(half_pixel_linear, edgeood/resize.py) and they agree to 1e-3."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edgeood
from edgeood.methods import registry
from edgeood.data import ImageSource
from edgeood.errors import EdgeoodError
from edgeood.graph.preprocess import entry_point
from edgeood.resize import HALF_PIXEL_LINEAR, PIL_BILINEAR, half_pixel_linear
from tests.helpers.deploy import bgr_detector, photo_frames

EVERY_METHOD = list(registry())  # every method, built-in or installed


def _close(a: np.ndarray, b: np.ndarray, tol: float) -> float:
    """max |a - b| relative to max(1, |b|)."""
    err = float(np.abs(np.asarray(a, np.float64) - b).max() / max(1.0, float(np.abs(b).max())))
    assert err <= tol, err
    return err


@pytest.fixture(scope="module")
def digits_pair(digits_model, digits_data, tmp_path_factory):
    """Every method on the digits CNN, exported twice from the same data: float input only,
    and with the uint8 image input."""
    d = tmp_path_factory.mktemp("uint8")
    val = ImageSource("digits-val", array=digits_data.val[0], labels=digits_data.val[1])
    kw = {"data": val, "methods": EVERY_METHOD, "recipe": "digits_cnn"}
    return (edgeood.export(digits_model, out=d / "float.onnx", **kw),
            edgeood.export(digits_model, out=d / "uint8.onnx", input="uint8", **kw))


def test_frames_at_model_size_equal_host_path_on_every_method(digits_pair, digits_data,
                                                               tmp_path):
    plain, u8 = digits_pair
    frames = np.concatenate([digits_data.test[0], digits_data.near[:100], digits_data.far[:100]])
    det, ref = edgeood.load(u8.path), edgeood.load(plain.path)
    assert det.backend.image_input == "image"
    got = det(frames)                                    # uint8 frames into the graph
    host = det(det.preprocess.normalize(frames))         # host preprocessing, float input
    want = ref(frames)                                   # the float-only detector
    assert set(got.scores) == set(EVERY_METHOD)
    for m in EVERY_METHOD:
        _close(got.scores[m], host.scores[m], 1e-4)
        _close(got.scores[m], want.scores[m], 1e-4)
        np.testing.assert_allclose(got.pvalues[m], want.pvalues[m], atol=1e-6)
        assert u8.metadata["methods"][m]["threshold"] == plain.metadata["methods"][m]["threshold"]
    np.testing.assert_array_equal(got.is_ood, want.is_ood)
    np.testing.assert_array_equal(got.labels, want.labels)
    # a list of frames and a folder of PNGs take the same path
    np.testing.assert_allclose(det(list(frames[:7])).scores["energy"], got.scores["energy"][:7])
    from PIL import Image
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, f in enumerate(frames[:5]):
        Image.fromarray(f[:, :, 0]).save(folder / f"{i}.png")
    np.testing.assert_allclose(det(str(folder)).scores["grood"], got.scores["grood"][:5])


def test_metadata_io_and_single_entry_copies(digits_pair, digits_data, tmp_path):
    plain, u8 = digits_pair
    assert plain.metadata["preprocessing"]["resize_rule"] == PIL_BILINEAR
    assert "image" not in plain.metadata["input"]
    meta = json.loads((u8.path.parent / (u8.path.name + ".json")).read_text())
    assert meta["input"]["name"] == "input" and meta["input"]["dtype"] == "float32"
    image = meta["input"]["image"]
    assert image["name"] == "image" and image["dtype"] == "uint8" and image["layout"] == "NHWC"
    assert image["shape"] == ["batch", 8, 8, 1]            # digits: resize=false, fixed size
    assert meta["preprocessing"]["resize_rule"] == HALF_PIXEL_LINEAR
    assert meta["preprocessing"]["in_graph"] == "image"
    assert [i["name"] for i in meta["io"]["inputs"]] == ["input", "image"]
    assert [o["name"] for o in meta["io"]["outputs"]] == meta["outputs"]
    model = onnx.load(str(u8.path))
    frames = digits_data.test[0][:9]
    full = edgeood.load(u8.path)(frames)
    for which, feed in (("image", frames),
                        ("float", edgeood.load(u8.path).preprocess.normalize(frames))):
        single = entry_point(model, which)
        (inp,) = single.graph.input
        assert inp.name == ("image" if which == "image" else "input")
        assert json.loads({p.key: p.value for p in single.metadata_props}["edgeood"])["entry"] \
            == which
        out = ort.InferenceSession(single.SerializeToString()).run(["score_energy", "is_ood"],
                                                                   {inp.name: feed})
        np.testing.assert_allclose(out[0], full.scores["energy"], rtol=1e-6)
        np.testing.assert_array_equal(out[1], full.is_ood)
    from edgeood.tensorrt.check import check_model
    from edgeood.tensorrt.rewrite import tensorrt_model
    assert check_model(tensorrt_model(model)) == []  # as TensorRT paths hand it over
    # a saved single-entry detector (what a one-input engine is built from) runs as it is
    from edgeood.graph.preprocess import save_entry_point
    path = save_entry_point(u8.path, "image", tmp_path / "frames_only.onnx")
    assert (tmp_path / "frames_only.onnx.json").is_file()
    alone = edgeood.load(path)(frames)
    np.testing.assert_allclose(alone.scores["grood"], full.scores["grood"], rtol=1e-6)


def test_graph_resize_follows_the_host_rule(digits_model, digits_data, tmp_path):
    """No recipe: the digits CNN with resize allowed; frames of other sizes are resized in the
    graph (ONNX Resize linear, half_pixel) and on the host by the same rule."""
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy", "react",
                                                                         "featurenorm"],
                         mean=[0.3], std=[0.4], out=tmp_path / "r.onnx", input="uint8")
    det = edgeood.load(res.path)
    pre = det.preprocess
    assert pre.resize and pre.resize_rule == HALF_PIXEL_LINEAR
    assert res.metadata["input"]["image"]["shape"] == ["batch", "image_height", "image_width", 1]
    from PIL import Image
    src = digits_data.test[0][:24, :, :, 0]
    for h, w in ((13, 11), (5, 6), (8, 8), (31, 17)):     # down, up, same, mixed
        frames = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.NEAREST))
                           for f in src])[..., None]
        got = det(frames)
        host = det(pre.normalize(np.stack([pre.fit_image(f) for f in frames])))
        for m in got.scores:
            _close(got.scores[m], host.scores[m], 1e-3)
    # the rule is ONNX's: one Resize node run by ONNX Runtime equals the NumPy rule
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 37, 23)).astype(np.float32)
    node = onnx.helper.make_node("Resize", ["x", "", "", "s"], ["y"], mode="linear",
                                 coordinate_transformation_mode="half_pixel")
    g = onnx.helper.make_graph([node], "r", [onnx.helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, x.shape)], [onnx.helper.make_tensor_value_info(
            "y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.array([1, 3, 16, 41], np.int64), "s")])
    y = ort.InferenceSession(onnx.helper.make_model(g, opset_imports=[
        onnx.helper.make_opsetid("", 17)]).SerializeToString()).run(None, {"x": x})[0]
    want = half_pixel_linear(x[0].transpose(1, 2, 0), (16, 41)).transpose(2, 0, 1)
    np.testing.assert_allclose(y[0], want, atol=1e-3)
    # ... and it is not PIL's antialiased bilinear, the rule of float-only detectors
    from edgeood.resize import pil_bilinear
    img = (x[0].transpose(1, 2, 0)).astype(np.uint8)
    assert np.abs(pil_bilinear(img, (16, 11), 3).astype(np.float32)
                  - half_pixel_linear(img, (16, 11))).max() > 5


def test_camera_sized_rgb_frames_on_a_bgr_model(tmp_path):
    """A 3-channel BGR model with per-channel std (tests/helpers/deploy.py): 64 x 48 RGB camera
    frames are resized, flipped to BGR and normalised in the graph like on the host."""
    res = bgr_detector(tmp_path)
    det = edgeood.load(res.path)
    pre = det.preprocess
    assert pre.color == "BGR" and len(set(pre.std)) == 3
    frames = np.stack([np.asarray(__import__("PIL.Image").Image.fromarray(f).resize((64, 48)))
                       for f in photo_frames(12, 96, seed=3)])
    got = det(frames)
    host = det(pre.normalize(np.stack([pre.fit_image(f) for f in frames])))
    for m in got.scores:
        _close(got.scores[m], host.scores[m], 1e-3)
    np.testing.assert_array_equal(got.is_ood, host.is_ood)
    same = photo_frames(6, 16, seed=4)                   # at the model's size: 1e-4
    for m, s in det(same).scores.items():
        _close(s, det(pre.normalize(same)).scores[m], 1e-4)


def test_recalibrate_keeps_the_image_input(digits_pair, digits_data, tmp_path):
    _, u8 = digits_pair
    path = tmp_path / "again.onnx"
    again = edgeood.calibrate(u8.path, digits_data.val[0], out=path)
    assert again.metadata["preprocessing"]["resize_rule"] == HALF_PIXEL_LINEAR
    assert [i.name for i in onnx.load(str(path)).graph.input][:2] == ["input", "image"]
    r = edgeood.load(path)(digits_data.test[0][:5])
    assert r.is_ood is not None and set(r.scores) == set(EVERY_METHOD)


def test_input_option_checked_up_front(digits_model, tmp_path):
    with pytest.raises(EdgeoodError) as err:
        edgeood.export(digits_model, methods=["energy"], out=tmp_path / "x.onnx", input="unit8")
    assert str(err.value).startswith("input unit8 must be one of float, uint8")
    assert "did you mean uint8" in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_fixed_batch_model_is_refused_in_one_line(digits_model, digits_data, tmp_path):
    m = onnx.load(str(digits_model))
    for t in list(m.graph.input) + list(m.graph.output):
        t.type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(m, str(tmp_path / "fixed.onnx"))
    # the option in the caller's words: input= from Python, --input on the command line
    with pytest.raises(EdgeoodError, match="^input uint8 needs a dynamic batch axis"):
        edgeood.export(tmp_path / "fixed.onnx", data=digits_data.val[0], methods=["energy"],
                       recipe="digits_cnn", out=tmp_path / "f.onnx", input="uint8")
    assert not (tmp_path / "f.onnx").exists()
    from tests.helpers.cli import cli
    np.save(tmp_path / "val.npy", digits_data.val[0])
    proc = cli("export", tmp_path / "fixed.onnx", "--data", tmp_path / "val.npy", "--recipe",
               "digits_cnn", "--methods", "energy", "--out", tmp_path / "f.onnx", "--input",
               "uint8", check=False)
    assert proc.returncode == 2 and "--input uint8 needs a dynamic batch axis" in proc.stderr
    assert not (tmp_path / "f.onnx").exists()


def test_cli_export_input_uint8(digits_model, digits_data, tmp_path):
    from tests.helpers.cli import cli
    np.save(tmp_path / "val.npy", digits_data.val[0])
    out = json.loads(cli("export", digits_model, "--data", tmp_path / "val.npy", "--recipe",
                         "digits_cnn", "--methods", "energy,msp", "--input", "uint8", "--out",
                         tmp_path / "det.onnx", "--json").stdout)
    assert out["metadata"]["input"]["image"]["dtype"] == "uint8"
    bad = cli("export", digits_model, "--methods", "energy", "--input", "rgb", check=False)
    assert bad.returncode == 2 and "--input rgb must be one of float, uint8" in bad.stderr
