"""An unreadable file in a folder: export, calibrate, run, eval and watch skip it with one
warning line naming it and a count, the calibration entry records the images used and
skipped; --strict (strict=True from Python) stops at it as before."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import edgeood
from edgeood.artifact.metadata import read_metadata
from edgeood.errors import EdgeoodError
from edgeood.tools.evaluate import evaluate
from tests.helpers.cli import cli

N_GOOD = 30


@pytest.fixture(scope="module")
def broken(tmp_path_factory, digits_data):
    """30 readable digit images and one text file named .png."""
    d = tmp_path_factory.mktemp("broken")
    for i in range(N_GOOD):
        Image.fromarray(digits_data.val[0][i, :, :, 0]).save(d / f"{i:02d}.png")
    (d / "zz.png").write_bytes(b"not a png")
    return d


def _skip_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "skipping" in ln and "zz.png" in ln]


def test_export_skips_and_records_the_count(tmp_path, digits_model, broken, digits_data):
    out = tmp_path / "det.onnx"
    proc = cli("export", digits_model, "--recipe", "digits_cnn", "--methods", "energy",
               "--data", broken, "--out", out, "--quiet")
    assert len(_skip_lines(proc.stderr)) == 1, proc.stderr
    assert "1 of 31 images skipped" in proc.stderr
    cal = read_metadata(out)["calibration"]
    assert cal["count"] == N_GOOD and cal["skipped"] == 1
    assert f"calibrated on {N_GOOD} images" in proc.stdout and "1 unreadable skipped" in proc.stdout
    # the thresholds are those of the 30 readable images alone
    ref = edgeood.export(digits_model, data=digits_data.val[0][:N_GOOD], methods=["energy"],
                         recipe="digits_cnn", out=tmp_path / "ref.onnx")
    assert read_metadata(out)["methods"]["energy"]["threshold"] == pytest.approx(
        ref.metadata["methods"]["energy"]["threshold"], rel=1e-6)
    # calibrate: the same, and --strict stops with one line and leaves no file
    re_out = tmp_path / "re.onnx"
    proc = cli("calibrate", out, "--data", broken, "--out", re_out, "--quiet")
    assert len(_skip_lines(proc.stderr)) == 1
    assert read_metadata(re_out)["calibration"]["skipped"] == 1
    strict_out = tmp_path / "strict.onnx"
    proc = cli("calibrate", out, "--data", broken, "--out", strict_out, "--strict", check=False)
    assert proc.returncode == 2 and "cannot read image" in proc.stderr
    assert not strict_out.exists()


def test_run_eval_watch_skip_unless_strict(digits_detector, broken, digits_data, tmp_path):
    det = digits_detector.path
    proc = cli("run", det, broken, "--json")
    rows = json.loads(proc.stdout)["images"]
    assert len(rows) == N_GOOD and not any("zz.png" in r["source"] for r in rows)
    assert len(_skip_lines(proc.stderr)) == 1
    proc = cli("run", det, broken, "--strict", check=False)
    assert proc.returncode == 2 and "cannot read image" in proc.stderr
    far = tmp_path / "far.npy"
    np.save(far, digits_data.far[:50])
    proc = cli("eval", det, "--id", broken, "--ood", far, "--json")
    assert json.loads(proc.stdout)["id_count"] == N_GOOD
    proc = cli("eval", det, "--id", broken, "--ood", far, "--strict", check=False)
    assert proc.returncode == 2 and "cannot read image" in proc.stderr
    proc = cli("watch", det, broken, "--json")
    frames = [json.loads(ln) for ln in proc.stdout.splitlines()][:-1]
    assert len(frames) == N_GOOD
    proc = cli("watch", det, broken, "--strict", check=False)
    assert proc.returncode == 2 and "cannot read image" in proc.stderr


def test_python_api_takes_strict(digits_detector, broken, digits_data, tmp_path):
    det = edgeood.load(digits_detector.path)
    assert len(det(broken)) == N_GOOD
    with pytest.raises(EdgeoodError, match="cannot read image"):
        det(broken, strict=True)
    with pytest.raises(EdgeoodError, match="cannot read image"):
        evaluate(det, broken, {"far": digits_data.far[:50]}, strict=True)
    with pytest.raises(EdgeoodError, match="cannot read image"):
        edgeood.calibrate(digits_detector.path, broken, strict=True, out=tmp_path / "c.onnx")
    assert not (tmp_path / "c.onnx").exists()
