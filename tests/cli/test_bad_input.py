"""Bad input: one line on stderr naming the problem and the fix, non-zero exit, no output."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from tests.helpers.cli import PROGRESS_LINE, cli


def _expect_error(tmp_path, args, needle, code=2):
    out = tmp_path / "out" / "det.onnx"
    out.parent.mkdir(exist_ok=True)
    proc = cli(*args, "--out", out, check=False)
    assert proc.returncode == code, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("warning: ")
             and not PROGRESS_LINE.fullmatch(ln)]  # finished stages before the failing one
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in lines[0], lines[0]
    assert list(out.parent.iterdir()) == [], "an output file was left behind"
    return lines[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, digits_data):
    d = tmp_path_factory.mktemp("bad")
    np.save(d / "val.npy", digits_data.val[0])
    return d


def test_corrupt_and_non_onnx_files(tmp_path, data_dir):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage-not-a-protobuf" * 10)
    _expect_error(tmp_path, ["export", bad, "--data", data_dir / "val.npy"], "not a readable ONNX")
    txt = tmp_path / "model.txt"
    txt.write_text("hello")
    _expect_error(tmp_path, ["export", txt, "--data", data_dir / "val.npy"], "ONNX")
    _expect_error(tmp_path, ["export", tmp_path / "missing.onnx"], "no such file")


def test_graph_without_classifier_head(tmp_path, data_dir):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 1, 1])
    g = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "nohead.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    _expect_error(tmp_path, ["export", path, "--data", data_dir / "val.npy", "--methods",
                             "energy", "--imgsz", "8"], "Gemm or MatMul")


def test_unknown_method_and_params(tmp_path, digits_model, data_dir):
    base = ["export", digits_model, "--data", data_dir / "val.npy", "--recipe", "digits_cnn"]
    msg = _expect_error(tmp_path, base + ["--methods", "energy,enrgy"], "unknown method 'enrgy'")
    assert "did you mean energy" in msg
    _expect_error(tmp_path, base + ["--methods", "react", "--param", "react.percentil=3"],
                  "did you mean percentile")
    _expect_error(tmp_path, base + ["--methods", "react", "--param", "react.percentile=abc"],
                  "is not a float")
    _expect_error(tmp_path, base + ["--methods", "react", "--param", "percentile"], "METHOD.NAME")
    _expect_error(tmp_path, base + ["--recipe", "digits_cn"], "did you mean digits_cnn")


def test_bad_data(tmp_path, digits_model, digits_data):
    base = ["export", digits_model, "--recipe", "digits_cnn", "--methods", "energy", "--data"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_error(tmp_path, base + [empty], "holds no images")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(25):
        Image.fromarray(digits_data.val[0][i, :, :, 0]).save(broken / f"{i}.png")
    (broken / "zz.png").write_bytes(b"not a png")
    _expect_error(tmp_path, base + [broken, "--strict"], "cannot read image")
    big = tmp_path / "big"
    big.mkdir()
    for i in range(25):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(big / f"{i}.png")
    _expect_error(tmp_path, base + [big], "is 16x16 but the model takes 8x8")
    rgb = tmp_path / "rgb.npy"
    np.save(rgb, np.zeros((30, 8, 8, 3), np.uint8))
    _expect_error(tmp_path, base + [rgb], "has 3 channels but the model takes 1")
    nan = tmp_path / "nan.npy"
    x = np.zeros((30, 1, 8, 8), np.float32)
    x[3, 0, 1, 1] = np.nan
    np.save(nan, x)
    _expect_error(tmp_path, base + [nan], "NaN or Inf")
    few = tmp_path / "few.npy"
    np.save(few, digits_data.val[0][:10])
    _expect_error(tmp_path, base + [few], "at least 20")
    _expect_error(tmp_path, base + [tmp_path / "nope"], "no such file or folder")


def test_few_images_warn_but_export(tmp_path, digits_model, digits_data):
    some = tmp_path / "some.npy"
    np.save(some, digits_data.val[0][:40])
    out = tmp_path / "d.onnx"
    proc = cli("export", digits_model, "--recipe", "digits_cnn", "--methods", "energy", "--data",
               some, "--out", out, "--quiet")
    assert "warning:" in proc.stderr and "100" in proc.stderr
    assert out.is_file()


def test_run_rejects_nan_and_wrong_channels(tmp_path, digits_detector):
    nan = tmp_path / "nan.npy"
    x = np.zeros((3, 1, 8, 8), np.float32)
    x[1, 0, 0, 0] = np.inf
    np.save(nan, x)
    proc = cli("run", digits_detector.path, nan, check=False)
    assert proc.returncode == 2 and "NaN or Inf" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 1, 9, 8), np.float32))
    proc = cli("run", digits_detector.path, wrong, check=False)
    assert proc.returncode == 2 and "shape" in proc.stderr


def test_recalibrate_failure_leaves_detector_untouched(tmp_path, digits_detector, digits_data):
    import shutil
    det = tmp_path / "d.onnx"
    shutil.copy(digits_detector.path, det)
    shutil.copy(str(digits_detector.path) + ".json", str(det) + ".json")
    before = det.read_bytes()
    few = tmp_path / "few.npy"
    np.save(few, digits_data.val[0][:5])
    proc = cli("calibrate", det, "--data", few, check=False)
    assert proc.returncode == 2 and "at least 20" in proc.stderr
    assert det.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx", "d.onnx.json", "few.npy"]
