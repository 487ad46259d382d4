"""A tiny two-output detector file and the TensorRT feature sets assumed without TensorRT (shared by
tests/tensorrt/test_engine.py and the engine / provider tests in tests/runtime)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgeood.tensorrt.builder import TrtFeatures
from edgeood.artifact.metadata import SCHEMA_VERSION, save_detector

TRT10 = TrtFeatures.assumed("10.3.0")
TRT11 = TrtFeatures.assumed("11.0")


def tiny_detector(path: Path, batch="batch", precision="float32", size=8) -> Path:
    """A two-output detector: logits = Gemm(Flatten(x)); score_energy = ReduceMax(logits)
    (the head: a node the logits do not depend on)."""
    w = numpy_helper.from_array(np.ones((size * size, 3), np.float32), "w")
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "w"], ["logits"], name="fc"),
             helper.make_node("ReduceMax", ["logits"], ["score_energy"], name="score_energy/max",
                              axes=[1], keepdims=0)]
    graph = helper.make_graph(
        nodes, "det",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3]),
         helper.make_tensor_value_info("score_energy", TensorProto.FLOAT, [batch])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"schema_version": SCHEMA_VERSION, "precision": precision, "primary": "energy",
            "tpr": 0.95,
            "methods": {"energy": {"threshold": 0.0}},
            "preprocessing": {"size": [size, size], "channels": 1, "mean": [0.5], "std": [0.5],
                              "color": "GRAY"},
            "input": {"name": "input", "shape": [batch, 1, size, size]},
            "calibration": {"count": 20, "hash": "x", "target": {
                "backend": "onnxruntime", "device": "cpu", "precision": precision}}}
    return save_detector(model, meta, path)
