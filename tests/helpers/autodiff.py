"""The input-gradient test harness: tiny models x (4-D) -> body -> Flatten -> Gemm -> y, the folded
gradient run by ONNX Runtime, float64 central finite differences by onnx's NumPy reference
runtime (shared by tests/graph/test_autodiff.py and test_autodiff_rules.py; one RNG for both)."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgeood.graph.autodiff import input_gradient
from edgeood.graph.model import prepare, to_model
from edgeood.runtime.onnxruntime.backend import OrtBackend

RNG = np.random.default_rng(0)


def make_model(x_shape, body, inits, classes=5, dtype=np.float64, opset=17):
    """x -> body nodes (last output 'h') -> Flatten -> Gemm -> y. In the float64 copy, Casts to
    float32 cast to float64 instead (so finite differences stay in float64)."""
    tp = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    inits = dict(inits)
    if dtype == np.float64:
        body = [_cast_to_double(n) for n in body]

    def tensors():
        return [numpy_helper.from_array(np.asarray(v).astype(
            dtype if np.asarray(v).dtype.kind == "f" else np.asarray(v).dtype), k)
            for k, v in inits.items()]
    nodes = list(body) + [helper.make_node("Flatten", ["h"], ["hf"], axis=1)]
    x = helper.make_tensor_value_info("x", tp, ["n", *x_shape[1:]])
    y = helper.make_tensor_value_info("y", tp, ["n", classes])
    # probe the flattened size with the reference runtime
    probe = helper.make_graph(nodes, "probe", [x], [helper.make_tensor_value_info("hf", tp, None)],
                              tensors())
    m = helper.make_model(probe, opset_imports=[helper.make_opsetid("", opset)])
    d = ReferenceEvaluator(m).run(None, {"x": np.zeros(x_shape, dtype)})[0].shape[1]
    inits["Wfc"] = np.random.default_rng(1).standard_normal((classes, d)) / np.sqrt(d)
    inits["bfc"] = np.random.default_rng(2).standard_normal(classes)
    nodes.append(helper.make_node("Gemm", ["hf", "Wfc", "bfc"], ["y"], transB=1))
    g = helper.make_graph(nodes, "g", [x], [y], tensors())
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _cast_to_double(node):
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type != "Cast" or attrs.get("to") != TensorProto.FLOAT:
        return node
    return helper.make_node("Cast", list(node.input), list(node.output), name=node.name,
                            to=TensorProto.DOUBLE)


def graph_gradient(model32, x):
    graph = prepare(model32)
    grad = input_gradient(graph, graph.inputs[0], graph.outputs[0], graph.outputs[0].shape[1])
    grad.name, grad.dtype, grad.shape = "grad", np.float32, graph.inputs[0].shape
    graph.outputs = [graph.outputs[0], grad]
    out = OrtBackend(to_model(graph).SerializeToString()).run(x.astype(np.float32))
    return out["grad"], out[graph.outputs[0].name]


def fd_gradient(model64, x, h=1e-6, new_ops=None):
    ref = ReferenceEvaluator(model64, new_ops=new_ops)
    f = lambda v: ref.run(None, {"x": v})[0]
    y = f(x)
    cls = y.argmax(1)
    grad = np.zeros_like(x)
    flat = x.reshape(len(x), -1)
    for i in range(flat.shape[1]):
        xp, xm = flat.copy(), flat.copy()
        xp[:, i] += h
        xm[:, i] -= h
        yp, ym = f(xp.reshape(x.shape)), f(xm.reshape(x.shape))
        grad.reshape(len(x), -1)[:, i] = (yp[np.arange(len(x)), cls] - ym[np.arange(len(x)), cls]) / (2 * h)
    return grad


def check(x_shape, body, inits, tol=2e-4, opset=17, new_ops=None):
    """The folded gradient (ORT, float32) against float64 central finite differences; returns
    the max error relative to the largest gradient entry. new_ops: reference-runtime op
    overrides (for ops whose reference kernel is not float64-exact)."""
    x = RNG.standard_normal(x_shape)
    m64 = make_model(x_shape, body, inits, dtype=np.float64, opset=opset)
    m32 = make_model(x_shape, body, inits, dtype=np.float32, opset=opset)
    got, _ = graph_gradient(m32, x)
    want = fd_gradient(m64, x, new_ops=new_ops)
    scale = np.abs(want).max()
    assert scale > 0
    err = np.abs(got - want).max() / scale
    assert err < tol, f"max relative error {err:.2e}"
    return err


N = helper.make_node
