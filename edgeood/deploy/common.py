"""What every deploy generator needs from a detector or an engine: its metadata and its I/O
signature, read from the file itself (ONNX) or from the engine's sidecar alone (no TensorRT
needed), and atomic writing of the generated files."""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from edgeood.artifact.names import (IMAGE_INPUT, IS_OOD, LOGITS, MONITOR_STATE, MONITOR_STATE_OUT,
                                 PVALUE_PREFIX, SCORE_PREFIX, STREAM_ALARM)
from edgeood.artifact.files import atomic_copy, atomic_write, kind_of, strip_suffix
from edgeood.errors import EdgeoodError, spell
from edgeood.graph.signature import model_tensors
from edgeood.artifact.metadata import (DetectorMetadata, read_metadata, read_with_model,
                                      sidecar_path)
from edgeood.artifact.tensors import TensorSpec
from edgeood.artifact.truth import check_graph


@dataclass
class DeployedModel:
    """A detector or engine as the generators see it (runtime.Detector runs one; this one
    only describes it)."""

    path: Path
    kind: str                 # "onnx" or "engine"
    meta: DetectorMetadata
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @property
    def name(self) -> str:
        stem = strip_suffix(self.path.name)
        return re.sub(r"[^0-9A-Za-z_-]+", "_", stem).strip("_") or "edgeood"

    @property
    def fixed_batch(self) -> int | None:
        first = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None
        return first if isinstance(first, int) and first > 0 else None

    @property
    def engine_batch(self) -> tuple[int, bool] | None:
        """(max batch, dynamic) of an engine's optimization profile (edgeood build: dynamic
        profiles run 1..max, the others exactly max), None when the sidecar does not say."""
        opts = self.meta.build_options
        if self.kind != "engine" or "max_batch" not in opts:
            return None
        return int(opts["max_batch"]), bool(opts.get("dynamic", False))

    @property
    def precision(self) -> str:
        return str(self.meta.engine_precision or self.meta.graph_precision).lower()

    @property
    def thresholds(self) -> dict[str, float]:
        return self.meta.thresholds

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    @property
    def monitor_state(self) -> tuple[TensorSpec, TensorSpec] | None:
        """(state input, state output) of an in-graph stream monitor, else None."""
        st_in, st_out = self.input(MONITOR_STATE), self.output(MONITOR_STATE_OUT)
        return (st_in, st_out) if st_in is not None and st_out is not None else None

    @property
    def data_inputs(self) -> list[TensorSpec]:
        """The inputs a client feeds (not the monitor's state)."""
        return [t for t in self.inputs if t.name != MONITOR_STATE]


def _tensors(specs) -> list[TensorSpec]:
    return [TensorSpec.from_io(s) for s in specs]


def _engine_io(listed: list[dict]) -> dict:
    """edgeood build's engine.io ([{name, mode, shape, dtype}], TensorRT names) as io_spec."""
    specs = [TensorSpec.from_engine_io(t) for t in listed]
    return {"inputs": [t.to_io() for t in specs if t.mode == "input"],
            "outputs": [t.to_io() for t in specs if t.mode == "output"]}


def _io_from_conventions(meta: dict) -> dict | None:
    """The signature of a detector from its metadata alone (sidecars written before "io" was
    kept): inputs and every conventionally named output; None if an output is not one."""
    batch = meta["input"]["shape"][0]
    shapes = {LOGITS: ("float32", [batch, meta["head"]["num_classes"]]),
              IS_OOD: ("bool", [batch]), STREAM_ALARM: ("bool", [batch]),
              MONITOR_STATE_OUT: ("float32", [batch, 1])}
    outputs = []
    for name in meta.get("outputs", []):
        if name.startswith((SCORE_PREFIX, PVALUE_PREFIX)):
            outputs.append({"name": name, "dtype": "float32", "shape": [batch]})
        elif name in shapes:
            outputs.append({"name": name, "dtype": shapes[name][0], "shape": shapes[name][1]})
        else:
            return None
    inp = meta["input"]
    inputs = [{"name": inp["name"], "dtype": inp.get("dtype", "float32"), "shape": inp["shape"]}]
    return {"inputs": inputs, "outputs": outputs}


