"""A DeepStream nvinfer configuration (and a probe sample) from a detector or an engine.

    DIR/<name>.onnx or DIR/<name>.engine   the model nvinfer runs (float input, N x C x H x W)
    DIR/config_infer_<name>.txt            [property]: onnx-file / model-engine-file,
                                           net-scale-factor, offsets, model-color-format,
                                           infer-dims, network-type=100, output-tensor-meta=1,
                                           batch-size, network-mode, output-blob-names
    DIR/<name>.deepstream.json             outputs, primary, thresholds (read by the probe)
    DIR/edgeood_probe.py                   a pipeline (file / CSI / USB camera -> nvstreammux ->
                                           nvinfer) whose pad probe reads score_*, pvalue_* and
                                           is_ood from NvDsInferTensorMeta

nvinfer computes y = net-scale-factor * (x - offsets[c]) on pixels x in 0..255, in the channel
order model-color-format says, after scaling the frame to the network size itself
(maintain-aspect-ratio=0, like the host path; its scaler is not PIL: frames at other sizes
score slightly differently, recalibrate on frames DeepStream scaled if that matters).
edgeood's preprocessing is y = (x / 255 - mean[c]) / std[c]: offsets = 255 mean, and
net-scale-factor = 1 / (255 std) when std is one value. With per-channel std (ImageNet's) the
ONNX model written here starts with a Mul by std[0] / std[c] (per channel) and
net-scale-factor = 1 / (255 std[0]); an engine cannot be changed, so it needs one std.
network-type=100 (other) with output-tensor-meta=1: nvinfer attaches every output tensor to
the frame's user meta, so the OOD outputs reach the app; its layer types are FLOAT, HALF,
INT8 and INT32, so the ONNX model casts is_ood (bool) and int64 outputs to int32 (an engine's
outputs are what its builder made). DeepStream feeds one input: a
detector's uint8 `image` entry and its in-graph stream monitor are left out of the ONNX model
(run edgeood.StreamMonitor over the per-source p-values in the probe instead).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgeood.artifact.names import IMAGE_INPUT, MONITOR_STATE, MONITOR_STATE_OUT, STREAM_ALARM
from edgeood.data import Preprocess
from edgeood.artifact.files import file_mode
from edgeood.artifact.tensors import TensorSpec
from edgeood.deploy.common import (copy_file, open_detector, save_model,
                                   single_entry_model, write_text)
from edgeood.errors import EdgeoodError, spell
from edgeood.graph.ops import scope
from edgeood.tensorrt.rewrite import tensorrt_model
from edgeood.version import __version__

COLOR_FORMAT = {"RGB": 0, "BGR": 1, "GRAY": 2}
NETWORK_MODE = {"float32": 0, "fp32": 0, "int8": 1, "float16": 2, "fp16": 2, "half": 2}
PROBE = Path(__file__).with_name("deepstream_probe.py")
NVINFER_TYPES = ("float32", "float16", "int8", "int32")


@dataclass
class DeepStreamFiles:
    folder: Path
    config: Path
    model: Path
    spec: Path
    probe: Path
    properties: dict


def nvinfer_preprocessing(pre: Preprocess) -> tuple[float, list[float], list[float]]:
    """(net-scale-factor, offsets, in-graph per-channel scale): scale * (x - offsets[c]) *
    channel_scale[c] == (x / 255 - mean[c]) / std[c]."""
    std = np.asarray(pre.std, np.float64)
    scale = float(1.0 / (255.0 * std[0]))
    offsets = [float(255.0 * m) for m in pre.mean]
    return scale, offsets, [float(std[0] / s) for s in std]


def _scaled_input(model: onnx.ModelProto, channel_scale: list[float]) -> onnx.ModelProto:
    """The model with its float input multiplied by channel_scale (per channel) first."""
    graph = gs.import_onnx(model)
    x = graph.inputs[0]
    consumers = [n for n in graph.nodes if any(t is x for t in n.inputs)]
    with scope(graph, "deepstream"):
        y = graph.mul(x, np.asarray(channel_scale, np.float32).reshape(1, -1, 1, 1))
    y.shape, y.dtype = x.shape, np.float32
    for n in consumers:
        n.inputs = [y if t is x else t for t in n.inputs]
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    out.metadata_props.extend(model.metadata_props)
    return out


def _without_monitor(model: onnx.ModelProto) -> onnx.ModelProto:
    if not any(i.name == MONITOR_STATE for i in model.graph.input):
        return model
    from edgeood.graph.monitor import strip_monitor
    graph = gs.import_onnx(model)
    strip_monitor(graph)
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    out.metadata_props.extend(model.metadata_props)
    return out


def _nvinfer_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every output nvinfer cannot carry (NvDsInferDataType: FLOAT, HALF, INT8,
    INT32) cast to int32 under its own name: is_ood (bool), int64 labels."""
    graph = gs.import_onnx(model)
    outputs, changed = [], False
    for t in graph.outputs:
        if t.dtype is None or np.dtype(t.dtype).name in NVINFER_TYPES:
            outputs.append(t)
            continue
        name, shape = t.name, t.shape
        t.name = f"{name}_source"
        with scope(graph, "deepstream"):
            cast = graph.cast(t, np.int32)
        cast.name, cast.shape = name, shape
        outputs.append(cast)
        changed = True
    if not changed:
        return model
    graph.outputs = outputs
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    out.metadata_props.extend(model.metadata_props)
    return out


