"""The scoring head stays a few nodes once ONNX Runtime has optimised the graph (on a GPU each
node is a kernel launch). The budgets are the node-by-node counts docs/design/head-nodes.md
derives for each method (its formula's operations, plus the one shared p-value lookup and
decision); a change that adds nodes fails here."""
from __future__ import annotations

import onnx
import pytest

import edgeood
from edgeood.graph.head import find_head
from edgeood.graph.model import prepare, to_model
from edgeood.graph.taps import tapped
from edgeood.runtime.onnxruntime.node_count import added_nodes
from tests.helpers.methods import ALL_METHODS

# one method: its own nodes + LessOrEqual, Cast, ReduceMean (p-value) + GreaterOrEqual, Not
# (is_ood, NaN scores OOD)
ALONE = {"energy": 1, "maxlogit": 1, "msp": 2, "react": 3, "scale": 8, "featurenorm": 2}
DECISION_ONE, DECISION_STACKED = 5, 9  # stacked: Concat, Reshape, ..., Reshape, Split


def _classifier(model_path) -> bytes:
    graph = prepare(onnx.load(str(model_path)))
    return to_model(tapped(graph, [find_head(graph).logits])).SerializeToString()


@pytest.mark.parametrize("method", ALL_METHODS)
def test_each_method_alone(method, digits_model, digits_data, tmp_path):
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=[method],
                         recipe="digits_cnn", out=tmp_path / "d.onnx")
    count = added_nodes(str(res.path), _classifier(digits_model))
    assert count["added"] <= ALONE[method] + DECISION_ONE, count
    ops = count["by_op"]
    assert ops.get("LessOrEqual") == 1 and ops.get("GreaterOrEqual") == 1 and ops.get("Not") == 1, \
        count


def test_six_methods_share_one_lookup(lite0_model, lite0_photos, tmp_path):
    """EfficientNet-Lite0 (its FeatureNorm block is a Conv output: + one Relu)."""
    res = edgeood.export(lite0_model, data=lite0_photos[:32], methods=ALL_METHODS,
                         recipe="efficientnet_lite0", out=tmp_path / "d.onnx", batch=8)
    count = added_nodes(str(res.path), _classifier(lite0_model))
    budget = sum(ALONE.values()) + 1 + DECISION_STACKED
    assert count["added"] <= budget, count
    ops = count["by_op"]
    assert ops.get("LessOrEqual") == 1 and ops.get("Not") == 1 and ops.get("Split") == 1, ops


# the heavier heads on the digits CNN, counted when they were last cut (docs/design/head-nodes.md):
# WeiPer's projection + MSP + two histograms (compare-and-count on these short rows, the
# scatter form forced), AdaSCALE's input gradient + second pass + scoring tail
HEAVY = [("weiper_msp", {}, 12), ("weiper_kld", {}, 29),
         ("weiper_kld", {"histogram": "scatter"}, 37), ("adascale_a", {}, 132),
         ("adascale_l", {}, 131)]


@pytest.mark.parametrize("method,params,budget", HEAVY)
def test_heavier_heads_do_not_grow(method, params, budget, digits_model, digits_data, tmp_path):
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=[method],
                         recipe="digits_cnn", out=tmp_path / "d.onnx", params={method: params})
    count = added_nodes(str(res.path), _classifier(digits_model))
    assert count["added"] <= budget, count
