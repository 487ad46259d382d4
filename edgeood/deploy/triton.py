"""A Triton Inference Server model repository from a detector or an engine.

    REPO/<name>/config.pbtxt
    REPO/<name>/1/model.onnx   (platform onnxruntime_onnx)  or  1/model.plan (tensorrt_plan)
    REPO/<name>/edgeood.json   the detector's metadata (Triton ignores it)

config.pbtxt declares every input and output with its dims (batch axis left out when the
detector has a dynamic one: max_batch_size > 0) and data type, dynamic batching, one instance
group, and the thresholds, primary method and TPR as model parameters. Per-image outputs of
shape [batch] are declared dims [1] with `reshape: { shape: [ ] }` (Triton's rule for tensors
that are only the batch axis). A detector with the in-graph stream monitor gets the sequence
batcher instead, with the monitor's state as an implicit state (one stream = one sequence id,
reset at the sequence start): clients send only frames, Triton keeps R_t between requests.
A detector with the uint8 `image` input is served on that entry by default (clients send
camera frames); `entry="float"` serves the float input instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeood.artifact.files import staging_dir
from edgeood.artifact.tensors import TensorSpec
from edgeood.deploy.common import (DeployedModel, choose_entry, copy_file, entry_tensors,
                                   open_detector, replace_dir, save_model, single_entry_model,
                                   write_text)
from edgeood.errors import EdgeoodError, did_you_mean, spell
from edgeood.artifact.metadata import dumps
from edgeood.version import __version__

TRITON_TYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16",
                "uint32": "TYPE_UINT32", "uint64": "TYPE_UINT64", "int8": "TYPE_INT8",
                "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
                "bfloat16": "TYPE_BF16"}
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU", "auto": "KIND_AUTO"}
QUEUE_DELAY_US = 100
SEQUENCE_IDLE_US = 60_000_000  # a camera silent for a minute ends its sequence


@dataclass
class TritonRepository:
    repository: Path
    model_dir: Path
    config: Path
    model: Path
    entry: str
    text: str


def triton_type(dtype: str) -> str:
    if str(dtype) in TRITON_TYPES:
        return TRITON_TYPES[str(dtype)]
    try:
        return TRITON_TYPES[np.dtype(dtype).name]
    except (KeyError, TypeError):
        raise EdgeoodError(f"Triton has no data type for {dtype}") from None


def _dims(dims: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_block(t: TensorSpec, strip_batch: bool, batch: int | None = None,
                  indent: str = "  ") -> str:
    dims = t.dims(strip_batch, batch)
    lines = [f'{indent}  name: "{t.name}"', f"{indent}  data_type: {triton_type(t.dtype)}"]
    if strip_batch and not dims:  # only the batch axis: Triton's [1] + reshape to []
        lines += [f"{indent}  dims: [ 1 ]", f"{indent}  reshape: {{ shape: [ ] }}"]
    else:
        lines.append(f"{indent}  dims: {_dims(dims)}")
    return f"{indent}{{\n" + "\n".join(lines) + f"\n{indent}}}"


def _list(field: str, blocks: list[str]) -> str:
    return f"{field} [\n" + ",\n".join(blocks) + "\n]"


def _param(key: str, value) -> str:
    return f'parameters {{\n  key: "{key}"\n  value: {{ string_value: {json.dumps(str(value))} }}\n}}'


def batching(det: DeployedModel, max_batch: int | None) -> tuple[bool, int, bool, int | None]:
    """(batch axis left out of dims, max_batch_size, dynamic batching, the batch a fixed
    engine profile takes). A fixed-batch model: max_batch_size 0 and full dims. An engine
    (edgeood build): a dynamic profile serves 1..its max batch; a fixed one exactly its batch
    (max_batch_size 1 for batch 1, else 0 with that batch in the dims)."""
    if max_batch is not None and max_batch < 1:
        raise EdgeoodError(f"{spell('batch')} {max_batch} must be >= 1")
    if det.fixed_batch is not None:
        return False, 0, False, None
    profile = det.engine_batch
    if profile is None:
        return True, max_batch or 8, True, None
    top, dynamic = profile
    if dynamic:
        if max_batch is not None and max_batch > top:
            raise EdgeoodError(f"{spell('batch')} {max_batch} is more than the engine's profile "
                               f"allows "
                               f"({top}); pass --batch {top} or rebuild with --batch "
                               f"{max_batch} --dynamic")
        return True, max_batch or top, True, None
    if top == 1:
        return True, 1, False, None
    return False, 0, False, top


def config_text(det: DeployedModel, name: str, entry: str, max_batch: int | None = None,
                kind: str = "gpu", instances: int = 1) -> str:
    """The config.pbtxt of the detector served on `entry` (max_batch: the max_batch_size,
    default 8, or an engine's profile maximum)."""
    if kind not in KINDS:
        raise EdgeoodError(f"{spell('kind')} {kind} must be one of {', '.join(KINDS)}"
                           f"{did_you_mean(kind, list(KINDS))}")
    if instances < 1:
        raise EdgeoodError(f"{spell('instances')} {instances} must be >= 1")
    strip, max_size, dynamic, fixed_batch = batching(det, max_batch)
    monitor = det.monitor_state
    if monitor is not None and max_size == 0:
        raise EdgeoodError(f"{det.path} takes a fixed batch; Triton's sequence batcher (the "
                           "stream monitor's state) needs a dynamic batch axis")
    state_names = {t.name for t in monitor} if monitor else set()
    inputs = [t for t in entry_tensors(det, entry) if t.name not in state_names]
    outputs = [t for t in det.outputs if t.name not in state_names]
    platform = "tensorrt_plan" if det.kind == "engine" else "onnxruntime_onnx"
    parts = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {max_size}",
             _list("input", [_tensor_block(t, strip, fixed_batch) for t in inputs]),
             _list("output", [_tensor_block(t, strip, fixed_batch) for t in outputs])]
    if monitor is not None:
        parts.append(_sequence_batching(det, monitor, max_size))
    elif dynamic:
        parts.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}")
    parts.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {KINDS[kind]}\n"
                 "  }\n]")
    meta = det.meta
    for m, thr in det.thresholds.items():
        parts.append(_param(f"threshold_{m}", repr(thr)))
    parts.append(_param("primary", meta.primary))
    parts.append(_param("tpr", meta.tpr))
    parts.append(_param("edgeood_version", meta.edgeood_version
                        if "edgeood_version" in meta.order else __version__))
    if meta.calibration:
        parts.append(_param("calibration_count", meta.calibration["count"]))
    parts.append(_param("input_entry", entry))
    head = (f"# Generated by edgeood {__version__} from {det.path.name} ({det.kind}); "
            "scores: higher = more in-distribution, is_ood = not (score_primary >= threshold), "
            "so NaN is OOD.\n")
    return head + "\n".join(parts) + "\n"


