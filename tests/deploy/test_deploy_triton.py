"""`edgeood deploy triton`: the generated config.pbtxt parsed against Triton's own ModelConfig
protobuf schema (tritonclient's model_config_pb2); every output of the detector declared with
its shape and type; the model file runs; engines from their sidecar alone."""
from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import edgeood
from edgeood.api import export as api_export
from edgeood.data import ImageSource
from edgeood.deploy.triton import triton_repository
from edgeood.errors import EdgeoodError
from edgeood.graph.preprocess import entry_point
from edgeood.artifact.metadata import SCHEMA_VERSION, embed
from tests.helpers.deploy import engine_sidecar

TYPES = {"float32": mc.TYPE_FP32, "bool": mc.TYPE_BOOL, "int64": mc.TYPE_INT64,
         "uint8": mc.TYPE_UINT8}


def parse(path) -> mc.ModelConfig:
    """Strict text-format parse: an unknown field or a wrong type is an error."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def graph_io(model: onnx.ModelProto):
    def spec(vi):
        t = vi.type.tensor_type
        return vi.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, \
            [d.dim_param or d.dim_value for d in t.shape.dim]
    return [spec(v) for v in model.graph.input], [spec(v) for v in model.graph.output]


def check_declared(declared, name, dtype, shape, batched=True):
    """One ModelInput/ModelOutput against the graph's tensor."""
    assert declared.name == name
    assert declared.data_type == TYPES[dtype], (name, declared.data_type)
    dims = shape[1:] if batched else shape
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in dims]
    if batched and not dims:
        assert list(declared.dims) == [1] and declared.HasField("reshape")
        assert list(declared.reshape.shape) == []
    else:
        assert list(declared.dims) == dims, (name, list(declared.dims), dims)


@pytest.fixture(scope="module")
def detector(digits_model, digits_data, tmp_path_factory):
    """uint8 input, a bool, an int64 (grood_label) and multi-dimensional (taps) outputs."""
    val = ImageSource("digits-val", array=digits_data.val[0], labels=digits_data.val[1])
    return edgeood.export(digits_model, data=val, methods=["energy", "react", "grood"],
                          recipe="digits_cnn", keep_taps=True, input="uint8",
                          out=tmp_path_factory.mktemp("triton") / "digits.onnx")


def test_onnx_repository_declares_every_output(detector, digits_data, tmp_path):
    res = triton_repository(detector.path, tmp_path / "repo")
    assert res.model_dir == tmp_path / "repo" / "digits" and res.entry == "image"
    cfg = parse(res.config)
    assert cfg.name == "digits" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 8 and cfg.HasField("dynamic_batching")
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    _, outputs = graph_io(onnx.load(str(detector.path), load_external_data=False))
    assert [o[0] for o in outputs] == detector.metadata["outputs"]
    assert len(cfg.output) == len(outputs) and {"grood_label", "is_ood", "tap_z"} <= \
        {o.name for o in cfg.output}
    for declared, (name, dtype, shape) in zip(cfg.output, outputs):
        check_declared(declared, name, dtype, shape)
    (image,) = cfg.input                                   # the uint8 frames entry only
    check_declared(image, "image", "uint8", ["batch", 8, 8, 1])
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    for m, entry in detector.metadata["methods"].items():
        assert float(params[f"threshold_{m}"]) == entry["threshold"]
    assert params["primary"] == "energy" and float(params["tpr"]) == 0.95
    # the served file: one input, the detector's outputs, the same numbers
    sess = ort.InferenceSession(str(res.model))
    assert [i.name for i in sess.get_inputs()] == ["image"]
    frames = digits_data.test[0][:10]
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": frames})))
    want = edgeood.load(detector.path)(frames)
    np.testing.assert_allclose(got["score_react"], want.scores["react"], rtol=1e-6)
    np.testing.assert_array_equal(got["is_ood"], want.is_ood)
    assert json.loads((res.model_dir / "edgeood.json").read_text())["primary"] == "energy"
    again = triton_repository(detector.path, tmp_path / "repo", entry="float")  # replaced whole
    assert [i.name for i in parse(again.config).input] == ["input"]
    check_declared(parse(again.config).input[0], "input", "float32", ["batch", 1, 8, 8])
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["digits"]


