"""Backward rules beyond the core CNN set (edgeood.graph.autodiff), each against float64 central
finite differences (onnx's NumPy reference runtime on a float64 copy), with the helpers of
tests/helpers/autodiff.py: x (4-D) -> op -> Flatten -> Gemm -> y, gradient of y[n, argmax]."""
from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, numpy_helper
from onnx.reference.op_run import OpRun

from edgeood.errors import EdgeoodError
from edgeood.graph.autodiff import input_gradient
from edgeood.graph.model import prepare
from tests.helpers.autodiff import RNG, N, check, graph_gradient, make_model

X = (2, 3, 4, 4)
SQUARE_PLUS = [N("Mul", ["x", "x"], ["sq"]), N("Add", ["sq", "half"], ["pos"])]  # x^2 + 1/2 > 0
HALF = {"half": np.array(0.5)}

# name: (x shape, body nodes (last output 'h'), initialisers, opset)
CASES = {
    "Sum": (X, [N("Mul", ["x", "x"], ["sq"]), N("Sum", ["x", "sq", "c"], ["h"])],
            {"c": RNG.standard_normal((1, 3, 1, 1))}, 17),
    "Sum_single": (X, [N("Sum", ["x"], ["h"])], {}, 17),
    "Mean": (X, [N("Mul", ["x", "x"], ["sq"]), N("Mean", ["x", "sq", "c"], ["h"])],
             {"c": RNG.standard_normal((1, 1, 4, 1))}, 17),
    "Max": (X, [N("Mul", ["x", "k"], ["kx"]), N("Max", ["x", "kx", "c"], ["h"])],
            {"k": RNG.uniform(-2, 2, (1, 3, 1, 1)), "c": RNG.standard_normal((1, 1, 1, 4))}, 17),
    "Min": (X, [N("Mul", ["x", "k"], ["kx"]), N("Min", ["c", "x", "kx"], ["h"])],
            {"k": RNG.uniform(-2, 2, (1, 3, 1, 1)), "c": RNG.standard_normal((1, 1, 1, 4))}, 17),
    "Dropout": (X, [N("Dropout", ["x"], ["h"])], {}, 17),
    "Dropout_ratio_mode_mask": (X, [N("Dropout", ["x", "r", "t"], ["d", "mask"]),
                                    N("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT),
                                    N("Mul", ["d", "mf"], ["h"])],
                                {"r": np.array(0.3), "t": np.array(False)}, 17),
    # onnx's reference LRN loops its channel window over range(N), not range(C): N = C here.
    # ONNX Runtime only takes odd sizes.
    "LRN_size3": ((4, 4, 2, 3), [N("LRN", ["x"], ["h"], size=3, alpha=0.6, beta=0.75, bias=1.5)],
                  {}, 17),
    "LRN_size5": ((5, 5, 2, 2), [N("LRN", ["x"], ["h"], size=5, alpha=0.8, beta=0.6, bias=1.0)],
                  {}, 17),
    "Neg": (X, [N("Neg", ["x"], ["h"])], {}, 17),
    "Abs": (X, [N("Abs", ["x"], ["h"])], {}, 17),
    "Sqrt": (X, SQUARE_PLUS + [N("Sqrt", ["pos"], ["h"])], HALF, 17),
    "Exp": (X, [N("Exp", ["x"], ["h"])], {}, 17),
    "Log": (X, SQUARE_PLUS + [N("Log", ["pos"], ["h"])], HALF, 17),
    "Tanh": (X, [N("Tanh", ["x"], ["h"])], {}, 17),
    "Erf": (X, [N("Erf", ["x"], ["h"])], {}, 17),
    "Elu": (X, [N("Elu", ["x"], ["h"], alpha=0.7)], {}, 17),
    "Selu": (X, [N("Selu", ["x"], ["h"])], {}, 17),
    "Softplus": (X, [N("Softplus", ["x"], ["h"])], {}, 17),
    "Mish": (X, [N("Mish", ["x"], ["h"])], {}, 18),
    "Swish_as_Mul_Sigmoid": (X, [N("Sigmoid", ["x"], ["s"]), N("Mul", ["x", "s"], ["h"])], {}, 17),
    "Swish_beta_after_Conv": (X, [N("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
                                  N("Mul", ["c", "beta"], ["bc"]), N("Sigmoid", ["bc"], ["s"]),
                                  N("Mul", ["c", "s"], ["h"])],
                              {"W": RNG.standard_normal((4, 3, 3, 3)) / 5, "beta": np.array(1.702)},
                              17),
    "PRelu_per_channel": (X, [N("PRelu", ["x", "slope"], ["h"])],
                          {"slope": RNG.uniform(-0.5, 0.5, (3, 1, 1))}, 17),
    "PRelu_scalar": (X, [N("PRelu", ["x", "slope"], ["h"])], {"slope": np.array([0.25])}, 17),
    "Expand": (X, [N("ReduceMean", ["x"], ["m"], axes=[2], keepdims=1),
                   N("Expand", ["m", "shape"], ["e"]), N("Mul", ["e", "x"], ["h"])],
               {"shape": np.array([1, 1, 4, 1], np.int64)}, 17),
    "Tile": (X, [N("Tile", ["x", "reps"], ["t"]), N("Mul", ["t", "t"], ["h"])],
             {"reps": np.array([1, 2, 1, 3], np.int64)}, 17),
    "Gather_repeated_negative_axis1": (X, [N("Gather", ["x", "idx"], ["h"], axis=1)],
                                       {"idx": np.array([2, 0, 2, -1], np.int64)}, 17),
    "Gather_2d_index_axis3": (X, [N("Gather", ["x", "idx"], ["h"], axis=3)],
                              {"idx": np.array([[0, 3], [3, -1]], np.int64)}, 17),
    "Gather_scalar_axis2": (X, [N("Gather", ["x", "idx"], ["h"], axis=2)],
                            {"idx": np.array(-2, np.int64)}, 17),
    "Softmax_axis1": (X, [N("Softmax", ["x"], ["h"], axis=1)], {}, 17),
    "Softmax_last_axis": (X, [N("Softmax", ["x"], ["h"])], {}, 17),
    "LogSoftmax_axis2": (X, [N("LogSoftmax", ["x"], ["h"], axis=2)], {}, 17),
    "Cast_float_chain_and_int_stop": (X, [
        N("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
        N("Cast", ["d"], ["f"], to=TensorProto.FLOAT),
        N("Cast", ["x"], ["i"], to=TensorProto.INT64),
        N("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
        N("Mul", ["x", "fi"], ["xfi"]), N("Add", ["f", "xfi"], ["h"])], {}, 17),
}

RX = (2, 2, 3, 4)
NO = ""  # an omitted optional input


def _mode(mode, ctm=None, nearest=None, **extra):
    attrs = {"mode": mode, **extra}
    if ctm:
        attrs["coordinate_transformation_mode"] = ctm
    if nearest:
        attrs["nearest_mode"] = nearest
    return attrs


RESIZE = {  # name: (attributes, scales or None, sizes or None, opset); RX = 3 x 4 images
    "nearest_asymmetric_floor_x2": (_mode("nearest", "asymmetric", "floor"), [1, 1, 2, 2], None, 17),
    "nearest_asymmetric_round_floor_x2": (_mode("nearest", "asymmetric", "round_prefer_floor"),
                                          [1, 1, 2, 2], None, 17),  # x.5 source coordinates
    "nearest_asymmetric_round_ceil_x2": (_mode("nearest", "asymmetric", "round_prefer_ceil"),
                                         [1, 1, 2, 2], None, 17),
    "nearest_half_pixel_rpf_size": (_mode("nearest"), None, [2, 2, 5, 7], 17),
    "nearest_align_corners_ceil_size": (_mode("nearest", "align_corners", "round_prefer_ceil"),
                                        None, [2, 2, 7, 6], 17),
    "nearest_pytorch_half_pixel_down": (_mode("nearest", "pytorch_half_pixel", "ceil"),
                                        None, [2, 2, 2, 3], 17),
    "linear_half_pixel_x2": (_mode("linear"), [1, 1, 2, 2], None, 17),
    "linear_pytorch_half_pixel_size": (_mode("linear", "pytorch_half_pixel"), None, [2, 2, 5, 7], 17),
    "linear_align_corners_size": (_mode("linear", "align_corners"), None, [2, 2, 7, 5], 17),
    "linear_asymmetric_scale_1.5": (_mode("linear", "asymmetric"), [1, 1, 1.5, 1.75], None, 17),
    "linear_half_pixel_down_size": (_mode("linear"), None, [2, 2, 2, 3], 17),
    "linear_axes_attr_opset18": (_mode("linear", axes=[2, 3]), [2.0, 1.5], None, 18),
    "linear_half_pixel_symmetric_opset19": (_mode("linear", "half_pixel_symmetric"),
                                            [1, 1, 1.7, 1.3], None, 19),
}


class Erf(OpRun):
    """Erf in float64 (onnx's reference Erf rounds to float32, too coarse for differences)."""
    op_domain = ""

    def _run(self, x):
        return (np.vectorize(math.erf, otypes=[x.dtype])(x),)


@pytest.mark.parametrize("case", list(CASES))
def test_rule(case):
    shape, body, inits, opset = CASES[case]
    check(shape, body, inits, opset=opset, new_ops=[Erf] if case == "Erf" else None)


def resize_body(case):
    attrs, scales, sizes, _ = RESIZE[case]
    inits, inputs = {}, ["x", NO]
    if scales is not None:
        inits["scales"] = np.asarray(scales, np.float32)
        inputs.append("scales")
    else:
        inits["sizes"] = np.asarray(sizes, np.int64)
        inputs += [NO, "sizes"]
    return [N("Resize", inputs, ["h"], **attrs)], inits


@pytest.mark.parametrize("case", list(RESIZE))
def test_resize(case):
    body, inits = resize_body(case)
    check(RX, body, inits, opset=RESIZE[case][3])


def _head_weight(model):
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "Wfc"))


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_ties_go_to_the_first_argument(op):
    """Max(2x, x + c, c') / Min(...) where 2x = x + c exactly (x = c): the first argument gets the
    whole gradient, the second none (torch would split it)."""
    c = 0.75
    x = RNG.standard_normal((1, 2, 3, 3)).astype(np.float32)
    ties = np.zeros(x.shape, bool)
    ties[0, 0, 0, :] = ties[0, 1, 2, 1] = True
    x[ties] = c
    other = -10.0 if op == "Max" else 10.0  # a third, constant argument that never wins
    body = [N("Mul", ["x", "two"], ["a"]), N("Add", ["x", "c"], ["b"]),
            N(op, ["a", "b", "far"], ["h"])]
    m = make_model(x.shape, body, {"two": np.array(2.0), "c": np.array(c),
                                   "far": np.array(other)}, classes=1, dtype=np.float32)
    grad, _ = graph_gradient(m, x)
    pick_first = (2 * x >= x + c) if op == "Max" else (2 * x <= x + c)  # >= / <=: ties to the first
    dh = _head_weight(m)[0].reshape(x.shape)
    want = dh * np.where(pick_first, 2.0, 1.0)
    np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-7)
    assert np.all(grad[ties] == 2 * dh[ties])


def test_gather_repeated_index_sums_the_copies():
    """x[:, [1, 1, -2]]: channel 1 collects two copies' gradients (exactly, as the FD test
    only shows to 2e-4), and channel 0 none."""
    x = RNG.standard_normal((1, 3, 2, 2)).astype(np.float32)
    m = make_model(x.shape, [N("Gather", ["x", "idx"], ["h"], axis=1)],
                   {"idx": np.array([1, 1, -2], np.int64)}, classes=1, dtype=np.float32)
    grad, _ = graph_gradient(m, x)
    dh = _head_weight(m)[0].reshape(1, 3, 2, 2)
    np.testing.assert_allclose(grad[0, 1], dh[0, 0] + dh[0, 1] + dh[0, 2], rtol=1e-6, atol=1e-7)
    assert np.all(grad[0, 0] == 0) and np.all(grad[0, 2] == 0)


def _error(body, inits, match, shape=X):
    m = make_model(shape, body, inits, dtype=np.float32)
    graph = prepare(m)
    with pytest.raises(EdgeoodError, match=match):
        input_gradient(graph, graph.inputs[0], graph.outputs[0], 5)


def test_dropout_in_training_mode_is_an_error():
    _error([N("Dropout", ["x", "r", "t"], ["h"])], {"r": np.array(0.5), "t": np.array(True)},
           "training mode")


def test_resize_cubic_is_an_error():
    _error([N("Resize", ["x", NO, "scales"], ["h"], mode="cubic")],
           {"scales": np.array([1, 1, 2, 2], np.float32)}, "only nearest and linear")


def test_gather_along_the_batch_axis_is_an_error():
    _error([N("Gather", ["x", "idx"], ["h"], axis=0)], {"idx": np.array([0], np.int64)},
           "batch axis")


# --- the fast paths of the Conv / Pad / Gemm rules (ONNX Runtime CPU layouts) ------------------
def _dw(c, k, scale=3.0):
    return RNG.standard_normal((c, 1, k, k)) / scale


CONV_PATHS = {
    # strided depthwise, kernel taps >= 4 x stride cells: zero insertion (nearest Resize x
    # stride grid) + stride-1 depthwise Conv; smaller ones: ConvTranspose
    "dw_stride2_even_in_5x5": ((2, 4, 10, 10), [N("Conv", ["x", "W"], ["h"], group=4,
                                                  strides=[2, 2], kernel_shape=[5, 5])],
                               {"W": _dw(4, 5)}),
    "dw_stride2_odd_in_5x5": ((2, 4, 9, 9), [N("Conv", ["x", "W"], ["h"], group=4, strides=[2, 2],
                                               kernel_shape=[5, 5])], {"W": _dw(4, 5)}),
    "dw_stride2_pads_asym": ((2, 3, 9, 8), [N("Conv", ["x", "W"], ["h"], group=3, strides=[2, 2],
                                              pads=[1, 0, 2, 3])], {"W": _dw(3, 5)}),
    "dw_stride3_dilated_7x7": ((1, 3, 17, 16), [N("Conv", ["x", "W"], ["h"], group=3,
                                                   strides=[3, 3], dilations=[2, 2],
                                                   pads=[2, 5, 1, 2])], {"W": _dw(3, 7)}),
    "dw_stride2_3x3_convtranspose": ((2, 4, 8, 8), [N("Conv", ["x", "W"], ["h"], group=4,
                                                      strides=[2, 2], kernel_shape=[3, 3])],
                                     {"W": _dw(4, 3)}),
    "dw_stride_2x1": ((2, 3, 8, 7), [N("Conv", ["x", "W"], ["h"], group=3, strides=[2, 1],
                                       pads=[2, 2, 2, 2])], {"W": _dw(3, 5)}),
    "dw_stride2_same_upper": ((2, 3, 8, 8), [N("Conv", ["x", "W"], ["h"], group=3, strides=[2, 2],
                                               auto_pad="SAME_UPPER")], {"W": _dw(3, 5)}),
    # TF-style Pad before the conv (EfficientNet-Lite0): the crop folds into the backward conv
    "pad_then_dw_stride1": ((2, 4, 6, 6), [N("Pad", ["x", "pd"], ["p"], mode="constant"),
                                           N("Conv", ["p", "W"], ["h"], group=4)],
                            {"pd": np.array([0, 0, 2, 2, 0, 0, 2, 2], np.int64), "W": _dw(4, 5)}),
    "pad_then_dw_stride2_3x3": ((2, 4, 8, 8), [N("Pad", ["x", "pd"], ["p"], mode="constant"),
                                                N("Conv", ["p", "W"], ["h"], group=4,
                                                  strides=[2, 2])],
                                 {"pd": np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64),
                                  "W": _dw(4, 3)}),
    "pad_then_dw_stride2_k5": ((2, 4, 8, 8), [N("Pad", ["x", "pd"], ["p"], mode="constant"),
                                              N("Conv", ["p", "W"], ["h"], group=4,
                                                strides=[2, 2])],
                               {"pd": np.array([0, 0, 1, 1, 0, 0, 2, 2], np.int64),
                                "W": _dw(4, 5)}),
    "pad_more_than_kernel_reach": ((2, 3, 5, 5), [N("Pad", ["x", "pd"], ["p"], mode="constant"),
                                                  N("Conv", ["p", "W"], ["h"], group=3)],
                                   {"pd": np.array([0, 0, 3, 0, 0, 0, 0, 3], np.int64),
                                    "W": _dw(3, 3)}),
    # the stem: 3 -> 8 channels, 3 x 3 stride 2 after a (0, 1) Pad (ConvTranspose, pads grown)
    "pad_then_stem_stride2": ((2, 3, 8, 8), [N("Pad", ["x", "pd"], ["p"], mode="constant"),
                                             N("Conv", ["p", "W"], ["h"], strides=[2, 2])],
                              {"pd": np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64),
                               "W": RNG.standard_normal((8, 3, 3, 3)) / 5}),
    "pad_channels_then_1x1": ((2, 3, 4, 4), [N("Pad", ["x", "pd"], ["p"], mode="constant"),
                                             N("Conv", ["p", "W"], ["h"])],
                              {"pd": np.array([0, 1, 0, 0, 0, 2, 0, 0], np.int64),
                               "W": RNG.standard_normal((4, 6, 1, 1)) / 3}),
    # MBConv: 1 x 1 expand (MatMul backward) -> ReLU6 -> depthwise -> ReLU6 -> 1 x 1 project
    "mbconv_relu6_masks_from_outputs": ((2, 4, 6, 6), [
        N("Conv", ["x", "We", "be"], ["e"]), N("Clip", ["e", "lo", "hi"], ["ea"]),
        N("Pad", ["ea", "pd"], ["ep"], mode="constant"),
        N("Conv", ["ep", "Wd"], ["d"], group=8, strides=[2, 2]),
        N("Clip", ["d", "lo", "hi"], ["da"]), N("Conv", ["da", "Wp"], ["pj"]),
        N("Relu", ["pj"], ["h"])],
        {"We": RNG.standard_normal((8, 4, 1, 1)), "be": RNG.standard_normal(8),
         "lo": np.array(0.0), "hi": np.array(6.0), "Wd": _dw(8, 3, 1.0),
         "pd": np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64),
         "Wp": RNG.standard_normal((5, 8, 1, 1)) / 2}),
}


