"""Classifier graph patterns from the exporters edgeood meets (Caffe2-era model zoo at opset 6-9,
tf2onnx/Keras, torch dynamo): each tiny model (3x16x16 input, two convs, D=8, C=4, seeded
weights) is exported with edgeood and the detector, run with onnxruntime, is compared with
independent references: the source file's own pre-Softmax logits and pooled feature (run by
onnxruntime on the source file), and NumPy formulas written here."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeood
from edgeood.errors import EdgeoodError
from edgeood.graph.head import find_head
from edgeood.graph.model import batch_dim, input_chw, prepare
from edgeood.graph.taps import find_block_candidates

D, C = 8, 4
LOGIT_METHODS = ["energy", "msp", "maxlogit"]
LINEAR_METHODS = LOGIT_METHODS + ["react"]


# --- NumPy references ---------------------------------------------------------------------
def logsumexp(v):
    v = np.asarray(v, np.float64)
    m = v.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(v - m).sum(axis=1, keepdims=True)))[:, 0]


def msp(v):
    v = np.asarray(v, np.float64)
    return np.exp(v.max(axis=1) - logsumexp(v))


def feature_norm(f):
    f = np.maximum(np.asarray(f, np.float64), 0.0)
    return np.sqrt((f * f).sum(axis=(2, 3))).mean(axis=1)


def close(got, want, what=""):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))
    assert err <= 1e-4, f"{what}: relative error {err:.3g}"


# --- graph building -----------------------------------------------------------------------
class Builder:
    """nodes + initializers (or Constant nodes) for one tiny model."""

    def __init__(self, seed=0, opset=17, const_nodes=False, caffe2=False):
        self.rng = np.random.default_rng(seed)
        self.opset, self.const_nodes, self.caffe2 = opset, const_nodes, caffe2
        self.nodes, self.inits = [], []

    def const(self, name, value):
        value = np.asarray(value)
        if self.const_nodes:
            self.nodes.append(helper.make_node("Constant", [], [name],
                                               value=numpy_helper.from_array(value, name)))
        else:
            self.inits.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, name, *shape, scale=0.5):
        return self.const(name, (self.rng.normal(size=shape) * scale).astype(np.float32))

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def backbone(self, x="x"):
        """conv(3->6) relu maxpool conv(6->8) relu: the 8 x 8 x 8 map 'feat'. At opset 6 in
        the Caffe2 style (caffe2): the first conv's bias as Add(broadcast=1, axis=1), then a
        BatchNormalization(is_test=1, spatial=1); at opset >= 7 the same network in the
        attributes of opset 7 (the reference, since onnxruntime does not run opset 6)."""
        old = self.opset < 7
        if self.caffe2:
            h = self.node("Conv", [x, self.weight("w1", 6, 3, 3, 3)], "c1",
                          kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            b1 = (self.rng.normal(size=6) * 0.5).astype(np.float32)
            h = self.node("Add", [h, self.const("b1", b1)], "c1_bias", broadcast=1, axis=1) \
                if old else self.node("Add", [h, self.const("b1", b1.reshape(6, 1, 1))],
                                      "c1_bias")
            bn = [self.const("s", self.rng.uniform(0.5, 1.5, 6).astype(np.float32)),
                  self.weight("beta", 6), self.weight("mean", 6, scale=0.1),
                  self.const("var", self.rng.uniform(0.5, 1.5, 6).astype(np.float32))]
            h = self.node("BatchNormalization", [h, *bn], "bn1", epsilon=1e-5, spatial=1,
                          **({"is_test": 1} if old else {}))
        else:
            h = self.node("Conv", [x, self.weight("w1", 6, 3, 3, 3), self.weight("b1", 6)],
                          "c1", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        h = self.node("MaxPool", [self.node("Relu", [h], "r1")], "p1", kernel_shape=[2, 2],
                      strides=[2, 2])
        h = self.node("Conv", [h, self.weight("w2", D, 6, 3, 3), self.weight("b2", D)], "c2",
                      kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        return self.node("Relu", [h], "feat")

    def pooled(self, feat="feat"):
        """GlobalAveragePool then Flatten: 'pool' (N x D x 1 x 1), 'z' (N x D); at opset 6
        with a Dropout(is_test=1) before the pooling."""
        if self.caffe2:
            feat = self.node("Dropout", [feat], "feat_drop", ratio=0.5,
                             **({"is_test": 1} if self.opset < 7 else {}))
        pool = self.node("GlobalAveragePool", [feat], "pool")
        if self.opset < 5:  # Reshape's shape was an attribute before opset 5
            return self.node("Reshape", [pool], "z", shape=[-1, D])
        return self.node("Flatten", [pool], "z")

    def head_params(self):
        w = (self.rng.normal(size=(C, D)) * 0.7).astype(np.float32)
        b = (self.rng.normal(size=C) * 0.3).astype(np.float32)
        return w, b

    def model(self, output, batch="N", ir=None, inits_as_inputs=False, x_shape=None):
        shape = x_shape or [batch, 3, 16, 16]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
        if inits_as_inputs:
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in self.inits]
        graph = helper.make_graph(self.nodes, "tiny", inputs,
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                                  self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                              producer_name="test")
        if ir is not None:
            m.ir_version = ir
        elif self.opset < 13:
            m.ir_version = 4 if self.opset <= 9 else 7
        return m


def gemm_softmax(b: Builder):
    w, bias = b.head_params()
    z = b.pooled(b.backbone())
    if b.opset < 7:
        logits = b.node("Gemm", [z, b.const("W", w), b.const("B", bias)], "logits", transB=1,
                        broadcast=1)
    else:
        logits = b.node("Gemm", [z, b.const("W", w), b.const("B", bias)], "logits", transB=1)
    return b.node("Softmax", [logits], "prob"), "logits", "z", w, bias


# --- running ------------------------------------------------------------------------------
def _images(n, seed, shape=(3, 16, 16)):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def _run_each(session, x, names=None):
    """Run a session, one image at a time when its batch is fixed to 1."""
    b = session.get_inputs()[0].shape[0]
    name = session.get_inputs()[0].name
    if isinstance(b, int) and b > 0:
        parts = [session.run(names, {name: x[i:i + b]}) for i in range(0, len(x), b)]
        outs = [np.concatenate(p) for p in zip(*parts)]
    else:
        outs = session.run(names, {name: x})
    names = names or [o.name for o in session.get_outputs()]
    return dict(zip(names, outs))


def reference(model: onnx.ModelProto, x, names):
    """The source model, by onnxruntime, with the named tensors as its outputs (each N x -1)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                          for n in names)
    dim = m.graph.input[0].type.tensor_type.shape.dim[0]
    if not dim.dim_param and dim.dim_value <= 0:  # -1 / 0 / unset: make it runnable
        dim.dim_param = "ref_batch"
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out = _run_each(s, x, list(names))
    return [out[n].reshape(len(x), -1) for n in names]


