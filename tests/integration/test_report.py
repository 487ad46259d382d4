"""Plots (edgeood eval --plot, edgeood.tools.report): the PNGs are read back and must hold drawn
content of a sensible size; eval with several detectors prints them side by side."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeood.cli.app import app
from tests.helpers.precision import PRECISIONS, comparison, digits

pytest.importorskip("matplotlib")


def _read_png(path):
    from PIL import Image
    img = np.asarray(Image.open(path).convert("RGB"), np.float64)
    return img


def _drawn(img: np.ndarray) -> float:
    """Fraction of pixels that are not the white background."""
    return float((img.min(axis=2) < 200).mean())


def test_write_plots_per_detector_and_overlay(tmp_path):
    from edgeood.tools.report import write_plots
    written = write_plots(comparison(), tmp_path,
                          methods=["energy", "featurenorm", "adascale_a", "weiper_kld"])
    names = {p.name for p in written}
    for lab in PRECISIONS:
        assert {f"histograms_{lab}.png", f"roc_{lab}.png"} <= names
    assert {"precision_overlay_near.png", "precision_overlay_far.png"} <= names
    for p in written:
        img = _read_png(p)
        assert img.shape[0] >= 200 and img.shape[1] >= 600, (p, img.shape)
        assert 0.03 < _drawn(img) < 0.6, (p, _drawn(img))
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # lines, fills and text


def test_roc_points_match_auroc():
    from edgeood.stats.metrics import auroc
    from edgeood.tools.report import roc_points
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    fpr, tpr = roc_points(a, b)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert abs(np.trapezoid(tpr, fpr) - auroc(a, b)) < 1e-9


def test_cli_eval_several_detectors_with_plots(tmp_path):
    data, _ = digits()
    idp, near = tmp_path / "id.npz", tmp_path / "near.npz"
    np.savez(idp, images=data.test[0][:80], labels=data.test[1][:80])
    np.savez(near, images=data.near[:120])
    import edgeood
    paths = [str(edgeood.export(digits()[1], data=data.val[0], methods=["energy", "react"],
                                recipe="digits_cnn", int8=p == "int8",
                                out=tmp_path / f"{p}.onnx").path) for p in ("float32", "int8")]
    r = CliRunner().invoke(app, ["eval", *paths, "--id", str(idp), "--ood", str(near),
                                 "--plot", str(tmp_path / "plots"), "-q"])
    assert r.exit_code == 0, r.output
    assert "AUROC float32" in r.output and "AUROC int8" in r.output and "drift int8" in r.output
    assert "own threshold" in r.output
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 5 and all(_drawn(_read_png(p)) > 0.03 for p in pngs)
    r1 = CliRunner().invoke(app, ["eval", paths[0], "--id", str(idp), "--ood", str(near), "-q"])
    assert r1.exit_code == 0 and "AUPR-in" in r1.output  # one detector: the table as before
