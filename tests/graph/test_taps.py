"""Head finding, block candidates, missing taps, jigsaw, nn.Module export."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgeood
from edgeood.data import Preprocess, jigsaw
from edgeood.errors import EdgeoodError
from edgeood.graph.head import find_head
from edgeood.graph.model import prepare
from edgeood.graph.taps import find_block_candidates, resolve


def test_digits_candidates_are_stage_outputs(digits_model):
    g = prepare(onnx.load(str(digits_model)))
    head = find_head(g)
    cands = find_block_candidates(g, head)
    shapes = [g.tensors()[c].shape[2:] for c in cands]
    assert shapes == [[8, 8], [4, 4], [2, 2]]
    assert head.num_classes == 6 and head.feature_dim == 128


def test_lite0_auto_candidates_include_recipe_stage_outputs(lite0_model):
    from edgeood.pipeline.recipes import load_recipe
    g = prepare(onnx.load(str(lite0_model)))
    cands = set(find_block_candidates(g, find_head(g)))
    recipe = load_recipe("efficientnet_lite0")
    adds = [b for b in recipe.taps["blocks"] if b.endswith("Add_output_0")]
    assert set(adds) <= cands
    assert "/_swish_1/Clip_output_0" in cands
    for name in cands:  # no tensor inside a stride-1 block's padding path
        assert "static_padding" not in name


def test_missing_tap_lists_nearest_names(digits_model):
    g = prepare(onnx.load(str(digits_model)))
    with pytest.raises(EdgeoodError) as e:
        resolve(g, "/features/features.6/relu/Relu_outpt_0")
    msg = str(e.value)
    assert "nearest names" in msg and "/features/features.6/relu/Relu_output_0" in msg
    assert "\n" not in msg


def test_jigsaw_equals_pixel_space_jigsaw_then_normalize():
    pre = Preprocess(size=(10, 11), channels=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    pix = np.random.default_rng(0).integers(0, 256, (3, 10, 11, 3)).astype(np.uint8)
    got = jigsaw(pre.normalize(pix), np.random.default_rng(5), pre.zero_pixel())
    # pixel-space jigsaw written out independently
    rng = np.random.default_rng(5)
    want = np.zeros_like(pix)
    th, tw = 10 // 3, 11 // 3
    for i in range(3):
        perm = rng.permutation(9)
        for dst in range(9):
            r, c = divmod(dst, 3)
            sr, sc = divmod(int(perm[dst]), 3)
            want[i, r * th:(r + 1) * th, c * tw:(c + 1) * tw] = \
                pix[i, sr * th:(sr + 1) * th, sc * tw:(sc + 1) * tw]
    np.testing.assert_allclose(got, pre.normalize(want), atol=1e-6)
    assert not np.allclose(got, pre.normalize(pix))


def test_export_from_torch_module(tmp_path, digits_data):
    from edgeood.zoo import digits
    torch = pytest.importorskip("torch",
                                reason="torch is not installed (the source is an nn.Module)")
    torch.manual_seed(0)
    net = digits.build_cnn().eval()
    res = edgeood.export(net, data=digits_data.val[0][:40], methods=["energy", "react"],
                         recipe="digits_cnn", out=tmp_path / "m.onnx")
    det = edgeood.load(res.path)
    x = digits.PREPROCESS.normalize(digits_data.test[0][:5])
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(det(x).logits, logits, rtol=1e-4, atol=1e-5)
    assert res.metadata["source"]["name"] == "DigitsCNN"
    m = onnx.load(str(res.path))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch kept
