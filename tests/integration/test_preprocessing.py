"""Preprocessing is never silent (issue 23): --mean/--std/--scale/--resize on the CLI as in the
API, mean/std read from the model (metadata_props, a normalisation layer at its input, a torch
module's attributes), the preprocessing and where it came from in the export summary and the
metadata, and the classifier's sanity check on the calibration images, which warns when the
classifier looks like chance (a wrong mean/std)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy import stats

import edgeood
from edgeood.errors import EdgeoodError
from edgeood.pipeline.preprocessing import SANITY_CONFIDENCE, from_module
from tests.helpers.cli import cli

DIGITS_MEAN, DIGITS_STD = 0.3, 0.4  # export_recipes/digits_cnn.toml
LITE0_MEAN, LITE0_STD = 0.498039, 0.501961  # export_recipes/efficientnet_lite0.toml
CHANCE = "looks like chance"


# --- models and data built here ---------------------------------------------------------------
def _prepend(model_path, out, nodes, new_input, inits=()):
    """A copy of the model whose input `input` is computed from `new_input` by `nodes`."""
    m = onnx.load(str(model_path))
    old = m.graph.input[0]
    assert old.name == "input"
    m.graph.input.remove(old)
    m.graph.input.insert(0, new_input)
    for n in reversed(nodes):
        m.graph.node.insert(0, n)
    m.graph.initializer.extend(inits)
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


def raw_rgb_digits(digits_model, out):
    """The digits CNN behind a 1x1 Conv that averages RGB and applies the digits normalisation
    to raw 0-255 pixels: its right preprocessing is --scale 255 (no mean/std), not ImageNet's,
    and nothing at its input says so (no Sub/Div)."""
    w = np.full((1, 3, 1, 1), 1.0 / (3 * 255.0 * DIGITS_STD), np.float32)
    b = np.array([-DIGITS_MEAN / DIGITS_STD], np.float32)
    inp = helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["batch", 3, 8, 8])
    conv = helper.make_node("Conv", ["rgb", "gray_w", "gray_b"], ["input"], kernel_shape=[1, 1])
    return _prepend(digits_model, out, [conv], inp,
                    [numpy_helper.from_array(w, "gray_w"), numpy_helper.from_array(b, "gray_b")])


def normalising_digits(digits_model, out, units: float = 1.0):
    """The digits CNN with its own normalisation layer (x - mean) / std at the input, in 0-1
    (units 1) or 0-255 (units 255) pixel units."""
    inp = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 1, 8, 8])
    sub = helper.make_node("Sub", ["pixels", "norm_mean"], ["centred"])
    div = helper.make_node("Div", ["centred", "norm_std"], ["input"])
    consts = [numpy_helper.from_array(np.full((1, 1, 1, 1), v * units, np.float32), n)
              for n, v in (("norm_mean", DIGITS_MEAN), ("norm_std", DIGITS_STD))]
    return _prepend(digits_model, out, [sub, div], inp, consts)


def with_props(digits_model, out, props: dict[str, str]):
    m = onnx.load(str(digits_model))
    helper.set_model_props(m, props)
    onnx.save(m, str(out))
    return out


@pytest.fixture(scope="module")
def digits_npz(digits_data, tmp_path_factory):
    images, labels = digits_data.val
    path = tmp_path_factory.mktemp("pre") / "id.npz"
    np.savez(path, images=images, labels=labels)
    return path


@pytest.fixture(scope="module")
def rgb_npz(digits_data, tmp_path_factory):
    images, labels = digits_data.val
    path = tmp_path_factory.mktemp("pre") / "rgb.npz"
    np.savez(path, images=np.repeat(images, 3, axis=-1), labels=labels)
    return path


def _logits(model_path, x):
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _chance_not_ruled_out(correct: int, n: int, chance: float) -> bool:
    """scipy's one-sided binomial test: P(X >= correct) under chance above 1 - confidence."""
    return stats.binom.sf(correct - 1, n, chance) > 1 - SANITY_CONFIDENCE


