"""edgeood check --target: every exported detector (every method, every precision), as every
TensorRT path hands it over (edgeood.tensorrt.rewrite: log-sum-exp shifted, TopK sorted and
within its K limit), is within TensorRT 10's and 11's parser limits; the target rules catch
what they should."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from edgeood.cli.app import app
from edgeood.tensorrt.check import TARGETS, check_model, check_target
from edgeood.tensorrt.rewrite import tensorrt_model
from tests.helpers.precision import PRECISIONS, detector


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("target", ["trt10", "trt11"])
def test_every_detector_passes(precision, target):
    path, meta = detector(precision)
    model = tensorrt_model(onnx.load(str(path)))
    problems, notes = check_target(model, target)
    assert problems == [], problems
    assert check_model(model) == []  # the target-free check is unchanged
    if precision == "float16":
        assert any("float16 tensors" in n for n in notes)


def test_trt86_reports_int64_casts_and_outputs():
    path, _ = detector("int8")
    problems, notes = check_target(tensorrt_model(onnx.load(str(path))), "trt8.6")
    assert problems == []
    assert any("INT64 tensors are cast to INT32" in n for n in notes)
    assert any("grood_label" in n and "INT32" in n for n in notes)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _qdq(zero_point=0, per_channel=False, qtype=np.int8):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    scale = np.full([4] if per_channel else [], 0.1, np.float32)
    zp = np.full(scale.shape, zero_point, qtype)
    inits = [onnx.numpy_helper.from_array(scale, "s"), onnx.numpy_helper.from_array(zp, "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], axis=1)]
    return _model(nodes, [x], [y], inits)


def test_qdq_rules():
    assert check_target(_qdq(), "trt10")[0] == []
    assert any("zero point must be 0" in p for p in check_target(_qdq(3), "trt11")[0])
    assert any("quantized type uint8" in p for p in check_target(_qdq(qtype=np.uint8),
                                                                 "trt10")[0])
    per = _qdq(per_channel=True)
    assert any("per-channel scales on an activation" in p for p in check_target(per, "trt8.6")[0])
    assert check_target(per, "trt10")[0] == []


def test_strongly_typed_rules_and_opset_ranges():
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT16, [2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    mixed = _model([helper.make_node("Add", ["a", "b"], ["y"])], [a, b], [y])
    assert any("mixed input types" in p for p in check_target(mixed, "trt11")[0])
    assert not any("mixed" in p for p in check_target(mixed, "trt10")[0])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    relu = lambda opset: _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y],
                                opset=opset)
    assert any("outside trt8.6's range" in p for p in check_target(relu(18), "trt8.6")[0])
    assert check_target(relu(18), "trt10")[0] == []
    assert set(TARGETS) == {"trt8.6", "trt10", "trt11"}


def test_cli_check_target(tmp_path):
    path, _ = detector("float16")
    runner = CliRunner()
    r = runner.invoke(app, ["check", str(path), "--target", "trt11"])
    assert r.exit_code == 0, r.output
    assert "within trt11's parser limits" in r.output
    bad = tmp_path / "bad.onnx"
    onnx.save(_qdq(5), str(bad))
    r = runner.invoke(app, ["check", str(bad), "--target", "trt10", "--json"])
    assert r.exit_code == 1 and '"zero point must be 0' in r.output.replace("\\n", "") or \
        "zero point must be 0" in r.output
    r = runner.invoke(app, ["check", str(path), "--target", "trt9"])
    assert r.exit_code == 2 and "did you mean" in r.output
