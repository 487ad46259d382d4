"""The TensorRT-ready copy of a detector: ReduceLogSumExp max-shifted, TopK sorted and split
into rounds of <= 3839 (checked against NumPy's stable argsort, heavy ties included).

TensorRT's parser imports ReduceLogSumExp as log(reduce_sum(exp(x))) (onnx-tensorrt,
importReduceLogSumExp). TensorRT is not installable here, so that import is emulated with
ONNX's reference evaluator (an unshifted float32 ReduceLogSumExp): the original node overflows
on large logits, the rewritten graph does not and equals ONNX Runtime's own (shifted) result
and the float64 formula.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

import edgeood
from edgeood.tensorrt.rewrite import needs_rewrite, tensorrt_model, tensorrt_ready


class ReduceLogSumExp(OpRun):  # named as the op it replaces in the evaluator
    """onnx-tensorrt's import of the node: exp, reduce-sum, log, in float32."""

    op_domain = ""

    def _run(self, data, axes=None, keepdims=1, noop_with_empty_axes=0):
        axes = tuple(np.asarray(axes if axes is not None else self.axes).ravel().tolist())
        with np.errstate(over="ignore", divide="ignore"):
            s = np.exp(data.astype(np.float32)).sum(axis=axes, keepdims=bool(keepdims))
        return (np.log(s).astype(np.float32),)


def _lse_model(opset: int, keepdims: int) -> onnx.ModelProto:
    if opset >= 18:
        axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
        node = helper.make_node("ReduceLogSumExp", ["x", "axes"], ["y"], keepdims=keepdims,
                                name="lse")
        inits = [axes]
    else:
        node = helper.make_node("ReduceLogSumExp", ["x"], ["y"], axes=[1], keepdims=keepdims,
                                name="lse")
        inits = []
    out_shape = ["N", 1] if keepdims else ["N"]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 5])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, out_shape)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ref(x):
    x = x.astype(np.float64)
    m = x.max(1, keepdims=True)
    return (np.log(np.exp(x - m).sum(1, keepdims=True)) + m)[:, 0]


@pytest.mark.parametrize("opset,keepdims", [(17, 0), (17, 1), (18, 0), (18, 1)])
def test_rewrite_survives_tensorrt_style_import(opset, keepdims):
    x = np.array([[1000, 999, 998, 0, -1000], [300, 1, 2, 3, 4], [1, 2, 3, 4, 5],
                  [-1000, -1001, -1e4, -1e5, -3e38]], np.float32)
    model = _lse_model(opset, keepdims)
    fixed = tensorrt_model(model)
    assert needs_rewrite(model) and fixed is not model and not needs_rewrite(fixed)
    assert tensorrt_model(fixed) is fixed  # idempotent
    onnx.checker.check_model(fixed, full_check=True)
    emulate = dict(new_ops=[ReduceLogSumExp])
    raw = ReferenceEvaluator(model, **emulate).run(None, {"x": x})[0].reshape(-1)
    assert not np.isfinite(raw[0]) and not np.isfinite(raw[1])  # what TensorRT would return
    out = ReferenceEvaluator(fixed, **emulate).run(None, {"x": x})[0]
    assert out.shape == ((4, 1) if keepdims else (4,))
    np.testing.assert_allclose(out.reshape(-1), _ref(x), rtol=1e-6)
    ours = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(out, ours, rtol=1e-6)


def test_detector_copy_for_tensorrt(digits_detector, digits_data):
    """The digits detector's TensorRT copy keeps every output to 1e-6 (ONNX Runtime) and has
    no unshifted ReduceLogSumExp left; the original is untouched and the copy is removed."""
    path = digits_detector.path
    assert needs_rewrite(onnx.load(str(path)))
    x = edgeood.load(path).preprocess.normalize(digits_data.test[0][:64])
    want = ort.InferenceSession(str(path)).run(None, {"input": x})
    with tensorrt_ready(path) as copy:
        assert copy != path and copy.parent == path.parent
        model = onnx.load(str(copy))
        for node in model.graph.node:
            if node.op_type == "ReduceLogSumExp":
                assert model.graph.node[list(model.graph.node).index(node) - 1].op_type == "Sub"
        got = ort.InferenceSession(str(copy)).run(None, {"input": x})
    assert not copy.exists()
    for a, b in zip(want, got):
        if a.dtype == np.bool_:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_tensorrt_provider_gets_the_shifted_copy(digits_detector):
    """What OrtBackend hands ONNX Runtime when the TensorRT EP is in the provider list (the EP
    itself needs a GPU: tests/gpu/test_gpu.py)."""
    from edgeood.runtime.onnxruntime.backend import _tensorrt_source
    src = _tensorrt_source(str(digits_detector.path))
    assert isinstance(src, bytes) and not needs_rewrite(onnx.load_from_string(src))
    assert _tensorrt_source(src) == src


def _topk_model(k: int, largest: int, sorted_: int, n: int) -> onnx.ModelProto:
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1, largest=largest,
                            sorted=sorted_, name="tk")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", n])], [
        helper.make_tensor_value_info("v", TensorProto.FLOAT, ["N", k]),
        helper.make_tensor_value_info("i", TensorProto.INT64, ["N", k])],
        initializer=[helper.make_tensor("k", TensorProto.INT64, [1], [k])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("k", [100, 3840, 9000, 12000])
@pytest.mark.parametrize("largest,sorted_", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_topk_split_is_the_sorted_topk(k, largest, sorted_):
    """The copy's values and indices are exactly the first k of NumPy's stable argsort (value,
    then lower index), its TopKs are sorted with K <= 3839, and TensorRT's check passes."""
    from edgeood.tensorrt.check import check_model
    model = _topk_model(k, largest, sorted_, 12000)
    fixed = tensorrt_model(model)
    assert needs_rewrite(model) == (k > 3839 or not sorted_) and not needs_rewrite(fixed)
    onnx.checker.check_model(fixed, full_check=True)
    assert check_model(fixed) == []
    x = np.random.default_rng(k).integers(0, 400, (3, 12000)).astype(np.float32)  # ties
    v, i = ort.InferenceSession(fixed.SerializeToString()).run(None, {"x": x})
    order = np.argsort(-x if largest else x, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(i, order)
    np.testing.assert_array_equal(v, np.take_along_axis(x, order, 1))