def export_and_check(tmp_path, model, logits_name, z_name, w=None, bias=None,
                     methods=LINEAR_METHODS, nhwc=False, ref_model=None):
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    calib, test = _images(30, 1), _images(7, 2)
    res = edgeood.export(str(src), data=calib, methods=list(methods), out=tmp_path / "d.onnx",
                         keep_taps=True)
    det = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    assert det.get_inputs()[0].shape[1:] == [3, 16, 16]
    out = _run_each(det, test)
    src_x = (lambda a: a.transpose(0, 2, 3, 1)) if nhwc else (lambda a: a)
    names = [logits_name] + ([z_name] if z_name else [])
    ref_model = ref_model or model
    ref = reference(ref_model, src_x(test), names)
    logits = ref[0]
    close(out["logits"], logits, "logits")
    close(out["score_energy"], logsumexp(logits), "energy")
    close(out["score_msp"], msp(logits), "msp")
    close(out["score_maxlogit"], logits.max(axis=1), "maxlogit")
    if "react" in methods:
        z = ref[1]
        close(out["tap_z"].reshape(len(test), -1), z, "z")
        t = res.metadata["methods"]["react"]["threshold_activation"]
        (z_calib,) = reference(ref_model, src_x(calib), [z_name])
        assert t == pytest.approx(float(np.percentile(z_calib, 90)), rel=1e-5)
        close(out["score_react"], logsumexp(np.minimum(z, t) @ w.astype(np.float64).T + bias),
              "react")
    return res, out