def _format(v) -> str:
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return ";".join(_format(x) for x in v)
    return str(v)


def deepstream_config(detector, out_dir, batch: int = 1, half: bool = False, device: int = 0,
                      name: str | None = None) -> DeepStreamFiles:
    """Write the nvinfer config, the model it runs, the output spec and the probe sample."""
    det = open_detector(detector)
    if batch < 1:
        raise EdgeoodError(f"{spell('batch')} {batch} must be >= 1")
    pre = Preprocess.from_dict(det.meta.preprocessing or {})
    if pre.color not in COLOR_FORMAT:
        raise EdgeoodError(f"colour order {pre.color} has no nvinfer model-color-format")
    scale, offsets, channel_scale = nvinfer_preprocessing(pre)
    per_channel = any(abs(s - 1.0) > 1e-12 for s in channel_scale)
    name = name or det.name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fixed = det.fixed_batch
    if fixed is not None:
        batch = fixed  # nvinfer must batch what the model takes
    elif det.engine_batch is not None:
        top, dynamic = det.engine_batch
        if dynamic and batch > top:
            raise EdgeoodError(f"{spell('batch')} {batch} is more than the engine's profile allows "
                               f"({top}); pass --batch {top} or rebuild it")
        batch = batch if dynamic else top
    props: dict = {"gpu-id": device, "net-scale-factor": scale, "offsets": offsets,
                   "model-color-format": COLOR_FORMAT[pre.color],
                   "infer-dims": [pre.channels, *pre.size], "network-input-order": 0,
                   "maintain-aspect-ratio": 0, "scaling-filter": 1, "batch-size": batch}
    if det.kind == "engine":
        if per_channel:
            raise EdgeoodError(f"{det.path} normalises with per-channel std {pre.std}, which "
                               "nvinfer's single net-scale-factor cannot express and an engine "
                               "cannot absorb; deploy the .onnx detector (edgeood writes a "
                               "model that takes the per-channel part)")
        if det.input(IMAGE_INPUT) is not None or det.input(MONITOR_STATE) is not None:
            raise EdgeoodError(f"{det.path} takes {', '.join(t.name for t in det.inputs)}; "
                               "nvinfer feeds one float N x C x H x W input: build the engine "
                               "from the float entry without the in-graph stream monitor")
        model_path = copy_file(det.path, out / f"{name}.engine")
        props["model-engine-file"] = model_path.name
        props["network-mode"] = NETWORK_MODE.get(det.precision, 0)
    else:
        if det.monitor_state is not None:
            from edgeood.progress import warn
            warn(f"{det.path.name}'s in-graph stream monitor is left out: nvinfer feeds one input "
                 "and keeps no state between frames; run edgeood.StreamMonitor per source on the "
                 "p-values in the probe (docs/deploy/deepstream.md, Stream alarm)")
        model = _without_monitor(single_entry_model(det, "float"))
        if per_channel:
            model = _scaled_input(model, channel_scale)
        model = tensorrt_model(_nvinfer_types(model))  # nvinfer parses it with TensorRT
        model_path = out / f"{name}.onnx"
        save_model(model, model_path)
        mode = 2 if half else 0
        props["onnx-file"] = model_path.name
        props["model-engine-file"] = (f"{model_path.name}_b{batch}_gpu{device}_"
                                      f"{'fp16' if half else 'fp32'}.engine")
        props["network-mode"] = mode
    outputs = [t for t in det.outputs if t.name not in (MONITOR_STATE_OUT, STREAM_ALARM)]
    if det.kind == "onnx":  # as cast by _nvinfer_types
        outputs = [t if t.dtype in NVINFER_TYPES else TensorSpec(t.name, "int32", t.shape, t.mode)
                   for t in outputs]
    props.update({"network-type": 100, "output-tensor-meta": 1, "process-mode": 1,
                  "gie-unique-id": 1, "interval": 0,
                  "output-blob-names": [t.name for t in outputs]})
    spec = {"detector": det.path.name, "edgeood_version": __version__,
            "primary": det.meta.primary, "tpr": det.meta.tpr,
            "thresholds": det.thresholds, "num_classes": (det.meta.head or {})["num_classes"],
            "input": {"dims": [pre.channels, *pre.size], "color": pre.color},
            "outputs": [{"name": t.name, "dtype": t.dtype, "dims": list(t.dims(True))}
                        for t in outputs]}
    spec_path = write_text(out / f"{name}.deepstream.json", json.dumps(spec, indent=2))
    lines = [f"# nvinfer config generated by edgeood {__version__} from {det.path.name}",
             ("# preprocessing: y = net-scale-factor * (x - offsets[c]) == "
              f"(x / 255 - mean) / std, mean {list(pre.mean)}, std {list(pre.std)}"),
             *([("# the per-channel part of std is a Mul at the model's input (std[0] / "
                 f"std[c]: {channel_scale})")] if per_channel and det.kind == "onnx" else []),
             f"# thresholds (is_ood = not score_{det.meta.primary} >= threshold): "
             + ", ".join(f"{m} {t:.6g}" for m, t in det.thresholds.items()),
             "[property]"]
    lines += [f"{k}={_format(v)}" for k, v in props.items()]
    config = write_text(out / f"config_infer_{name}.txt", "\n".join(lines) + "\n")
    probe = write_text(out / "edgeood_probe.py", PROBE.read_text())
    probe.chmod(file_mode(executable=True))
    return DeepStreamFiles(out, config, model_path, spec_path, probe, props)
