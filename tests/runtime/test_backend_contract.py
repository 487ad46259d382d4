"""The Backend contract (edgeood/runtime/backend.py): both backends declare every member, a
closed backend refuses in one line, backends and Detectors close as context managers, the
uint8 `image` input is declared, and one function maps a file to its backend class."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import edgeood
from edgeood.errors import EdgeoodError
from edgeood.runtime import backend_for, engine_metadata, is_engine
from edgeood.runtime.backend import Backend
from edgeood.runtime.onnxruntime.backend import OrtBackend
from edgeood.runtime.tensorrt.backend import TensorRTBackend, tensorrt_or_none

# everything the Protocol declares: attributes, properties, methods, the context manager
MEMBERS = sorted({*Backend.__annotations__,
                  *(n for n in vars(Backend) if not n.startswith("_")),
                  "__enter__", "__exit__"})
METHODS = ("run", "layer_times", "close", "__enter__", "__exit__")
PROPERTIES = ("providers", "target", "runs_on")


def _one_line_closed(fn, *args):
    with pytest.raises(EdgeoodError) as err:
        fn(*args)
    msg = str(err.value)
    assert "\n" not in msg and "closed" in msg and "edgeood.load" in msg, msg


@pytest.fixture(scope="module")
def uint8_detector(digits_model, digits_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("contract") / "digits_uint8.onnx"
    return edgeood.export(digits_model, data=digits_data.val[0], methods=["energy"],
                          input="uint8", recipe="digits_cnn", out=out)


def _float_batch(detector, digits_data, n=8):
    """The host-preprocessed float32 N x C x H x W batch of the first n ID images, by the
    detector's own preprocessing record."""
    from edgeood.data import Preprocess, open_source
    pre = Preprocess.from_dict(detector.metadata["preprocessing"])
    return next(open_source(digits_data.val[0][:n], "val").batches(pre, n)).x


def test_the_protocol_declares_the_whole_contract():
    for name in ("input_name", "input_shape", "image_input", "output_names", "output_shapes",
                 "fixed_batch", *PROPERTIES, *METHODS):
        assert name in MEMBERS, name


def test_ort_backend_satisfies_the_protocol(digits_detector):
    b = OrtBackend(digits_detector.path)
    assert isinstance(b, Backend)
    for name in MEMBERS:
        assert hasattr(b, name), name
    session = ort.InferenceSession(str(digits_detector.path), providers=["CPUExecutionProvider"])
    assert b.input_name == session.get_inputs()[0].name
    assert b.output_names == [o.name for o in session.get_outputs()]
    assert b.providers == session.get_providers()
    assert b.target["device"] == "cpu" and b.runs_on.startswith("runs on CPUExecutionProvider")
    b.close()


def test_tensorrt_backend_declares_every_member():
    for name in (*METHODS, *PROPERTIES):
        assert callable(getattr(TensorRTBackend, name)) or \
            isinstance(getattr(TensorRTBackend, name), property), name
    for name in PROPERTIES:
        assert isinstance(vars(TensorRTBackend)[name], property), name


def test_tensorrt_backend_satisfies_the_protocol(digits_detector, tmp_path):
    if tensorrt_or_none() is None:
        pytest.skip("TensorRT is not installed here (import tensorrt gives no Builder)")
    res = edgeood.build(digits_detector.path, batch=8, out=tmp_path / "d.engine")
    with backend_for(res.path, engine_metadata(res.path)) as b:
        assert isinstance(b, TensorRTBackend) and isinstance(b, Backend)
        for name in MEMBERS:
            assert hasattr(b, name), name
        assert b.image_input is None
        assert b.layer_times(np.zeros((8, *b.input_shape[1:]), np.float32), 2)
    _one_line_closed(b.run, np.zeros((8, *b.input_shape[1:]), np.float32))


def test_closed_ort_backend_refuses_in_one_line(digits_detector, digits_data):
    b = OrtBackend(digits_detector.path)
    x = _float_batch(digits_detector, digits_data)
    want = ort.InferenceSession(str(digits_detector.path),
                                providers=["CPUExecutionProvider"]).run(["logits"],
                                                                        {b.input_name: x})[0]
    np.testing.assert_allclose(b.run(x, ["logits"])["logits"], want, rtol=1e-5, atol=1e-5)
    b.close()
    b.close()  # idempotent
    _one_line_closed(b.run, x)
    _one_line_closed(lambda: b.providers)
    _one_line_closed(b.layer_times, x)


def test_backend_and_detector_close_as_context_managers(digits_detector, digits_data):
    x = _float_batch(digits_detector, digits_data)
    with OrtBackend(digits_detector.path) as b:
        assert len(b.run(x)["logits"]) == len(x)
    _one_line_closed(b.run, x)
    with edgeood.load(digits_detector.path) as det:
        first = det(x)
        assert len(first) == len(x)
    _one_line_closed(det, x)
    det = edgeood.load(digits_detector.path)
    det.close()
    _one_line_closed(det.backend.run, x)


def test_image_input_is_declared_for_uint8_detectors(digits_detector, uint8_detector,
                                                     digits_data):
    assert OrtBackend(digits_detector.path).image_input is None
    b = OrtBackend(uint8_detector.path)
    assert b.image_input == "image"
    frames = digits_data.val[0][:5]
    assert frames.dtype == np.uint8
    session = ort.InferenceSession(str(uint8_detector.path), providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    assert types["image"] == "tensor(uint8)"
    out = b.run(frames, ["logits"])["logits"]  # frames go to `image`, as they are
    want = b.run(_float_batch(uint8_detector, digits_data, 5), ["logits"])["logits"]
    assert out.shape == (5, uint8_detector.metadata["head"]["num_classes"])
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_layer_times_is_none_on_onnx_runtime(digits_detector, digits_data):
    with OrtBackend(digits_detector.path) as b:
        assert b.layer_times(_float_batch(digits_detector, digits_data), 3) is None


def test_profile_skips_layers_the_backend_cannot_time(digits_detector):
    from edgeood.tools.profile import profile
    res = profile(digits_detector.path, batch=2, warmup=1, iterations=3, layers=5)
    assert "layers" not in res and res["runs_on"].startswith("runs on CPUExecutionProvider")
    assert res["target"] == {"backend": "onnxruntime", "device": "cpu", "precision": "float32"}


def test_one_function_maps_a_file_to_its_backend(digits_model, tmp_path):
    assert is_engine("a/b.ENGINE") and is_engine("x.plan") and is_engine("x.trt")
    assert not is_engine("x.onnx") and not is_engine("x.engine.json")
    plain = backend_for(digits_model)  # a plain model: no metadata
    assert isinstance(plain, OrtBackend) and plain.target["precision"] == "float32"
    plain.close()
    with pytest.raises(EdgeoodError, match="unknown detector type"):
        backend_for(tmp_path / "model.txt")
    with pytest.raises(EdgeoodError, match="^device cpu applies to .onnx detectors"):
        backend_for(tmp_path / "d.engine", {}, device="cpu")
