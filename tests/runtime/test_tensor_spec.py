"""One TensorSpec for every layer: the metadata's "io" and an engine sidecar's "engine.io" read
and written back unchanged, and the shapes a detector declares (read with ONNX itself)."""
from __future__ import annotations

import json

import onnx

from edgeood.artifact.tensors import TensorSpec
from edgeood.graph.signature import io_of_model, model_tensors
from edgeood.tensorrt.builder import read_inputs
from tests.helpers import DATA

LEGACY = DATA / "legacy" / "digits_uint8_monitor.onnx"


def test_metadata_io_round_trips():
    meta = json.loads((DATA / "legacy" / "digits_uint8_monitor.onnx.json").read_text())
    for d in meta["io"]["inputs"] + meta["io"]["outputs"]:
        assert TensorSpec.from_io(d).to_io() == d
    assert io_of_model(onnx.load(str(LEGACY))) == meta["io"]


def test_shapes_and_dtypes_follow_the_onnx_declaration():
    model = onnx.load(str(LEGACY))
    inputs, outputs = model_tensors(model)
    for spec, vi in zip(inputs + outputs, list(model.graph.input) + list(model.graph.output)):
        tt = vi.type.tensor_type
        assert spec.name == vi.name
        assert spec.dtype == onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        assert list(spec.shape) == [d.dim_param or d.dim_value for d in tt.shape.dim]
    image = next(t for t in inputs if t.name == "image")
    assert image.dtype == "uint8" and image.batched and isinstance(image.shape[0], str)
    assert image.dims() == (-1, *image.shape[1:]) and image.dims(True) == image.shape[1:]
    assert image.dims(batch=4)[0] == 4
    assert [t.name for t in read_inputs(LEGACY)] == [t.name for t in inputs]
    assert all(t.mode == "input" for t in read_inputs(LEGACY))


def test_engine_io_round_trips():
    listed = [{"name": "input", "mode": "input", "shape": [-1, 1, 8, 8], "dtype": "FLOAT"},
              {"name": "image", "mode": "input", "shape": [-1, 8, 8, 1], "dtype": "UINT8"},
              {"name": "half", "mode": "output", "shape": [-1], "dtype": "HALF"},
              {"name": "is_ood", "mode": "output", "shape": [4], "dtype": "BOOL"},
              {"name": "odd", "mode": "output", "shape": [4], "dtype": "FP8"}]
    specs = [TensorSpec.from_engine_io(d) for d in listed]
    assert [s.dtype for s in specs] == ["float32", "uint8", "float16", "bool", "fp8"]
    assert [s.to_engine_io() for s in specs] == listed
    assert specs[0].shape == (None, 1, 8, 8) and not specs[3].batched and specs[3].static