# --- 1. linear heads behind Softmax / LogSoftmax -------------------------------------------
def test_gemm_head_behind_softmax(tmp_path):
    b = Builder(seed=1)
    out, logits, z, w, bias = gemm_softmax(b)
    res, _ = export_and_check(tmp_path, b.model(out), logits, z, w, bias)
    assert res.metadata["head"]["feature_dim"] == D


def test_matmul_add_behind_logsoftmax(tmp_path):
    b = Builder(seed=2)
    w, bias = b.head_params()
    z = b.pooled(b.backbone())
    logits = b.node("Add", [b.node("MatMul", [z, b.const("Wt", w.T.copy())], "mm"),
                            b.const("B", bias)], "logits")
    out = b.node("LogSoftmax", [logits], "logprob", axis=1)
    export_and_check(tmp_path, b.model(out), logits, z, w, bias)


# --- 2. 1x1 Conv heads over a pooled feature ------------------------------------------------
@pytest.mark.parametrize("tail", ["flatten", "squeeze", "reshape_softmax", "flatten_nobias"])
def test_conv_head_over_pooled_feature(tmp_path, tail):
    b = Builder(seed=3)
    w, bias = b.head_params()
    pool = b.node("GlobalAveragePool", [b.backbone()], "pool")
    ins = [pool, b.const("Wc", w.reshape(C, D, 1, 1))]
    if tail == "flatten_nobias":
        bias = np.zeros(C, np.float32)
    else:
        ins.append(b.const("Bc", bias))
    cls = b.node("Conv", ins, "cls", kernel_shape=[1, 1])
    if tail.startswith("flatten"):
        out = b.node("Flatten", [cls], "out")
    elif tail == "squeeze":
        out = b.node("Squeeze", [cls, b.const("axes", np.array([2, 3], np.int64))], "out")
    else:
        r = b.node("Reshape", [cls, b.const("shape", np.array([-1, C], np.int64))], "r")
        out = b.node("Softmax", [r], "out")
    model = b.model(out)
    g = prepare(model)
    head = find_head(g)
    assert head.kind == "Gemm" and head.linear and head.feature_dim == D
    assert "1x1 Conv 'cls'" in head.pattern
    assert g.tensors()[head.logits].shape[1:] == [C] and g.tensors()[head.z].shape[1:] == [D]
    np.testing.assert_array_equal(head.weight, w)
    assert find_block_candidates(g, head)[-1] == "feat"
    again = find_head(g)  # the rewritten graph has an ordinary Gemm head
    assert (again.logits, again.z) == (head.logits, head.z)
    np.testing.assert_array_equal(again.bias, bias)
    export_and_check(tmp_path, model, "cls", "pool", w, bias)


# --- 3. no linear head: a conv before the pooling (SqueezeNet) -------------------------------
def squeezenet(b: Builder, softmax_on_map=False):
    drop = b.node("Dropout", [b.backbone()], "drop", **({"ratio": 0.5} if b.opset < 12 else {}))
    conv = b.node("Conv", [drop, b.weight("w10", C, D, 1, 1), b.weight("b10", C)], "conv10",
                  kernel_shape=[1, 1])
    gap = b.node("GlobalAveragePool", [b.node("Relu", [conv], "relu10")], "gap")
    if softmax_on_map:  # Caffe2 zoo: Softmax (axis=1, flatten semantics) on N x C x 1 x 1
        return b.node("Softmax", [gap], "prob"), "gap"
    flat = b.node("Flatten", [gap], "flat")
    return b.node("Softmax", [flat], "prob"), "flat"


def test_squeezenet_head_is_not_linear(tmp_path):
    b = Builder(seed=4)
    out, logits = squeezenet(b)
    model = b.model(out)
    g = prepare(model)
    head = find_head(g)
    assert not head.linear and head.z is None and head.weight is None and head.bias is None
    assert head.feature_dim is None and head.num_classes == C
    assert "conv10" in head.pattern and "8x8" in head.pattern
    assert find_block_candidates(g, head)[-1] == "drop"  # the map going into conv10
    with pytest.raises(EdgeoodError) as e:
        head.require_linear("react")
    assert "react" in str(e.value) and "conv10" in str(e.value) and "\n" not in str(e.value)

    res, det_out = export_and_check(tmp_path, model, logits, None,
                                    methods=LOGIT_METHODS + ["featurenorm"])
    block = res.metadata["methods"]["featurenorm"]["selected_block"]
    test = _images(7, 2)
    (fmap,) = reference(model, test, [block])
    shape = g.tensors()[block].shape
    close(det_out["score_featurenorm"], feature_norm(fmap.reshape(len(test), *shape[1:])),
          "featurenorm")


