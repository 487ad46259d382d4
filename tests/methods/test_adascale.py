"""AdaSCALE: the folded score against a reference built from torch.autograd (gradient),
NumPy (least-|g| mask, ECDF, percentile, scaling) and torch (the perturbed second pass)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
import pytest

import edgeood
from edgeood.graph.model import to_model
from edgeood.methods import ModelInfo, create
from edgeood.methods.adascale import least_mask, least_mask_reference
from edgeood.runtime.onnxruntime.backend import OrtBackend

torch = pytest.importorskip("torch", reason="torch is not installed (the AdaSCALE references "
                            "are built with torch.autograd)")
from tests.helpers.adascale import torch_adascale  # noqa: E402


def _q_reference(path, name):
    m = onnx.load(str(path))
    init = {i.name: i for i in m.graph.initializer}
    return onnx.numpy_helper.to_array(init[f"{name}/q_reference"])


@pytest.mark.parametrize("name,params", [
    ("adascale_a", {}), ("adascale_l", {}),
    # n = 3 over the 64 inputs: limit 1 forces the n > limit paths, TopK rounds and the search
    ("adascale_a", {"topk_limit": 1}), ("adascale_a", {"topk_limit": 1, "selection": "search"})])
def test_digits_adascale_matches_torch_reference(name, params, digits_data, tmp_path):
    from edgeood.zoo import digits
    net = digits.train_cnn(digits_data, seed=0, epochs=3)
    res = edgeood.export(net, data=digits_data.val[0], methods=[name], recipe="digits_cnn",
                         out=tmp_path / "a.onnx", params={name: params})
    m = create(name, {k: v for k, v in res.metadata["methods"][name].items()
                      if k in create(name).defaults})
    from edgeood.graph.head import ClassifierHead
    w = net.fc.weight.detach().numpy()
    b = net.fc.bias.detach().numpy()
    m.bind(ModelInfo(ClassifierHead("z", "logits", w, b, "Gemm")))
    m.fitted["q_reference"] = _q_reference(res.path, name)
    x = digits.PREPROCESS.normalize(np.concatenate([digits_data.test[0][:40], digits_data.near[:40]]))
    got = edgeood.load(res.path)(x).scores[name]
    feats = lambda t: torch.flatten(net.pool(net.features(t)), 1)  # noqa: E731
    want = torch_adascale(net, feats, x, m, w, b)
    scale = max(1.0, np.abs(want).max())
    assert np.abs(got - want).max() / scale <= 1e-4


def test_least_mask_paths_agree_with_numpy():
    """One unsorted TopK (limit 0, the default), the multi-round path (small limit), the
    threshold-search path and NumPy's stable argsort, with many ties."""
    import onnx_graphsurgeon as gs
    rng = np.random.default_rng(0)
    v = rng.integers(0, 6, size=(3, 50)).astype(np.float32)  # heavy ties
    outs = {}
    for limit, selection in ((0, "topk"), (50, "topk"), (7, "topk"), (1, "topk"), (0, "search"),
                             (7, "search"), (1, "search"), (50, "search")):
        x = gs.Variable("v", np.float32, ["n", 50])
        graph = gs.Graph(inputs=[x], opset=17)
        mask = least_mask(graph, x, 23, limit, selection)
        mask.name, mask.dtype = "mask", np.float32
        graph.outputs = [mask]
        outs[limit, selection] = OrtBackend(to_model(graph).SerializeToString()).run(v)["mask"]
    want = least_mask_reference(v, 23)
    for limit, got in outs.items():
        np.testing.assert_array_equal(got, want, err_msg=f"limit {limit}")


