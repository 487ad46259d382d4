"""Recalibrating a detector keeps GROOD's split-conformal guarantee whatever data it is given:
the images its bank was fitted on are left out of its threshold and p-value reference, so
recalibrating on the export's own data gives the export's thresholds back."""
from __future__ import annotations

import numpy as np
import pytest

import edgeood


@pytest.fixture(scope="module")
def exported(digits_model, digits_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    npz = folder / "id.npz"
    np.savez(npz, images=digits_data.val[0], labels=digits_data.val[1])
    res = edgeood.export(digits_model, data=npz, methods=["energy", "grood"],
                         recipe="digits_cnn", out=folder / "det.onnx")
    return npz, res


def test_recalibrating_on_the_fitting_data_gives_the_export_thresholds(exported, tmp_path):
    npz, res = exported
    again = edgeood.calibrate(res.path, npz, out=tmp_path / "again.onnx")
    for m, entry in res.metadata["methods"].items():
        assert again.metadata["methods"][m]["threshold"] == entry["threshold"], m
        assert again.metadata["methods"][m]["reference_size"] == entry["reference_size"], m
    n = len(np.load(npz)["images"])
    assert again.metadata["methods"]["grood"]["calibration_count"] == n - n // 2


def test_bank_members_left_out_of_new_data(exported, digits_data, tmp_path, capsys):
    """New data = the export's images + 100 others: GROOD calibrates on the export's held-out
    half plus the 100 new images; its threshold is the 5th percentile of exactly those scores."""
    npz, res = exported
    ids = digits_data.val[0]
    new = np.concatenate([ids, digits_data.test[0][:100]])
    out = edgeood.calibrate(res.path, new, out=tmp_path / "new.onnx")
    # the export's seeded split (seed 0, half held out), recomputed here
    n = len(ids)
    held = np.sort(np.random.default_rng(0).permutation(n)[:n // 2])
    keep = np.ones(len(new), bool)
    keep[np.setdiff1d(np.arange(n), held)] = False
    scores = edgeood.load(out.path)(new).scores["grood"]
    entry = out.metadata["methods"]["grood"]
    assert entry["calibration_count"] == int(keep.sum()) == n // 2 + 100
    assert entry["threshold"] == pytest.approx(
        float(np.percentile(scores[keep].astype(np.float64), 5.0)), rel=1e-6)
    assert f"{n - n // 2} of {len(new)} calibration images are images it was fitted on" \
        in capsys.readouterr().err