# --- the sanity check: fires with the wrong preprocessing, not with the right one -------------
def test_sanity_warning_fires_with_the_imagenet_default_and_not_with_the_right_scale(
        digits_model, rgb_npz, digits_data, tmp_path):
    model = raw_rgb_digits(digits_model, tmp_path / "raw_rgb.onnx")
    images, labels = digits_data.val
    rgb = np.repeat(images, 3, axis=-1)
    n, classes = len(labels), 6
    chance = max(1 / classes, np.bincount(labels).max() / n)

    wrong = cli("export", model, "--data", rgb_npz, "--methods", "energy", "--out",
                tmp_path / "wrong.onnx", "--quiet")
    # what the default feeds the model, computed here: ImageNet mean/std after pixel / 255
    x = (rgb / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    acc = (_logits(model, x.transpose(0, 3, 1, 2).astype(np.float32)).argmax(1) == labels).mean()
    assert _chance_not_ruled_out(round(acc * n), n, chance)  # the reference says chance
    assert "(from: default ImageNet: pass --mean/--std if your model was trained otherwise)" \
        in wrong.stdout
    assert f"accuracy {100 * acc:.1f}% (labels from the labels array)" in wrong.stdout
    assert CHANCE in wrong.stderr and "--mean/--std/--scale/--recipe" in wrong.stderr
    meta = edgeood.load(tmp_path / "wrong.onnx").metadata
    check = meta["calibration"]["classifier"]
    assert check["suspicious"] and check["accuracy"] == pytest.approx(acc)
    assert check["chance_p_value"] == pytest.approx(stats.binom.sf(round(acc * n) - 1, n,
                                                                   chance), rel=1e-9)

    for flags in (["--scale", "255"], ["--scale", "255", "--mean", "0,0,0", "--std", "1,1,1"],
                  ["--mean", "0", "--std", str(1 / 255)]):
        right = cli("export", model, "--data", rgb_npz, "--methods", "energy", "--out",
                    tmp_path / "right.onnx", "--quiet", *flags)
        x = rgb.transpose(0, 3, 1, 2).astype(np.float32)
        acc = (_logits(model, x).argmax(1) == labels).mean()
        assert not _chance_not_ruled_out(round(acc * n), n, chance)
        assert f"accuracy {100 * acc:.1f}%" in right.stdout, flags
        assert CHANCE not in right.stderr, (flags, right.stderr)
        check = edgeood.load(tmp_path / "right.onnx").metadata["calibration"]["classifier"]
        assert not check["suspicious"]


def test_sanity_warning_with_deliberately_wrong_mean_std_on_the_digits_cnn(
        digits_model, digits_npz, digits_data, tmp_path):
    """The 1-channel digits CNN with its recipe's mean/std given in 0-255 units (76.5, 102) but
    without --scale 255: every input is nearly the same constant, the classifier answers one
    class (chance) and the warning names the options; with --scale 255 it passes."""
    images, labels = digits_data.val
    n = len(labels)
    chance = max(1 / 6, np.bincount(labels).max() / n)
    runs = {"forgot": [], "scaled": ["--scale", "255"]}
    for name, extra in runs.items():
        res = cli("export", digits_model, "--data", digits_npz, "--methods", "energy", "--out",
                  tmp_path / f"{name}.onnx", "--mean", "76.5", "--std", "102", "--quiet", *extra)
        units = 255.0 if extra else 1.0
        x = ((images / 255.0 - 76.5 / units) / (102 / units)).transpose(0, 3, 1, 2)
        correct = int((_logits(digits_model, x.astype(np.float32)).argmax(1) == labels).sum())
        check = edgeood.load(tmp_path / f"{name}.onnx").metadata["calibration"]["classifier"]
        assert check["accuracy"] == pytest.approx(correct / n)
        expect = _chance_not_ruled_out(correct, n, chance)
        assert expect == (name == "forgot")  # what the reference test says of the two runs
        assert check["suspicious"] == expect == (CHANCE in res.stderr), (name, res.stderr)
        if expect:
            assert "--mean/--std/--scale/--recipe" in res.stderr


def test_labels_that_are_not_the_models_classes_are_not_used(digits_model, digits_data,
                                                            tmp_path):
    """2 class folders for a 6-class model (folder order is not the model's class order), or
    .npz labels out of range: the accuracy is not judged, so no false warning."""
    from PIL import Image
    images, labels = digits_data.val
    folder = tmp_path / "two"
    for i in np.flatnonzero(labels < 2):
        (folder / f"class_{'ab'[labels[i]]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i, :, :, 0]).save(folder / f"class_{'ab'[labels[i]]}" / f"{i}.png")
    res = cli("export", digits_model, "--data", folder, "--methods", "energy", "--recipe",
              "digits_cnn", "--out", tmp_path / "f.onnx", "--quiet")
    assert "labels not used: 2 class folders for 6 classes" in res.stdout
    assert CHANCE not in res.stderr
    npz = tmp_path / "off.npz"
    np.savez(npz, images=images, labels=labels + 6)
    res = edgeood.export(digits_model, data=npz, methods=["energy"], recipe="digits_cnn",
                         out=tmp_path / "o.onnx")
    check = res.metadata["calibration"]["classifier"]
    assert "accuracy" not in check and "not class indices 0-5" in check["labels_ignored"]
    assert not check["suspicious"]


def test_lite0_without_its_recipe_vs_its_mean_std_as_options(lite0_model, lite0_photos, tmp_path):
    """EfficientNet-Lite0 (TF-Lite's 0.5/0.5) on 48 unlabelled photos: the ImageNet default is
    printed as such and gives a lower mean max-softmax than the right mean/std. Without labels
    the check asks whether the max-softmax's expected accuracy is above chance (1/1000) at
    99.9% with 48 images: both are (measured: 0.357 vs 0.383), so neither warns: on this model
    the wrong mean/std shows in the printed figure, not as chance."""
    data = tmp_path / "photos.npy"
    np.save(data, lite0_photos)
    runs = {}
    for name, flags in (("default", []), ("right", ["--mean", f"{LITE0_MEAN}", "--std",
                                                    f"{LITE0_STD}"])):
        res = cli("export", lite0_model, "--data", data, "--methods", "energy", "--out",
                  tmp_path / f"{name}.onnx", "--quiet", "--batch", 16, *flags)
        runs[name] = (res, edgeood.load(tmp_path / f"{name}.onnx").metadata)
    for name, mean, std in (("default", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
                            ("right", [LITE0_MEAN] * 3, [LITE0_STD] * 3)):
        res, meta = runs[name]
        from edgeood.data import Preprocess
        pre = Preprocess(size=(224, 224), channels=3, mean=mean, std=std)
        msp = _softmax(_logits(lite0_model, pre.normalize(lite0_photos)).astype(np.float64))
        msp = msp.max(1)
        check = meta["calibration"]["classifier"]
        assert check["mean_max_softmax"] == pytest.approx(msp.mean(), abs=1e-5)
        assert f"mean max-softmax {msp.mean():.3f} (no labels" in res.stdout
        hits = round(msp.sum())  # a calibrated classifier's expected correct answers
        assert check["chance_p_value"] == pytest.approx(stats.binom.sf(hits - 1, len(msp),
                                                                       1 / 1000), abs=1e-12)
        assert not check["suspicious"] and CHANCE not in res.stderr
    assert "from: default ImageNet" in runs["default"][0].stdout
    assert "(from: --mean/--std)" in runs["right"][0].stdout
    assert runs["right"][1]["calibration"]["classifier"]["mean_max_softmax"] > \
        runs["default"][1]["calibration"]["classifier"]["mean_max_softmax"]


def test_unlabelled_check_flags_a_uniform_softmax_and_a_collapse():
    from edgeood.pipeline.preprocessing import classifier_check
    rng = np.random.default_rng(0)
    flat = rng.normal(0, 1e-3, (200, 10))  # near-uniform softmax: mean max-softmax ~ 1/10
    assert classifier_check(flat, None)["suspicious"]
    one = np.zeros((200, 10))
    one[:, 3] = 8.0  # confident, but every image the same class
    check = classifier_check(one, None)
    assert check["suspicious"] and "class 3" in check["reasons"][-1]
    sharp = rng.normal(0, 1, (200, 10))
    sharp[np.arange(200), rng.integers(0, 10, 200)] += 6.0
    assert not classifier_check(sharp, None)["suspicious"]


# --- the model says how it wants its pixels ---------------------------------------------------
@pytest.mark.parametrize("props, source", [
    ({"mean": "0.3", "std": "0.4"}, "model metadata (mean, std)"),
    ({"Image_Mean": "[76.5]", "Image_Std": "[102.0]"}, "model metadata (Image_Mean, Image_Std)"),
    ({"preprocessing": json.dumps({"norm_mean": [0.3], "norm_std": [0.4]})},
     "model metadata (preprocessing.norm_mean, preprocessing.norm_std)"),
])
def test_mean_std_read_from_onnx_metadata_props(digits_model, digits_npz, tmp_path, props,
                                                source):
    model = with_props(digits_model, tmp_path / "props.onnx", props)
    res = cli("export", model, "--data", digits_npz, "--methods", "energy", "--out",
              tmp_path / "d.onnx", "--quiet")
    pre = edgeood.load(tmp_path / "d.onnx").metadata["preprocessing"]
    assert pre["mean"] == pytest.approx([DIGITS_MEAN]) and pre["std"] == pytest.approx(
        [DIGITS_STD])
    assert pre["source"] == source and f"(from: {source})" in res.stdout
    # options beat the model
    res = edgeood.export(model, data=digits_npz, methods=["energy"], mean=[0.5], std=[0.5],
                         out=tmp_path / "e.onnx")
    assert list(res.metadata["preprocessing"]["mean"]) == [0.5]
    assert res.metadata["preprocessing"]["source"] == "mean/std"


@pytest.mark.parametrize("units, std", [(1.0, 1.0), (255.0, 1 / 255)])
def test_normalisation_layer_at_the_input_means_the_host_only_scales(
        digits_model, digits_npz, digits_data, tmp_path, units, std):
    model = normalising_digits(digits_model, tmp_path / "norm.onnx", units)
    res = edgeood.export(model, data=digits_npz, methods=["energy"], out=tmp_path / "n.onnx")
    pre = res.metadata["preprocessing"]
    assert list(pre["mean"]) == [0.0] and pre["std"] == pytest.approx([std])
    assert pre["source"].startswith("model graph: it normalises its input itself (Sub, Div")
    assert pre["units"] == int(units)
    # the detector scores what the digits CNN with its recipe scores
    ref = edgeood.export(digits_model, data=digits_npz, methods=["energy"],
                         recipe="digits_cnn", out=tmp_path / "r.onnx")
    images = digits_data.val[0]
    got = edgeood.load(res.path)(images)
    want = edgeood.load(ref.path)(images)
    np.testing.assert_allclose(got.scores["energy"], want.scores["energy"], rtol=1e-4,
                               atol=1e-4)
    # the recipe beats the model
    rec = edgeood.export(model, data=digits_npz, methods=["energy"], recipe="digits_cnn",
                         out=tmp_path / "x.onnx")
    assert rec.metadata["preprocessing"]["source"] == "recipe digits_cnn"


class _HFConfig:
    """A Hugging Face image-processor config as it sits on a model (plain attributes)."""
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.25, 0.25, 0.25)


class _Model:
    config = _HFConfig()


def test_module_attributes_read_without_torch():
    found = from_module(_Model(), 3)
    assert found.mean == (0.5,) * 3 and found.std == (0.25,) * 3
    assert found.source == "module attributes (config.image_mean, config.image_std)"
    timm_like = type("M", (), {"pretrained_cfg": {"mean": (123.675, 116.28, 103.53),
                                                  "std": (58.395, 57.12, 57.375)}})()
    found = from_module(timm_like, 3)
    assert found.mean == pytest.approx((0.485, 0.456, 0.406))
    assert found.std == pytest.approx((0.229, 0.224, 0.225))
    assert from_module(object(), 3) is None


def test_torch_module_mean_std_attributes(rgb_npz, tmp_path):
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mean, self.std = (DIGITS_MEAN,) * 3, (DIGITS_STD,) * 3
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 6)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    torch.manual_seed(0)
    res = edgeood.export(Tiny(), data=rgb_npz, methods=["energy"], imgsz=8,
                         out=tmp_path / "t.onnx")
    pre = res.metadata["preprocessing"]
    assert pre["mean"] == pytest.approx([DIGITS_MEAN] * 3)
    assert pre["std"] == pytest.approx([DIGITS_STD] * 3)
    assert pre["source"] == "module attributes (mean, std)"


# --- the CLI flags are the API's keywords -----------------------------------------------------
@pytest.mark.parametrize("flags, kwargs", [
    (["--mean", "0.3", "--std", "0.4", "--no-resize"],
     {"mean": [0.3], "std": [0.4], "resize": False}),
    (["--scale", "255", "--mean", "76.5", "--std", "102"],
     {"scale": 255, "mean": (76.5,), "std": (102,)}),
    (["--scale", "255"], {"scale": 255}),
])
def test_cli_flags_equal_api_keywords(digits_model, digits_npz, tmp_path, flags, kwargs):
    cli("export", digits_model, "--data", digits_npz, "--methods", "energy", "--out",
        tmp_path / "cli.onnx", "--quiet", *flags)
    api = edgeood.export(digits_model, data=digits_npz, methods=["energy"],
                         out=tmp_path / "api.onnx", **kwargs)
    got = edgeood.load(tmp_path / "cli.onnx").metadata["preprocessing"]
    want = edgeood.load(api.path).metadata["preprocessing"]
    assert got.pop("source") == want.pop("source").replace("mean", "--mean").replace(
        "std", "--std").replace("scale", "--scale")
    assert got == want
    if "scale" in kwargs:
        assert got["units"] == 255 and got["scale"] == "pixel / 255" and got["std"] == pytest.approx(
            [kwargs.get("std", (1,))[0] / 255])


def test_export_summary_prints_the_preprocessing(digits_model, digits_npz, tmp_path):
    res = cli("export", digits_model, "--data", digits_npz, "--methods", "energy", "--out",
              tmp_path / "d.onnx", "--recipe", "digits_cnn")
    lines = res.stdout.splitlines()
    assert "preprocessing: mean 0.3 std 0.4 (after pixel / 255) 8x8 images (no resize) GRAY " \
           "(from: recipe digits_cnn)" in lines
    assert any(line.startswith("classifier on the calibration images: mean max-softmax ")
               for line in lines)
    res = cli("export", digits_model, "--out", tmp_path / "n.onnx", "--methods", "energy")
    assert "preprocessing: mean 0.5 std 0.5 (after pixel / 255) resize 8x8 GRAY (from: default "\
           "0.5: pass --mean/--std if your model was trained otherwise)" in res.stdout


@pytest.mark.parametrize("flags, text", [
    (["--scale", "2"], "--scale 2.0 must be 1 (pixel / 255) or 255 (raw 0-255 pixels)"),
    (["--mean", "a,b"], "--mean 'a,b' must be numbers, one per channel or one for all"),
    (["--mean", "0.1,0.2"], "--mean [0.1, 0.2] has 2 values but the model takes 1 channel"),
    (["--std", "0"], "--std must be > 0"),
])
def test_bad_preprocessing_options_are_one_line(digits_model, digits_npz, tmp_path, flags,
                                                text):
    out = tmp_path / "bad.onnx"
    res = cli("export", digits_model, "--data", digits_npz, "--out", out, *flags, check=False)
    assert res.returncode == 2 and not out.exists()
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {text}"), res.stderr
    with pytest.raises(EdgeoodError):
        edgeood.export(digits_model, data=digits_npz, out=out,
                       **{f[2:]: v for f, v in zip(flags[::2], flags[1::2])})