@pytest.fixture(scope="module")
def lite0_adascale(lite0_model, lite0_photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("ada") / "lite0_ada.onnx"
    return edgeood.export(lite0_model, data=lite0_photos[:24], methods=["adascale_a", "adascale_l"],
                          recipe="efficientnet_lite0", out=out, batch=8)


def test_lite0_adascale_matches_torch_reference(lite0_adascale, lite0_photos):
    """n = int(3 * 224 * 224 * 0.05) = 7526 >= 3840: one TopK of n here, rounds on the
    TensorRT copy (test_tensorrt_copy_scores_the_same)."""
    from edgeood.graph.head import ClassifierHead
    from edgeood.zoo import efficientnet_lite0 as lite0
    res = lite0_adascale
    det = edgeood.load(res.path)
    x = det.preprocess.normalize(lite0_photos[24:30])
    out = det(x)
    net = lite0.module()
    w = net._fc.weight.detach().numpy()
    b = net._fc.bias.detach().numpy()
    for name in ("adascale_a", "adascale_l"):
        m = create(name, {k: v for k, v in res.metadata["methods"][name].items()
                          if k in create(name).defaults})
        m.bind(ModelInfo(ClassifierHead("z", "logits", w, b, "Gemm")))
        m.fitted["q_reference"] = _q_reference(res.path, name)
        feats = lambda t: net.extract_features(t).mean(dim=(2, 3))  # noqa: E731
        want = torch_adascale(net, feats, x, m, w, b)
        got = out.scores[name]
        scale = max(1.0, np.abs(want).max())
        assert np.abs(got - want).max() / scale <= 1e-4, (got, want)


def test_tensorrt_copy_scores_the_same(lite0_adascale, lite0_photos):
    """The TensorRT copy (least-|g| set as TopK rounds of 3839 + 3687) selects the same set as
    the detector's one TopK of 7526, so every output is identical under ONNX Runtime."""
    import onnxruntime as ort
    from edgeood.tensorrt.rewrite import tensorrt_model
    det = edgeood.load(lite0_adascale.path)
    x = det.preprocess.normalize(lite0_photos[30:34])
    model = onnx.load(str(lite0_adascale.path))
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})
    got = ort.InferenceSession(tensorrt_model(model).SerializeToString()).run(None, {"input": x})
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


def test_adascale_graph_within_tensorrt_limits(lite0_adascale):
    """The detector selects the least-|g| set with one unsorted TopK of n = 7526 (ONNX
    Runtime); the copy every TensorRT path parses has it as sorted rounds of <= 3839 and is
    within the parser's limits."""
    from edgeood.tensorrt.check import check_model
    from edgeood.tensorrt.rewrite import tensorrt_model
    model = onnx.load(str(lite0_adascale.path))

    def topk_ks(m):
        consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t)
                       for n in m.graph.node if n.op_type == "Constant"})
        return sorted(int(consts[n.input[1]].ravel()[0]) for n in m.graph.node
                      if n.op_type == "TopK")
    assert topk_ks(model).count(7526) == 2  # one per variant
    trt = tensorrt_model(model)
    assert check_model(trt) == []
    ks = topk_ks(trt)
    # per variant: the least-|g| rounds 3839 + 3687, top-k of z for Q' and of relu(z)
    assert ks.count(3839) == 2 and ks.count(7526 - 3839) == 2 and max(ks) <= 3839
    assert all(a.i == 1 for n in trt.graph.node if n.op_type == "TopK"
               for a in n.attribute if a.name == "sorted")
    assert not any(n.op_type == "MaxPool" and len(n.output) > 1 for n in model.graph.node)


def test_tune_against_user_ood_set(digits_model, digits_data, tmp_path):
    """With OOD validation images, p_max maximises AUROC against them (checked by recomputing
    the AUROC of every grid value with the reference on the folded detectors)."""
    from edgeood.stats.metrics import auroc
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["adascale_a"],
                         recipe="digits_cnn", params={"adascale_a": {"tune": True}},
                         tune_ood=digits_data.far[:150], out=tmp_path / "t.onnx")
    tuning = res.metadata["methods"]["adascale_a"]["tuning"]
    assert tuning["against"] == "ood"
    grid = {float(k): v for k, v in tuning["grid"].items()}
    # each grid value's AUROC, measured on detectors exported with that p_max
    measured = {}
    for p_max in (min(grid), tuning["p_max"], max(grid)):
        r = edgeood.export(digits_model, data=digits_data.val[0], methods=["adascale_a"],
                           recipe="digits_cnn", params={"adascale_a": {"p_max": p_max}},
                           out=tmp_path / f"p{p_max:g}.onnx")
        det = edgeood.load(r.path)
        measured[p_max] = auroc(det(digits_data.val[0]).scores["adascale_a"],
                                det(digits_data.far[:150]).scores["adascale_a"])
        assert measured[p_max] == pytest.approx(grid[p_max], abs=0.01)
    assert measured[tuning["p_max"]] >= max(measured.values()) - 0.01