def _sequence_batching(det: DeployedModel, monitor: tuple[TensorSpec, TensorSpec],
                       max_batch: int) -> str:
    st_in, st_out = monitor
    dims = st_in.dims(True)
    init = ((det.meta.monitor or {}).get("state") or {}).get("initial_value", 0.0)
    initial = ("zero_data: true" if float(init) == 0.0 else
               'data_file: "monitor_state"')
    return (f"sequence_batching {{\n  max_sequence_idle_microseconds: {SEQUENCE_IDLE_US}\n"
            f"  oldest {{\n    max_candidate_sequences: {max_batch}\n"
            f"    max_queue_delay_microseconds: {QUEUE_DELAY_US}\n  }}\n"
            f"  state [\n    {{\n      input_name: \"{st_in.name}\"\n"
            f"      output_name: \"{st_out.name}\"\n"
            f"      data_type: {triton_type(st_in.dtype)}\n      dims: {_dims(dims)}\n"
            f"      initial_state: {{\n        data_type: {triton_type(st_in.dtype)}\n"
            f"        dims: {_dims(dims)}\n        {initial}\n"
            f"        name: \"stream start\"\n      }}\n    }}\n  ]\n}}")


def triton_repository(detector, repository, name: str | None = None,
                      max_batch: int | None = None,
                      entry: str | None = None, kind: str = "gpu",
                      instances: int = 1) -> TritonRepository:
    """Write REPO/<name>/ (config.pbtxt, 1/model.onnx or 1/model.plan, edgeood.json)."""
    det = open_detector(detector)
    entry = choose_entry(det, entry)
    name = name or det.name
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    text = config_text(det, name, entry, max_batch, kind, instances)
    target = repository / name
    with staging_dir(repository, name) as staging:  # readable by the server's user
        version = staging / "1"
        version.mkdir()
        if det.kind == "engine":
            copy_file(det.path, version / "model.plan")
            model_file = "model.plan"
        else:
            save_model(single_entry_model(det, entry), version / "model.onnx")
            model_file = "model.onnx"
        write_text(staging / "config.pbtxt", text)
        write_text(staging / "edgeood.json", dumps(det.meta.to_dict()))
        monitor = det.monitor_state
        init = ((det.meta.monitor or {}).get("state") or {}).get("initial_value", 0.0)
        if monitor is not None and float(init) != 0.0:
            shape = [max(1, d) for d in monitor[0].dims(True)]
            data = np.full(shape, init, np.dtype(monitor[0].dtype))
            (staging / "initial_state").mkdir()
            (staging / "initial_state" / "monitor_state").write_bytes(data.tobytes())
        replace_dir(staging, target)
    return TritonRepository(repository, target, target / "config.pbtxt",
                            target / "1" / model_file, entry, text)