@pytest.mark.parametrize("case", list(CONV_PATHS))
def test_conv_paths(case):
    shape, body, inits = CONV_PATHS[case]
    check(shape, body, inits)


def test_pad_crop_folds_into_the_backward_conv():
    """No Slice for the Pad before a stride-1 depthwise conv, none before a ConvTranspose;
    the strided 5 x 5 depthwise path (zero insertion) has no ConvTranspose."""
    for case in ("pad_then_dw_stride1", "pad_then_dw_stride2_3x3", "pad_then_stem_stride2"):
        shape, body, inits = CONV_PATHS[case]
        graph = prepare(make_model(shape, body, inits, dtype=np.float32))
        before = len(graph.nodes)
        input_gradient(graph, graph.inputs[0], graph.outputs[0], 5)
        crops = [n for n in graph.nodes[before:] if n.op in ("Slice", "Pad")
                 and not isinstance(n.inputs[0], gs.Constant)]  # not the kernel flips
        assert not crops, (case, [n.op for n in graph.nodes[before:]])
    shape, body, inits = CONV_PATHS["pad_then_dw_stride2_k5"]
    graph = prepare(make_model(shape, body, inits, dtype=np.float32))
    before = len(graph.nodes)
    input_gradient(graph, graph.inputs[0], graph.outputs[0], 5)
    ops = [n.op for n in graph.nodes[before:]]
    assert "Resize" in ops and "ConvTranspose" not in ops, ops