def open_detector(path) -> DeployedModel:
    """An .onnx detector or a TensorRT engine (.engine/.plan/.trt) with its .json sidecar."""
    path = Path(path)
    if not path.is_file():
        raise EdgeoodError(f"{path}: no such file; pass a detector (.onnx) or an engine with "
                           "its .json sidecar")
    if kind_of(path) == "engine":
        if not sidecar_path(path).is_file():
            raise EdgeoodError(f"{path} has no {sidecar_path(path).name} sidecar; keep the JSON "
                               "written by edgeood build next to the engine")
        meta = read_metadata(path)
        listed = (meta.get("engine") or {}).get("io")
        io = _engine_io(listed) if listed else (meta.get("io") or _io_from_conventions(meta))
        if io is None:
            raise EdgeoodError(f"{sidecar_path(path).name} has no 'io' entry (the engine's "
                               "inputs and outputs); rebuild the engine with this edgeood")
        det = DeployedModel(path, "engine", DetectorMetadata.from_dict(meta),
                            _tensors(io["inputs"]), _tensors(io["outputs"]))
        if len(det.data_inputs) > 1:
            raise EdgeoodError(f"{path} takes {', '.join(t.name for t in det.data_inputs)} "
                               "(both entries of a --input uint8 detector); a server feeds one: "
                               "build the engine from a single-entry copy "
                               "(edgeood.graph.preprocess.save_entry_point) or deploy the .onnx")
        return det
    meta, model = read_with_model(path)
    check_graph(path, meta, model)  # serve the threshold the graph applies, or refuse
    inputs, outputs = model_tensors(model)
    return DeployedModel(path, "onnx", DetectorMetadata.from_dict(meta), inputs, outputs)


def choose_entry(det: DeployedModel, entry: str | None) -> str:
    """'image' or 'float': the input a server feeds (default: the uint8 frames when there)."""
    has_image = det.input(IMAGE_INPUT) is not None
    if entry is None:
        return "image" if has_image else "float"
    if entry not in ("image", "uint8", "float"):
        raise EdgeoodError(f"{spell('input')} {entry} must be image (uint8 frames) or float")
    entry = "image" if entry == "uint8" else entry
    if entry == "image" and not has_image:
        raise EdgeoodError(f"{det.path} has no uint8 image input; re-export it with --input "
                           "uint8, or deploy its float input")
    if det.kind == "engine" and entry == "float" and has_image:
        raise EdgeoodError(f"{det.path} is an engine built for uint8 frames; it has no float "
                           "input (build another engine from the float entry)")
    return entry


def single_entry_model(det: DeployedModel, entry: str) -> onnx.ModelProto:
    """The ONNX detector with one input (the chosen entry), weights loaded."""
    from edgeood.graph.preprocess import entry_point
    model = onnx.load(str(det.path))
    if det.input(IMAGE_INPUT) is None:
        return model
    return entry_point(model, entry)


def entry_tensors(det: DeployedModel, entry: str) -> list[TensorSpec]:
    """The data inputs of the served model for the entry."""
    if det.kind == "engine" or det.input(IMAGE_INPUT) is None:
        return det.data_inputs
    keep = [t for t in det.data_inputs if (t.name == IMAGE_INPUT) == (entry == "image")]
    if entry == "image":
        keep = [TensorSpec(t.name, t.dtype, (det.inputs[0].shape[0], *t.shape[1:]), t.mode)
                for t in keep]
    return keep


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """An ONNX file; over 2 GB its weights go to '<name>.data' beside it."""
    from edgeood.artifact.metadata import MAX_PROTO_BYTES, save_external, too_big
    if too_big(model, MAX_PROTO_BYTES):
        save_external(model, path)
    else:
        onnx.save_model(model, str(path))


def write_text(path: Path, text: str) -> Path:
    """Write a file atomically, readable as the umask allows (another user serves it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, text)


def copy_file(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    return atomic_copy(src, dst)


def replace_dir(staging: Path, target: Path) -> None:
    """Move a fully written staging folder into place (an older target goes only then)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
