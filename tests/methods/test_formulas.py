"""Each method's NumPy reference against values worked out by hand, and the in-graph head
against the reference on random features (a head-only graph, no model)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from edgeood.graph.fold import build_scores
from edgeood.graph.head import find_head
from edgeood.graph.model import to_model
from edgeood.methods import ModelInfo, create
from edgeood.methods.featurenorm import feature_norm
from edgeood.methods.numeric import k_from_percentile
from edgeood.runtime.onnxruntime.backend import OrtBackend


def _head_graph(w, b, block_shape=None):
    """x (N x D) -> Relu = z -> Gemm(W, b) = logits; optionally a separate block input path."""
    x = gs.Variable("x", np.float32, ["batch", w.shape[1]])
    z = gs.Variable("z", np.float32)
    logits = gs.Variable("out", np.float32, ["batch", w.shape[0]])
    nodes = [gs.Node("Relu", inputs=[x], outputs=[z]),
             gs.Node("Gemm", inputs=[z, gs.Constant("W", w), gs.Constant("b", b)],
                     outputs=[logits], attrs={"transB": 1})]
    g = gs.Graph(nodes=nodes, inputs=[x], outputs=[logits], opset=17)
    return g


def test_hand_values():
    energy, msp, maxlogit = create("energy"), create("msp"), create("maxlogit")
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0], [1000.0, 0.0]])
    np.testing.assert_allclose(energy.reference({"logits": logits}), [np.log(2), np.log(4), 1000.0])
    np.testing.assert_allclose(msp.reference({"logits": logits}), [0.5, 0.75, 1.0])
    np.testing.assert_allclose(maxlogit.reference({"logits": logits}), [0.0, np.log(3.0), 1000.0])
    t2 = create("energy", {"temperature": 2.0})
    np.testing.assert_allclose(t2.reference({"logits": np.array([[2.0, 2.0]])}), [2 * (1 + np.log(2))])


def test_featurenorm_hand_value():
    f = np.zeros((1, 2, 2, 2))
    f[0, 0] = [[3.0, 0.0], [0.0, 4.0]]     # norm 5
    f[0, 1] = [[-1.0, -2.0], [0.0, 1.0]]   # relu -> norm 1
    assert feature_norm(f)[0] == pytest.approx(3.0)


def test_k_rounding_half_to_even():
    # D * p / 100 = 2.5 -> round to 2 (even), k = 5 - 2 = 3; 3.5 -> 4, k = 7 - 4 = 3
    assert k_from_percentile(5, 50) == 3
    assert k_from_percentile(7, 50) == 3
    assert k_from_percentile(2048, 85) == 2048 - 1741


def test_scale_and_react_heads_match_reference():
    rng = np.random.default_rng(0)
    c, d, n = 7, 40, 32
    w = rng.standard_normal((c, d)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    g = _head_graph(w, b)
    head = find_head(g)
    assert head.z == "z" and head.kind == "Gemm"
    np.testing.assert_array_equal(head.weight, w)
    methods = [create("scale", {"percentile": 80}), create("react")]
    for m in methods:
        m.bind(ModelInfo(head))
    methods[1].fitted["threshold_activation"] = 0.7
    build_scores(g, head, methods)
    x = rng.standard_normal((n, d)).astype(np.float32) * 2
    out = OrtBackend(to_model(g).SerializeToString()).run(x)
    z = np.maximum(x, 0).astype(np.float64)
    # written out here, independent of the package's references
    k = d - int(np.round(d * 0.8))
    s = np.exp(z.sum(1) / np.sort(z, 1)[:, ::-1][:, :k].sum(1))
    lg = (z * s[:, None]) @ w.T.astype(np.float64) + b
    np.testing.assert_allclose(out["score_scale"], np.log(np.exp(lg).sum(1)), rtol=1e-5)
    lg = np.minimum(z, 0.7) @ w.T.astype(np.float64) + b
    np.testing.assert_allclose(out["score_react"], np.log(np.exp(lg).sum(1)), rtol=1e-5)


def test_matmul_add_head_and_softmax_output():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 6)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    x = gs.Variable("x", np.float32, ["batch", 6])
    mm, logits, probs = gs.Variable("mm"), gs.Variable("lg"), gs.Variable("p", np.float32)
    nodes = [gs.Node("MatMul", inputs=[x, gs.Constant("Wt", w.T.copy())], outputs=[mm]),
             gs.Node("Add", inputs=[gs.Constant("b", b), mm], outputs=[logits]),
             gs.Node("Softmax", inputs=[logits], outputs=[probs], attrs={"axis": 1})]
    g = gs.Graph(nodes=nodes, inputs=[x], outputs=[probs], opset=17)
    head = find_head(g)
    assert (head.kind, head.z, head.logits) == ("MatMul", "x", "lg")
    np.testing.assert_allclose(head.weight, w)
    np.testing.assert_allclose(head.bias, b)
    m = create("scale")
    m.bind(ModelInfo(head))
    build_scores(g, head, [m])
    xv = rng.standard_normal((4, 6)).astype(np.float32)
    out = OrtBackend(to_model(g).SerializeToString()).run(xv)
    np.testing.assert_allclose(out["logits"], xv @ w.T + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["score_scale"], m.reference({"z": xv}), rtol=1e-5)
