"""eval across detectors and its plots: drift only between variants of one source model, and
one colour per data set in every figure."""
from __future__ import annotations

import matplotlib
import numpy as np

import edgeood
from edgeood.tools import report as report_mod
from edgeood.tools.evaluate import evaluate_many

matplotlib.use("Agg")


def test_unrelated_detectors_get_no_drift(digits_data, digits_model, tmp_path):
    from edgeood.zoo import digits
    other = digits.shipped_model(regularised=True)  # another source model, same input
    a = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy"],
                       recipe="digits_cnn", out=tmp_path / "a.onnx")
    b = edgeood.export(other, data=digits_data.val[0], methods=["energy"],
                       recipe="digits_cnn", out=tmp_path / "b.onnx")
    assert a.metadata["source"]["sha256"] != b.metadata["source"]["sha256"]
    out = evaluate_many([a.path, b.path], digits_data.test[0], {"near": digits_data.near})
    assert out["same_source"] is False
    assert all(v is None for row in out["comparison"] for v in row["auroc_drift"])
    assert all(None not in row["auroc"] for row in out["comparison"])
    same = evaluate_many([a.path, a.path], digits_data.test[0], {"near": digits_data.near})
    assert same["same_source"] is True
    assert [row["auroc_drift"] for row in same["comparison"]] == [[0.0, 0.0]]


def test_a_data_set_has_one_colour_in_histograms_and_roc(monkeypatch, tmp_path):
    figures = []
    monkeypatch.setattr(report_mod, "_save", lambda fig, plt, path: figures.append(fig) or path)
    rng = np.random.default_rng(0)
    scores = {"id": {"energy": rng.normal(1, 1, 200)},
              "near": {"energy": rng.normal(0, 1, 200)},
              "far": {"energy": rng.normal(-1, 1, 200)}}
    report_mod.histograms(scores, {"energy": 0.0}, tmp_path / "h.png", "h")
    report_mod.roc_curves(scores, tmp_path / "r.png", "r")
    hist_ax, roc_ax = figures[0].axes[0], figures[1].axes[0]
    hist = {p.get_label(): matplotlib.colors.to_hex(p.get_edgecolor())
            for p in hist_ax.patches if p.get_label() in ("near", "far")}
    roc = {line.get_label().split(" ")[0]: matplotlib.colors.to_hex(line.get_color())
           for line in roc_ax.lines if line.get_label().split(" ")[0] in ("near", "far")}
    assert hist == roc and len(set(hist.values())) == 2