def _head_model(head, x_shape=(2, 3, 4, 4), classes=5, dtype=np.float64):
    """x -> Conv -> Relu -> Flatten -> head ('Gemm_transB0' with alpha, or 'MatMul') -> y."""
    from onnx import helper
    tp = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    d = 4 * x_shape[2] * x_shape[3]
    rng = np.random.default_rng(3)
    inits = {"W": rng.standard_normal((4, 3, 3, 3)) / 5, "Wh": rng.standard_normal((d, classes)) / 4,
             "bh": rng.standard_normal(classes)}
    nodes = [N("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), N("Relu", ["c"], ["r"]),
             N("Flatten", ["r"], ["f"], axis=1)]
    if head == "MatMul":
        nodes.append(N("MatMul", ["f", "Wh"], ["y"]))
        del inits["bh"]
    else:
        nodes.append(N("Gemm", ["f", "Wh", "bh"], ["y"], alpha=0.5, beta=2.0))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", tp, ["n", *x_shape[1:]])],
                          [helper.make_tensor_value_info("y", tp, ["n", classes])],
                          [numpy_helper.from_array(np.asarray(v, dtype), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("head", ["Gemm_transB0_alpha", "MatMul"])
def test_argmax_row_of_the_head_is_gathered(head):
    """The one-hot seed times the head weights becomes a Gather of the argmax row (column)."""
    from tests.helpers.autodiff import fd_gradient
    x = RNG.standard_normal((2, 3, 4, 4))
    got, _ = graph_gradient(_head_model(head, dtype=np.float32), x)
    want = fd_gradient(_head_model(head), x)
    assert np.abs(got - want).max() / np.abs(want).max() < 2e-4
    graph = prepare(_head_model(head, dtype=np.float32))
    before = len(graph.nodes)
    input_gradient(graph, graph.inputs[0], graph.outputs[0], 5)
    ops = [n.op for n in graph.nodes[before:]]
    assert "Gather" in ops and "Gemm" not in ops and "MatMul" not in ops, ops