def test_squeezenet_refuses_react_in_one_line(tmp_path):
    b = Builder(seed=4)
    out, _ = squeezenet(b)
    src = tmp_path / "m.onnx"
    onnx.save(b.model(out), str(src))
    with pytest.raises(EdgeoodError) as e:
        edgeood.export(str(src), data=_images(30, 1), methods=["energy", "react"],
                       out=tmp_path / "d.onnx")
    msg = str(e.value)
    assert "\n" not in msg and "react" in msg and "conv10" in msg and "linear" in msg


def test_caffe2_squeezenet_softmax_on_the_map_opset7(tmp_path):
    b = Builder(seed=5, opset=7)
    out, logits = squeezenet(b, softmax_on_map=True)
    model = b.model(out)
    g = prepare(model)
    head = find_head(g)
    assert not head.linear and head.num_classes == C
    g.cleanup()  # the N x C logits lie on the graph's own path (gap -> Flatten -> Unsqueeze)
    assert g.tensors()[head.logits].shape[1:] == [C]
    assert find_head(g).logits == head.logits
    export_and_check(tmp_path, model, logits, None, methods=LOGIT_METHODS)


# --- 4. weights that are not initializers -------------------------------------------------
def test_constant_node_weights(tmp_path):
    b = Builder(seed=6, const_nodes=True)
    out, logits, z, w, bias = gemm_softmax(b)
    model = b.model(out)
    assert not model.graph.initializer
    export_and_check(tmp_path, model, logits, z, w, bias)


def test_matmul_weight_is_transpose_of_a_constant(tmp_path):
    b = Builder(seed=7)
    w, bias = b.head_params()
    z = b.pooled(b.backbone())
    wt = b.node("Transpose", [b.const("W", w)], "Wt", perm=[1, 0])  # torch dynamo's linear
    logits = b.node("Add", [b.node("MatMul", [z, wt], "mm"), b.const("B", bias)], "logits")
    export_and_check(tmp_path, b.model(b.node("Softmax", [logits], "prob")), logits, z, w, bias)


def test_reshaped_constant_weight_and_constant_of_shape_bias(tmp_path):
    b = Builder(seed=8, const_nodes=True)
    w, _ = b.head_params()
    z = b.pooled(b.backbone())
    w2 = b.node("Reshape", [b.const("Wflat", w.reshape(-1)),
                            b.const("wshape", np.array([C, D], np.int64))], "W")
    bias_t = b.node("ConstantOfShape", [b.const("bshape", np.array([C], np.int64))], "B",
                    value=numpy_helper.from_array(np.array([0.25], np.float32)))
    logits = b.node("Add", [b.node("Gemm", [z, w2], "gemm", transB=1), bias_t], "logits")
    bias = np.full(C, 0.25, np.float32)
    export_and_check(tmp_path, b.model(b.node("Softmax", [logits], "prob")), logits, z, w, bias)


def test_constant_of_shape_bias_in_gemm(tmp_path):
    b = Builder(seed=9)
    w, _ = b.head_params()
    z = b.pooled(b.backbone())
    bias_t = b.node("ConstantOfShape", [b.const("bshape", np.array([1, C], np.int64))], "B",
                    value=numpy_helper.from_array(np.array([-0.5], np.float32)))
    logits = b.node("Gemm", [z, b.const("W", w), bias_t], "logits", transB=1)
    export_and_check(tmp_path, b.model(b.node("Softmax", [logits], "prob")), logits, z, w,
                     np.full(C, -0.5, np.float32))


