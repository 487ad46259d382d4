"""layer_energy: parity of the folded score with a NumPy reference written here, orientation and
selection on a constructed graph, --ood-val orientation, name validation, TensorRT limits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeood
from edgeood.errors import EdgeoodError
from edgeood.tensorrt.check import check_model
from edgeood.methods import method_class
from edgeood.methods.presentation import presentation
from edgeood.stats.metrics import auroc
from edgeood.runtime.onnxruntime.backend import OrtBackend
from tests.helpers import REPO
from tests.helpers.methods import fitted_methods, tap_dict

BLOCK1 = "/features/features.1/relu/Relu_output_0"


def lse(v: np.ndarray) -> np.ndarray:
    """logsumexp of every value of each row's tensor (float64, max-shifted)."""
    v = np.asarray(v, np.float64).reshape(len(v), -1)
    m = v.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(v - m).sum(axis=1, keepdims=True)))[:, 0]


@pytest.fixture(scope="module")
def le_detector(digits_model, digits_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("layer_energy") / "le.onnx"
    return edgeood.export(digits_model, data=digits_data.val[0], methods=["layer_energy", "energy"],
                          recipe="digits_cnn", out=out, keep_taps=True)


@pytest.fixture(scope="module")
def le_outputs(le_detector, digits_data):
    from edgeood.zoo import digits
    x = digits.PREPROCESS.normalize(np.concatenate([digits_data.test[0], digits_data.far[:100]]))
    return OrtBackend(le_detector.path).run(x)


def test_folded_score_equals_numpy_reference(le_detector, le_outputs):
    """score = mean_l s_l (logsumexp(F_l) - mu_l) / sigma_l over the kept layers, computed here
    from the kept block outputs and the saved statistics."""
    meta = le_detector.metadata
    entry = meta["methods"]["layer_energy"]
    stats, kept = entry["layer_stats"], entry["selected_layers"]
    assert len(kept) == min(3, len(stats)) and set(kept) <= set(stats)
    want = np.mean([stats[n]["sign"] * (lse(le_outputs[meta["taps"][n]]) - stats[n]["mu"])
                    / stats[n]["sigma"] for n in kept], axis=0)
    got = le_outputs["score_layer_energy"]
    assert got.dtype == np.float32
    err = np.abs(got - want).max() / max(1.0, np.abs(want).max())
    assert err <= 1e-4, err
    # the per-layer energies the graph computed (kept as a tap) are logsumexp of the blocks
    energies = le_outputs[meta["taps"]["layer_energy/energies"]]
    for j, n in enumerate(kept):
        e = lse(le_outputs[meta["taps"][n]])
        assert np.abs(energies[:, j] - e).max() <= 1e-4 * max(1.0, np.abs(e).max())


def test_statistics_are_those_of_the_calibration_images(le_detector, digits_data):
    """mu, sigma of E_l on the ID val images, signs and AUROCs against their jigsaws."""
    from edgeood.data import jigsaw
    from edgeood.zoo import digits
    meta = le_detector.metadata
    entry = meta["methods"]["layer_energy"]
    x = digits.PREPROCESS.normalize(digits_data.val[0])
    # calibrate feeds the jigsaw of each batch of 32 from one seeded generator
    rng = np.random.default_rng(meta["seed"])
    jig = np.concatenate([jigsaw(x[i:i + 32], rng, digits.PREPROCESS.zero_pixel())
                          for i in range(0, len(x), 32)])
    backend = OrtBackend(le_detector.path)
    out_id, out_jig = backend.run(x), backend.run(jig)
    assert entry["oriented_against"] == "jigsaw"
    assert entry["orientation_count"] == {"id": len(x), "jigsaw": len(x)}
    for n, st in entry["layer_stats"].items():
        e_id, e_jig = lse(out_id[meta["taps"][n]]), lse(out_jig[meta["taps"][n]])
        assert st["mu"] == pytest.approx(e_id.mean(), rel=1e-5, abs=1e-5)
        assert st["sigma"] == pytest.approx(e_id.std(), rel=1e-3, abs=1e-6)
        a = auroc(e_id, e_jig)
        assert st["sign"] == (1 if a >= 0.5 else -1)
        assert st["auroc"] == pytest.approx(max(a, 1 - a), abs=2e-3)


def test_round_trip_and_tables(le_detector, le_outputs, digits_model):
    meta = json.loads(Path(str(le_detector.path) + ".json").read_text())
    m = fitted_methods(digits_model, meta, le_detector.path)["layer_energy"]
    want = m.reference(tap_dict(le_outputs, meta))
    assert np.abs(le_outputs["score_layer_energy"] - want).max() <= 1e-4 * max(1, np.abs(want).max())
    entry = meta["methods"]["layer_energy"]
    cls = presentation(method_class("layer_energy"))
    assert cls.summary(entry).startswith(f"mean of {len(entry['selected_layers'])}/")
    _title, cols, rows = cls.detail_table(entry)
    assert cols[:3] == ["layer", "AUROC", "sign"] and len(rows) == len(entry["layer_stats"])
    assert {r[0] for r in rows if r[-1] == "yes"} == set(entry["selected_layers"])


def test_detector_within_tensorrt_limits(le_detector):
    assert check_model(onnx.load(str(le_detector.path))) == []


# --- orientation and selection on a constructed graph ---------------------------------------
def _toy_model() -> onnx.ModelProto:
    """x (N x 2 x 6 x 6) -> three 1x1 convs: 'up' = x[:, 0], 'down' = -x[:, 0], 'noise' =
    x[:, 1]; their concat -> GlobalAveragePool -> Flatten -> Gemm (3 classes)."""
    def conv(name, w):
        return helper.make_node("Conv", ["x", f"{name}_w"], [name], name=f"{name}_conv")
    ws = {"up": [1.0, 0.0], "down": [-1.0, 0.0], "noise": [0.0, 1.0]}
    inits = [numpy_helper.from_array(np.array(w, np.float32).reshape(1, 2, 1, 1), f"{n}_w")
             for n, w in ws.items()]
    inits.append(numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, 3))
                                         .astype(np.float32), "fc_w"))
    nodes = [conv(n, w) for n, w in ws.items()] + [
        helper.make_node("Concat", list(ws), ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["z"]),
        helper.make_node("Gemm", ["z", "fc_w"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _toy_data(n: int, shift: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, 6, 6)).astype(np.float32)
    x[:, 0] += shift
    return x


@pytest.mark.parametrize("m", [2, 1])
def test_orientation_and_selection_on_a_constructed_graph(m, tmp_path):
    """ID has channel 0 high, the OOD validation set has it low: 'up' energy is higher for ID
    (sign +1), 'down' (= -channel 0) is higher for OOD (sign -1), 'noise' does not separate.
    m = 2 keeps up and down; m = 1 keeps 'up' (both separate perfectly: the earlier layer)."""
    ident, ood = _toy_data(64, 1.5, 0), _toy_data(48, -1.5, 1)
    res = edgeood.export(_toy_model(), data=ident, ood_val=ood, methods=["layer_energy"],
                         params={"layer_energy": {"layers": "noise,down,up", "m": m}},
                         out=tmp_path / "toy.onnx", keep_taps=True)
    entry = res.metadata["methods"]["layer_energy"]
    st = entry["layer_stats"]
    assert entry["oriented_against"] == "ood"
    assert entry["orientation_count"] == {"id": 64, "ood": 48}
    assert (st["up"]["sign"], st["down"]["sign"]) == (1, -1)
    assert st["up"]["auroc"] == st["down"]["auroc"] == 1.0
    assert st["noise"]["auroc"] < 0.75
    assert list(st) == ["up", "down", "noise"]  # layer order = graph order, not the param's
    assert entry["selected_layers"] == (["up", "down"] if m == 2 else ["up"])
    out = OrtBackend(res.path).run(np.concatenate([ident, ood]))
    s = out["score_layer_energy"]
    assert auroc(s[:64], s[64:]) == 1.0  # oriented: ID above OOD
    want = np.mean([st[n]["sign"] * (lse(out[res.metadata["taps"][n]]) - st[n]["mu"])
                    / st[n]["sigma"] for n in entry["selected_layers"]], axis=0)
    assert np.abs(s - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_ood_val_images_orient_instead_of_jigsaw(digits_model, digits_data, le_detector,
                                                 tmp_path):
    """With --ood-val the AUROCs and signs are measured against those images (metadata says
    "ood"); the ID statistics do not change."""
    from edgeood.zoo import digits
    ood = digits_data.far[:120]
    res = edgeood.export(digits_model, data=digits_data.val[0], ood_val=ood,
                         methods=["layer_energy"], recipe="digits_cnn", out=tmp_path / "o.onnx")
    entry = res.metadata["methods"]["layer_energy"]
    assert entry["oriented_against"] == "ood"
    assert entry["orientation_count"] == {"id": len(digits_data.val[0]), "ood": 120}
    backend = OrtBackend(le_detector.path)  # its kept taps give the block outputs
    taps = le_detector.metadata["taps"]
    out_id = backend.run(digits.PREPROCESS.normalize(digits_data.val[0]))
    out_ood = backend.run(digits.PREPROCESS.normalize(ood))
    jig_entry = le_detector.metadata["methods"]["layer_energy"]
    for n, st in entry["layer_stats"].items():
        a = auroc(lse(out_id[taps[n]]), lse(out_ood[taps[n]]))
        assert st["sign"] == (1 if a >= 0.5 else -1)
        assert st["auroc"] == pytest.approx(max(a, 1 - a), abs=2e-3)
        assert st["mu"] == jig_entry["layer_stats"][n]["mu"]


def test_layers_and_m_from_a_recipe(digits_model, digits_data, tmp_path):
    """A recipe's [methods.layer_energy] sets the candidate layers and m; m above the number of
    layers is a recorded warning."""
    base = REPO / "export_recipes" / "digits_cnn.toml"
    text = base.read_text() + f'\n[methods.layer_energy]\nlayers = ["{BLOCK1}", "z"]\nm = 5\n'
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["layer_energy"],
                         recipe=recipe, out=tmp_path / "r.onnx")
    entry = res.metadata["methods"]["layer_energy"]
    assert list(entry["layer_stats"]) == [BLOCK1, "z"]
    assert entry["selected_layers"] == [BLOCK1, "z"]
    assert entry["warnings"] == [("layer_energy: m = 5 but there are only 2 candidate layers; "
                                  "all 2 are averaged")]


@pytest.mark.parametrize("params, needle", [
    ({"layers": "/features/features.1/relu/Relu_output_O"},
     ("layer_energy layer '/features/features.1/relu/Relu_output_O' is not a tensor of the "
      f"graph (did you mean {BLOCK1}")),
    ({"m": 0}, "layer_energy.m=0 must be >= 1"),
    ({"layers": f"{BLOCK1},{BLOCK1}"}, "lists"),
])
def test_bad_parameters_are_one_line_errors(params, needle, digits_model, digits_data, tmp_path):
    with pytest.raises(EdgeoodError) as err:
        edgeood.export(digits_model, data=digits_data.val[0], methods=["layer_energy"],
                       recipe="digits_cnn", params={"layer_energy": params},
                       out=tmp_path / "bad.onnx")
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
