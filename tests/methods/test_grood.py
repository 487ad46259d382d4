"""GROOD: the closed-form gradient against autograd, the folded score and label against NumPy,
the mix-up OOD prototype against PyTorch, bank reduction sizes, the label / --ood-val rules, and
TensorRT's parser limits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgeood
from edgeood.data import ImageSource
from edgeood.errors import EdgeoodError
from edgeood.artifact.metadata import read_constants
from edgeood.methods.grood import Grood, kmeans, ood_gradient, reduce_bank
from edgeood.runtime.onnxruntime.backend import OrtBackend
from edgeood.zoo import digits
from tests.helpers.methods import fitted_methods, tap_dict

BLOCK4 = "/features/features.4/relu/Relu_output_0"  # Residual(64): 64 x 4 x 4


def labelled(data) -> ImageSource:
    return ImageSource("digits-val", array=data.val[0], labels=data.val[1])


def fitting_part(data, seed: int = 0):
    """The val images grood fits on (the other half sets its threshold: split calibration)."""
    from edgeood.pipeline.export import holdout_split
    fit, _ = holdout_split(len(data.val[0]), Grood.calibration_holdout, seed)
    return data.val[0][fit], data.val[1][fit]


@pytest.fixture(scope="module")
def grood_full(digits_model, digits_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("grood") / "grood.onnx"
    return edgeood.export(digits_model, data=labelled(digits_data), methods=["grood"],
                          recipe="digits_cnn", out=out, keep_taps=True)


def test_closed_form_gradient_equals_autograd():
    """d CE(s, y) / d p_ood = pi_ood (z - p_ood) / ||z - p_ood|| for every y != OOD index."""
    import torch
    rng = np.random.default_rng(0)
    for trial in range(5):
        k, d = int(rng.integers(2, 8)), int(rng.integers(3, 20))
        z, protos, p_ood = rng.normal(size=(1, d)), rng.normal(size=(k, d)), rng.normal(size=d)
        for y in range(k):  # every class label (not the OOD index k)
            zt = torch.tensor(z)
            pt = torch.tensor(np.vstack([protos, p_ood]), requires_grad=True)
            s = -torch.linalg.norm(zt - pt, dim=1)
            loss = torch.nn.functional.cross_entropy(s[None], torch.tensor([y]))
            (grad,) = torch.autograd.grad(loss, pt)
            np.testing.assert_allclose(ood_gradient(z, protos, p_ood)[0], grad[k].numpy(),
                                       rtol=1e-10, atol=1e-12)


def test_folded_score_and_label_equal_numpy(grood_full, digits_model, digits_data):
    meta = json.loads(Path(str(grood_full.path) + ".json").read_text())
    entry = meta["methods"]["grood"]
    assert entry["selected_mix_block"] == BLOCK4  # the candidate nearest half the depth of z
    assert meta["fit"]["labels"] == "given"
    backend = OrtBackend(grood_full.path)
    x = digits.PREPROCESS.normalize(np.concatenate([digits_data.test[0], digits_data.near[:200],
                                                    digits_data.far[:200]]))
    out = backend.run(x)
    # 1. the method rebuilt from the saved metadata + constants (its reference())
    m = fitted_methods(digits_model, meta, grood_full.path)["grood"]
    taps = tap_dict(out, meta)
    want = m.reference(taps)
    scale = max(1.0, np.abs(want).max())
    assert np.abs(out["score_grood"] - want).max() / scale <= 1e-4
    # 2. independent NumPy from the saved constants, by broadcasting (no expansion)
    c = read_constants(grood_full.path, ("grood/",))
    protos, p_ood = c["grood/prototypes"].astype(np.float64), c["grood/ood_prototype"][0]
    bank = c["grood/bank"].astype(np.float64)
    z = out["tap_z"].astype(np.float64)
    dist = np.linalg.norm(z[:, None, :] - protos[None], axis=2)
    d_ood = np.linalg.norm(z - p_ood, axis=1)
    s = -np.concatenate([dist, d_ood[:, None]], axis=1)
    pi = np.exp(s - s.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    g = pi[:, -1:] * (z - p_ood) / d_ood[:, None]
    score = -((g[:, None, :] - bank[None]) ** 2).sum(2).min(1)
    assert np.abs(out["score_grood"] - score).max() / scale <= 1e-4
    np.testing.assert_array_equal(out["grood_label"], c["grood/class_ids"][dist.argmin(1)])
    assert out["grood_label"].dtype == np.int64
    # the fitted statistics themselves: prototypes = class means of all calibration z, the bank
    # = g of the correctly classified ones, ||G||^2 = the bank's squared norms
    xf, yc = fitting_part(digits_data)
    cal = backend.run(digits.PREPROCESS.normalize(xf))
    zc = cal["tap_z"].astype(np.float64)
    np.testing.assert_allclose(protos, [zc[yc == k].mean(0) for k in range(6)], rtol=1e-5,
                               atol=1e-5)
    ok = cal["logits"].argmax(1) == yc
    assert len(bank) == entry["correct_count"] == ok.sum()
    np.testing.assert_allclose(bank, ood_gradient(zc[ok], protos, p_ood), atol=1e-6)
    np.testing.assert_allclose(c["grood/bank_sq_norms"][0], (bank ** 2).sum(1), rtol=1e-6)


def test_mixup_prototype_equals_pytorch(digits_data, tmp_path):
    """p_ood from the cut ONNX subgraph (run by ONNX Runtime in the calibration graph) equals
    the same mix-up in PyTorch on a freshly trained digits CNN."""
    import torch
    net = digits.train_cnn(digits_data, seed=0, epochs=1)
    res = edgeood.export(net, data=labelled(digits_data), methods=["grood"],
                         recipe="digits_cnn", out=tmp_path / "t.onnx",
                         params={"grood": {"mix_block": BLOCK4, "mix_lambda": 0.3}})
    assert res.metadata["methods"]["grood"]["selected_mix_block"] == BLOCK4
    p_ood = read_constants(res.path, ("grood/",))["grood/ood_prototype"][0]
    xf, yf = fitting_part(digits_data)
    x = torch.from_numpy(digits.PREPROCESS.normalize(xf))
    y = torch.from_numpy(yf).long()
    feats = net.features
    with torch.no_grad():
        a = feats[:5](x)                       # block e: the output of features[4]
        logits = net(x)
        means = torch.stack([a[y == c].double().mean(0) for c in range(6)]).float()
        c2 = logits.topk(2, dim=1).indices[:, 1]
        a_mix = 0.3 * a + 0.7 * means[c2]
        z_mix = torch.flatten(net.pool(feats[5:](a_mix)), 1)
    np.testing.assert_allclose(p_ood, z_mix.double().mean(0).numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("how", ["random", "kmeans"])
def test_bank_reduction_size_is_what_the_metadata_reports(how, grood_full, digits_model,
                                                          digits_data, tmp_path):
    res = edgeood.export(digits_model, data=labelled(digits_data), methods=["grood"],
                         recipe="digits_cnn", out=tmp_path / f"{how}.onnx",
                         params={"grood": {"bank_size": 20, "bank_reduce": how}})
    entry = res.metadata["methods"]["grood"]
    c = read_constants(res.path, ("grood/",))
    assert c["grood/bank"].shape == (20, 128) and entry["bank_entries"] == 20
    assert entry["bank_reduction"] == how
    assert c["grood/bank"].nbytes + c["grood/bank_sq_norms"].nbytes == entry["bank_bytes"] \
        == 20 * 128 * 4 + 20 * 4
    assert sum(c[f"grood/{k}"].nbytes for k in entry["graph_arrays"]) == entry["constant_bytes"]
    full = read_constants(grood_full.path, ("grood/",))["grood/bank"]
    if how == "random":  # a subset of the full bank's rows
        assert all((np.abs(full - row).max(1) == 0).any() for row in c["grood/bank"])
    else:  # k-means centres from the full bank, deterministic for a seed
        again = reduce_bank(full.astype(np.float64), 20, "kmeans", 0, 10)
        np.testing.assert_array_equal(again, reduce_bank(full.astype(np.float64), 20, "kmeans",
                                                         0, 10))
        np.testing.assert_allclose(c["grood/bank"], again, rtol=1e-5, atol=1e-9)
        assert not np.array_equal(kmeans(full, 20, seed=1), kmeans(full, 20, seed=0))


def test_unlabelled_data_uses_predictions_and_data_prototype_needs_ood_val(
        digits_model, digits_data, tmp_path, capsys):
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["grood"],
                         recipe="digits_cnn", out=tmp_path / "p.onnx")
    assert res.metadata["fit"]["labels"] == "predictions"
    assert "predictions stand in" in capsys.readouterr().err
    with pytest.raises(EdgeoodError) as err:
        edgeood.export(digits_model, data=labelled(digits_data), methods=["grood"],
                       recipe="digits_cnn", out=tmp_path / "d.onnx",
                       params={"grood": {"ood_prototype": "data"}})
    assert "--ood-val" in str(err.value) and "\n" not in str(err.value)
    # with --ood-val: p_ood is the mean z of those images
    far = digits_data.far[:60]
    ok = edgeood.export(digits_model, data=labelled(digits_data), methods=["grood"],
                        recipe="digits_cnn", out=tmp_path / "o.onnx", keep_taps=True,
                        ood_val=far, params={"grood": {"ood_prototype": "data"}})
    z = OrtBackend(ok.path).run(digits.PREPROCESS.normalize(far))["tap_z"].astype(np.float64)
    p_ood = read_constants(ok.path, ("grood/",))["grood/ood_prototype"][0]
    np.testing.assert_allclose(p_ood, z.mean(0), rtol=1e-5, atol=1e-6)
    assert ok.metadata["methods"]["grood"]["ood_prototype_count"] == 60


def test_jigsaw_prototype_fits(digits_model, digits_data, tmp_path):
    res = edgeood.export(digits_model, data=labelled(digits_data), methods=["grood"],
                         recipe="digits_cnn", out=tmp_path / "j.onnx",
                         params={"grood": {"ood_prototype": "jigsaw"}})
    entry = res.metadata["methods"]["grood"]
    assert entry["ood_prototype_count"] == len(fitting_part(digits_data)[0])
    assert entry["calibration_count"] == len(digits_data.val[0]) - entry["ood_prototype_count"]
    assert entry["selected_mix_block"] == ""


def test_detector_within_tensorrt_limits_and_separates(grood_full, digits_data):
    from edgeood.tensorrt.check import check_model
    from edgeood.stats.metrics import auroc
    assert check_model(onnx.load(str(grood_full.path))) == []
    b = OrtBackend(grood_full.path)
    s_id = b.run(digits.PREPROCESS.normalize(digits_data.test[0]))["score_grood"]
    s_near = b.run(digits.PREPROCESS.normalize(digits_data.near))["score_grood"]
    assert auroc(s_id, s_near) > 0.9


def test_split_calibration_keeps_the_false_alarm_rate(digits_model, digits_data, tmp_path):
    """grood's threshold comes from the half of the ID images it did not fit on, so its ID
    test false-alarm rate stays within the beta-binomial 99.9% interval for that many
    calibration images (with the bank's own images it measured 35% at a 5% target)."""
    from edgeood.stats.metrics import false_alarm_rate
    from tests.helpers.stats import false_alarm_interval
    res = edgeood.export(digits_model, data=labelled(digits_data), methods=["grood"],
                         recipe="digits_cnn", out=tmp_path / "s.onnx")
    entry = res.metadata["methods"]["grood"]
    det = edgeood.load(res.path)
    rate = false_alarm_rate(det(digits_data.test[0]).scores["grood"], entry["threshold"])
    lo, hi = false_alarm_interval(entry["calibration_count"], len(digits_data.test[0]))
    assert lo <= rate <= hi, (rate, lo, hi)