def test_engine_repository_from_its_sidecar_alone(detector, tmp_path):
    """An engine built (edgeood build) from the detector's image entry: a plan file (bytes
    edgeood never reads) and its sidecar; no TensorRT is needed to write its repository."""
    built = entry_point(onnx.load(str(detector.path)), "image")
    plan = tmp_path / "digits.engine"
    engine_sidecar(built, plan, max_batch=16, dynamic=True, precision="float16")
    res = triton_repository(plan, tmp_path / "repo")
    assert res.model == tmp_path / "repo" / "digits" / "1" / "model.plan"
    assert res.model.read_bytes() == plan.read_bytes()
    cfg = parse(res.config)
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 16  # the profile's max
    assert cfg.HasField("dynamic_batching")
    _, outputs = graph_io(built)
    assert [i.name for i in cfg.input] == ["image"]
    for declared, (name, dtype, shape) in zip(cfg.output, outputs):
        check_declared(declared, name, dtype, shape)
    assert len(cfg.output) == len(outputs)
    assert parse(triton_repository(plan, tmp_path / "r4", max_batch=4).config).max_batch_size == 4
    with pytest.raises(EdgeoodError, match="more than the engine's profile allows"):
        triton_repository(plan, tmp_path / "r5", max_batch=32)
    # a profile of exactly 4 images: no batching, the 4 in the dims
    engine_sidecar(built, tmp_path / "fixed.engine", max_batch=4, dynamic=False)
    cfg = parse(triton_repository(tmp_path / "fixed.engine", tmp_path / "r6").config)
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    check_declared(cfg.input[0], "image", "uint8", [4, 8, 8, 1], batched=False)
    # an engine with both entries cannot be fed by a server: one line says what to do
    engine_sidecar(onnx.load(str(detector.path)), tmp_path / "both.engine", 8, True)
    with pytest.raises(EdgeoodError, match="save_entry_point"):
        triton_repository(tmp_path / "both.engine", tmp_path / "r7")


def test_engine_sidecar_without_io_uses_the_output_conventions(digits_model, digits_data,
                                                               tmp_path):
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy", "msp"],
                         recipe="digits_cnn", out=tmp_path / "plain.onnx")
    meta = dict(res.metadata)
    meta.pop("io")
    (tmp_path / "old.plan").write_bytes(b"plan")
    (tmp_path / "old.plan.json").write_text(json.dumps(meta))
    cfg = parse(triton_repository(tmp_path / "old.plan", tmp_path / "repo").config)
    _, outputs = graph_io(onnx.load(str(res.path)))
    for declared, (name, dtype, shape) in zip(cfg.output, outputs):
        check_declared(declared, name, dtype, shape)
    check_declared(cfg.input[0], "input", "float32", ["batch", 1, 8, 8])
    meta["outputs"] = meta["outputs"] + ["tap_something"]
    (tmp_path / "odd.plan").write_bytes(b"plan")
    (tmp_path / "odd.plan.json").write_text(json.dumps(meta))
    with pytest.raises(EdgeoodError, match="no 'io' entry"):
        triton_repository(tmp_path / "odd.plan", tmp_path / "repo2")
    (tmp_path / "lost.plan").write_bytes(b"plan")
    with pytest.raises(EdgeoodError, match="no lost.plan.json sidecar"):
        triton_repository(tmp_path / "lost.plan", tmp_path / "repo3")


def test_fixed_batch_detector_has_no_batching(digits_model, digits_data, tmp_path):
    m = onnx.load(str(digits_model))
    for t in list(m.graph.input) + list(m.graph.output):
        t.type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(m, str(tmp_path / "fixed.onnx"))
    res = edgeood.export(tmp_path / "fixed.onnx", data=digits_data.val[0], methods=["energy"],
                         recipe="digits_cnn", out=tmp_path / "fixed4.onnx")
    cfg = parse(triton_repository(res.path, tmp_path / "repo").config)
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    check_declared(cfg.input[0], "input", "float32", [4, 1, 8, 8], batched=False)
    assert list(cfg.output[1].dims) == [4] and cfg.output[1].name == "score_energy"


def _check_sequence_state(cfg: mc.ModelConfig):
    assert cfg.WhichOneof("scheduling_choice") == "sequence_batching"
    seq = cfg.sequence_batching
    (state,) = seq.state
    assert state.input_name == "monitor_state" and state.output_name == "monitor_state_out"
    assert state.data_type == mc.TYPE_FP32 and list(state.dims) == [1]
    (init,) = state.initial_state
    assert init.zero_data and list(init.dims) == [1] and init.data_type == mc.TYPE_FP32
    assert seq.oldest.max_candidate_sequences == cfg.max_batch_size
    # the implicit state is not an input or output a client sees
    assert "monitor_state" not in [i.name for i in cfg.input]
    assert "monitor_state_out" not in [o.name for o in cfg.output]
    alarm = next(o for o in cfg.output if o.name == "stream_alarm")
    assert alarm.data_type == mc.TYPE_BOOL and list(alarm.dims) == [1]


@pytest.mark.skipif("stream_monitor" not in inspect.signature(api_export).parameters,
                    reason="this edgeood has no in-graph stream monitor (export stream_monitor)")