# --- 5. old IR and opsets (Caffe2-era model zoo) ------------------------------------------
@pytest.mark.parametrize("opset", [4, 6, 8])
def test_ir3_initializers_listed_as_inputs(tmp_path, opset):
    """Caffe2-era files: IR 3, weights listed as inputs; at opset 6 and below also Add / Gemm
    with broadcast (Add with axis), BatchNormalization and Dropout with is_test; at opset 4
    Reshape with its shape as an attribute."""
    b = Builder(seed=10, opset=opset, caffe2=True)
    out, logits, z, w, bias = gemm_softmax(b)
    model = b.model(out, ir=3, inits_as_inputs=True)
    assert len(model.graph.input) > 1
    g = prepare(model)
    assert [t.name for t in g.inputs] == ["x"] and g.inputs[0].shape[0] == "batch"
    assert find_head(g).z == "z"
    ref = Builder(seed=10, opset=7, caffe2=True)  # the same weights, opset-7 attributes
    ref_model = ref.model(gemm_softmax(ref)[0])
    export_and_check(tmp_path, model, logits, z, w, bias, ref_model=ref_model)


def test_opset8_batchnorm_dropout_sum_lrn(tmp_path):
    b = Builder(seed=11, opset=8)
    w, bias = b.head_params()
    h = b.node("Conv", ["x", b.weight("w1", 6, 3, 3, 3)], "c1", kernel_shape=[3, 3],
               pads=[1, 1, 1, 1])
    bn = [b.const("s", b.rng.uniform(0.5, 1.5, 6).astype(np.float32)),
          b.weight("beta", 6), b.weight("mean", 6, scale=0.1),
          b.const("var", b.rng.uniform(0.5, 1.5, 6).astype(np.float32))]
    h = b.node("BatchNormalization", [h, *bn], "bn1", epsilon=1e-5, spatial=1)
    h = b.node("LRN", [b.node("Relu", [h], "r1")], "lrn1", size=3)
    p = b.node("MaxPool", [h], "p1", kernel_shape=[2, 2], strides=[2, 2])
    c2 = b.node("Conv", [p, b.weight("w2", 6, 6, 3, 3), b.weight("b2", 6)], "c2",
                kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    h = b.node("Relu", [b.node("Sum", [c2, p], "res")], "r2")  # a residual as Sum
    h = b.node("Conv", [h, b.weight("w3", D, 6, 1, 1), b.weight("b3", D)], "c3",
               kernel_shape=[1, 1])
    h = b.node("Dropout", [b.node("Relu", [h], "feat")], "drop", ratio=0.3)
    z = b.node("Flatten", [b.node("GlobalAveragePool", [h], "pool")], "z")
    logits = b.node("Gemm", [z, b.const("W", w), b.const("B", bias)], "logits", transB=1)
    out = b.node("Dropout", [b.node("Softmax", [logits], "prob")], "prob_drop", ratio=0.1)
    model = b.model(out)
    g = prepare(model)
    assert not any(n.op == "Dropout" for n in g.nodes)
    assert "r2" in find_block_candidates(g, find_head(g))  # the residual Sum's output (+Relu)
    export_and_check(tmp_path, model, logits, z, w, bias)


# --- 6. batch dimensions ------------------------------------------------------------------
def test_fixed_batch_1(tmp_path):
    b = Builder(seed=12)
    out, logits, z, w, bias = gemm_softmax(b)
    model = b.model(out, batch=1)
    g = prepare(model)
    assert batch_dim(g) == 1 and input_chw(g) == (3, 16, 16)
    export_and_check(tmp_path, model, logits, z, w, bias)


@pytest.mark.parametrize("batch", ["N", "batch_size", "unk__0", -1, 0, None])
def test_dynamic_batch_of_any_name(tmp_path, batch):
    b = Builder(seed=13)
    out, logits, z, w, bias = gemm_softmax(b)
    model = b.model(out, batch=batch)
    g = prepare(model)
    assert batch_dim(g) == "batch" and input_chw(g) == (3, 16, 16)
    res, _ = export_and_check(tmp_path, model, logits, z, w, bias)
    assert res.metadata["input"]["shape"][0] == "batch"


# --- 7. tf2onnx / Keras: N x H x W x C input ---------------------------------------------
def test_nhwc_input_gets_a_transpose(tmp_path):
    b = Builder(seed=14)
    b.node("Transpose", ["x"], "x_nchw", perm=[0, 3, 1, 2])
    w, bias = b.head_params()
    z = b.pooled(b.backbone("x_nchw"))
    logits = b.node("Add", [b.node("MatMul", [z, b.const("Wt", w.T.copy())], "mm"),
                            b.const("B", bias)], "logits")
    model = b.model(b.node("Softmax", [logits], "prob"), x_shape=["unk__0", 16, 16, 3])
    g = prepare(model)
    assert g.inputs[0].name == "x" and g.inputs[0].shape == ["batch", 3, 16, 16]
    export_and_check(tmp_path, model, logits, z, w, bias, nhwc=True)


# --- the prepared graph leaves the caller's model alone ------------------------------------
def test_prepare_does_not_change_the_callers_model():
    b = Builder(seed=15, opset=8)
    out, *_ = gemm_softmax(b)
    model = b.model(out, ir=3, inits_as_inputs=True)
    before = model.SerializeToString()
    prepare(model)
    assert model.SerializeToString() == before


def test_unsupported_head_is_one_line():
    b = Builder(seed=16)
    z = b.pooled(b.backbone())
    model = b.model(b.node("Sigmoid", [z], "sig"))
    with pytest.raises(EdgeoodError) as e:
        find_head(prepare(model))
    assert "Sigmoid" in str(e.value) and "\n" not in str(e.value)


# --- 8. torch's dynamo exporter (ReduceMean + Reshape, Gemm, a batch symbol of its own) ----
def test_torch_dynamo_export(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                torch.nn.MaxPool2d(2), torch.nn.Conv2d(6, D, 3, padding=1), torch.nn.ReLU())
            self.fc = torch.nn.Linear(D, C)

        def forward(self, x):
            z = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)
            return torch.softmax(self.fc(z), dim=1)

    torch.manual_seed(0)
    net = Net().eval()
    try:
        prog = torch.onnx.export(net, (torch.zeros(2, 3, 16, 16),), dynamo=True,
                                 input_names=["x"],
                                 dynamic_shapes={"x": {0: torch.export.Dim("N")}})
    except Exception as exc:  # the dynamo exporter needs onnxscript
        pytest.skip(f"torch.onnx dynamo export unavailable: {type(exc).__name__}")
    model = prog.model_proto
    g = prepare(model)
    head = find_head(g)
    assert head.linear and head.feature_dim == D and batch_dim(g) == "batch"
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    calib, test = _images(30, 1), _images(7, 2)
    res = edgeood.export(str(src), data=calib, methods=LINEAR_METHODS,
                         out=tmp_path / "d.onnx", keep_taps=True)
    out = _run_each(ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"]),
                    test)
    with torch.no_grad():
        xt = torch.from_numpy(test)
        z = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(net.features(xt), 1), 1)
        logits = net.fc(z).numpy()
        z = z.numpy()
        zc = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(
            net.features(torch.from_numpy(calib)), 1), 1).numpy()
    w, bias = net.fc.weight.detach().numpy(), net.fc.bias.detach().numpy()
    close(out["logits"], logits, "logits")
    close(out["score_energy"], logsumexp(logits), "energy")
    close(out["score_msp"], msp(logits), "msp")
    close(out["score_maxlogit"], logits.max(axis=1), "maxlogit")
    t = res.metadata["methods"]["react"]["threshold_activation"]
    assert t == pytest.approx(float(np.percentile(zc, 90)), rel=1e-4)
    close(out["score_react"], logsumexp(np.minimum(z, t) @ w.astype(np.float64).T + bias),
          "react")


def test_batch_size_view_becomes_a_constant_reshape(tmp_path):
    """torch's x.view(x.size(0), -1) (Shape -> Gather(0) -> Unsqueeze -> Concat -> Reshape) is
    rewritten to Reshape(x, [0, -1]) by prepare, computing the same logits."""
    import torch
    from edgeood.graph.model import prepare, to_model
    from edgeood.runtime.onnxruntime.backend import OrtBackend

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.fc = torch.nn.Linear(8 * 14 * 14, 4)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return self.fc(y.view(y.size(0), -1))

    torch.manual_seed(0)
    net = Net().eval()
    path = tmp_path / "view.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}})
    src = onnx.load(str(path))
    assert {"Shape", "Gather", "Concat"} <= {n.op_type for n in src.graph.node}
    graph = prepare(src)
    assert not {"Shape", "Gather", "Concat"} & {n.op for n in graph.nodes}
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    got = OrtBackend(to_model(graph).SerializeToString()).run(x)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(list(got.values())[0], want, rtol=1e-5, atol=1e-5)
