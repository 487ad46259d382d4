"""The generated Triton model repository of a detector with the in-graph stream monitor:
config.pbtxt declares the sequence batcher with the monitor's state as an implicit state and
validates against Triton's ModelConfig schema (tritonclient)."""
from __future__ import annotations

import numpy as np
import pytest

import edgeood
from edgeood.artifact.names import MONITOR_STATE, MONITOR_STATE_OUT, STREAM_ALARM


def test_triton_config_declares_the_monitor_state(digits_model, digits_data, tmp_path):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format
    from edgeood.deploy.triton import triton_repository
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy"],
                         recipe="digits_cnn", out=tmp_path / "mon.onnx", stream_monitor=True)
    repo = triton_repository(res.path, tmp_path / "repo", max_batch=4)
    cfg = text_format.Parse(repo.config.read_text(), model_config_pb2.ModelConfig())
    assert cfg.max_batch_size == 4 and not cfg.HasField("dynamic_batching")
    (state,) = cfg.sequence_batching.state
    assert (state.input_name, state.output_name) == (MONITOR_STATE, MONITOR_STATE_OUT)
    assert state.data_type == model_config_pb2.TYPE_FP32 and list(state.dims) == [1]
    (init,) = state.initial_state
    assert init.zero_data and list(init.dims) == [1]
    assert res.metadata["monitor"]["state"]["initial_value"] == 0.0
    assert MONITOR_STATE not in [i.name for i in cfg.input]  # implicit: Triton feeds it
    outputs = {o.name: o for o in cfg.output}
    assert MONITOR_STATE_OUT not in outputs and STREAM_ALARM in outputs
    assert outputs[STREAM_ALARM].data_type == model_config_pb2.TYPE_BOOL
    assert list(outputs[STREAM_ALARM].dims) == [1] and outputs[STREAM_ALARM].HasField("reshape")
    # the served model still carries the state tensors the sequence batcher binds
    import onnx
    served = onnx.load(str(repo.model))
    assert MONITOR_STATE in [i.name for i in served.graph.input]
    assert {MONITOR_STATE_OUT, STREAM_ALARM} <= {o.name for o in served.graph.output}
    assert np.isfinite(res.metadata["monitor"]["bet_scale"])