def test_stream_monitor_detector_gets_the_sequence_batcher(digits_model, digits_data, tmp_path):
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy", "msp"],
                         recipe="digits_cnn", out=tmp_path / "mon.onnx", stream_monitor=True,
                         input="uint8")
    cfg = parse(triton_repository(res.path, tmp_path / "repo").config)
    _check_sequence_state(cfg)
    assert [i.name for i in cfg.input] == ["image"]
    _, outputs = graph_io(onnx.load(str(res.path)))
    declared = {o.name: o for o in cfg.output}
    for name, dtype, shape in outputs:
        if name != "monitor_state_out":
            check_declared(declared[name], name, dtype, shape)
    served = ort.InferenceSession(str(tmp_path / "repo" / "mon" / "1" / "model.onnx"))
    assert sorted(i.name for i in served.get_inputs()) == ["image", "monitor_state"]


def test_monitor_state_on_a_hand_built_graph(tmp_path):
    """A real ONNX model with the monitor's I/O signature (input monitor_state [batch, 1],
    outputs monitor_state_out [batch, 1] and stream_alarm [batch]) and a non-zero initial
    state: the initial value goes to a data file under initial_state/."""
    h = onnx.helper
    F, B = onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL
    nodes = [h.make_node("Flatten", ["input"], ["logits"]),
             h.make_node("ReduceMax", ["logits"], ["score_max"], axes=[1], keepdims=0),
             h.make_node("Unsqueeze", ["score_max", "one"], ["s1"]),
             h.make_node("Add", ["monitor_state", "s1"], ["monitor_state_out"]),
             h.make_node("Squeeze", ["monitor_state_out", "one"], ["r"]),
             h.make_node("Less", ["arl", "r"], ["stream_alarm"])]
    graph = h.make_graph(nodes, "monitor", [
        h.make_tensor_value_info("input", F, ["batch", 1, 2, 2]),
        h.make_tensor_value_info("monitor_state", F, ["batch", 1])], [
        h.make_tensor_value_info("logits", F, ["batch", 4]),
        h.make_tensor_value_info("score_max", F, ["batch"]),
        h.make_tensor_value_info("monitor_state_out", F, ["batch", 1]),
        h.make_tensor_value_info("stream_alarm", B, ["batch"])],
        [onnx.numpy_helper.from_array(np.array([1], np.int64), "one"),
         onnx.numpy_helper.from_array(np.array(10.0, np.float32), "arl")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    out = ort.InferenceSession(model.SerializeToString()).run(None, {
        "input": np.ones((3, 1, 2, 2), np.float32), "monitor_state": np.full((3, 1), 9.5,
                                                                             np.float32)})
    assert out[3].tolist() == [True] * 3
    meta = {"schema_version": SCHEMA_VERSION, "primary": "max", "tpr": 0.95,
            "methods": {"max": {"threshold": 0.5}}, "head": {"num_classes": 4},
            "input": {"name": "input", "shape": ["batch", 1, 2, 2], "dtype": "float32"},
            "preprocessing": {"size": [2, 2], "channels": 1, "mean": [0.5], "std": [0.5],
                              "resize": False, "color": "GRAY"},
            "outputs": ["logits", "score_max", "monitor_state_out", "stream_alarm"],
            "monitor": {"in_graph": True, "state": {"initial_value": 0.0}}}
    embed(model, meta)
    onnx.save(model, str(tmp_path / "mon.onnx"))
    cfg = parse(triton_repository(tmp_path / "mon.onnx", tmp_path / "repo").config)
    _check_sequence_state(cfg)
    assert [i.name for i in cfg.input] == ["input"]
    assert [o.name for o in cfg.output] == ["logits", "score_max", "stream_alarm"]
    meta["monitor"]["state"]["initial_value"] = 1.0
    embed(model, meta)
    onnx.save(model, str(tmp_path / "mon1.onnx"))
    res = triton_repository(tmp_path / "mon1.onnx", tmp_path / "repo")
    init = parse(res.config).sequence_batching.state[0].initial_state[0]
    assert init.data_file == "monitor_state"
    data = np.frombuffer((res.model_dir / "initial_state" / "monitor_state").read_bytes(),
                         np.float32)
    assert data.tolist() == [1.0]


def test_cli_deploy_triton(detector, tmp_path):
    from tests.helpers.cli import cli
    det = tmp_path / "cam.onnx"
    shutil.copy(detector.path, det)
    out = json.loads(cli("deploy", "triton", det, "--out", tmp_path / "repo", "--batch", "16",
                         "--kind", "cpu", "--json").stdout)
    cfg = parse(tmp_path / "repo" / "cam" / "config.pbtxt")
    assert out["input"] == "image" and cfg.max_batch_size == 16
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    text = cli("deploy", "triton", det, "--out", tmp_path / "r2", "--name", "cam_b").stdout
    assert "next: tritonserver --model-repository" in text
    bad = cli("deploy", "triton", det, "--out", tmp_path / "r3", "--kind", "tpu", check=False)
    assert bad.returncode == 2 and "--kind tpu must be one of gpu, cpu, auto" in bad.stderr
    assert not (tmp_path / "r3" / "cam").exists()
