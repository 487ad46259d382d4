"""The detector's metadata: a versioned JSON document stored in the ONNX model's
metadata_props["edgeood"] and in a '<file>.json' sidecar; atomic saving of both."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import onnx

from edgeood.artifact.files import staging_dir
from edgeood.errors import EdgeoodError

SCHEMA_VERSION = 1
KEY = "edgeood"
MAX_PROTO_BYTES = 2_000_000_000


def sidecar_path(path: str | Path) -> Path:
    return Path(str(path) + ".json")


def dumps(meta: dict[str, Any]) -> str:
    return json.dumps(meta, indent=2, sort_keys=False, allow_nan=True)


def embed(model: onnx.ModelProto, meta: dict[str, Any]) -> None:
    """Put the metadata into metadata_props (replacing an earlier copy)."""
    keep = [p for p in model.metadata_props if p.key != KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key=KEY, value=json.dumps(meta, sort_keys=False))


def save_detector(model: onnx.ModelProto, meta: dict[str, Any], path: str | Path,
                  max_bytes: int | None = None) -> Path:
    """Save the detector and its sidecar; neither appears unless both were written. Models
    over ONNX's 2 GB protobuf limit keep their weights in '<file>.data' (external data)."""
    path = Path(path)
    if not path.parent.exists():
        raise EdgeoodError(f"output folder {path.parent} does not exist; create it or pass --out")
    embed(model, meta)
    limit = MAX_PROTO_BYTES if max_bytes is None else max_bytes
    external = too_big(model, limit)
    with staging_dir(path.parent, path.name) as staging:
        data_name = path.name + ".data"
        if external:
            save_external(model, staging / path.name)
        else:
            onnx.save_model(model, str(staging / path.name))
        (staging / (path.name + ".json")).write_text(dumps(meta))
        if external:
            os.replace(staging / data_name, path.parent / data_name)
        elif (path.parent / data_name).exists():
            os.unlink(path.parent / data_name)  # a stale weights file from an earlier save
        os.replace(staging / path.name, path)
        os.replace(staging / (path.name + ".json"), sidecar_path(path))
    return path


def save_external(model: onnx.ModelProto, path: Path) -> Path:
    """Save with every tensor over 1 kB in one '<name>.data' file beside the model."""
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return path


def too_big(model: onnx.ModelProto, limit: int) -> bool:
    try:
        return model.ByteSize() > limit
    except (ValueError, OverflowError):  # protobuf refuses to size messages over 2 GB
        return True


def session_source(model: onnx.ModelProto, workdir: str, max_bytes: int | None = None):
    """What ONNX Runtime can load: serialized bytes, or (over 2 GB) a file with external data."""
    limit = MAX_PROTO_BYTES if max_bytes is None else max_bytes
    if not too_big(model, limit):
        return model.SerializeToString()
    return save_external(model, Path(workdir) / "model.onnx")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a detector: from the ONNX file itself, else from its sidecar."""
    path = Path(path)
    if not path.is_file():
        raise EdgeoodError(f"{path}: no such file; pass a detector written by edgeood export")
    meta = None
    if path.suffix.lower() == ".onnx":
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception:
            raise EdgeoodError(f"{path} is not a readable ONNX file; pass a detector written by "
                               "edgeood export") from None
        props = {p.key: p.value for p in model.metadata_props}
        if KEY in props:
            meta = json.loads(props[KEY])
    if meta is None and sidecar_path(path).is_file():
        meta = json.loads(sidecar_path(path).read_text())
    if meta is None:
        raise EdgeoodError(f"{path} carries no edgeood metadata; make a detector from it with "
                           f"'edgeood export {path} --data ID_DIR'")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EdgeoodError(f"{path} has metadata schema {version}; this edgeood reads schema "
                           f"{SCHEMA_VERSION}: re-export it with this version")
    return meta


def read_constants(path: str | Path, prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The detector's initializers whose names start with one of prefixes (all without), as
    NumPy arrays: the statistics methods keep in the graph (Method.graph_arrays)."""
    import onnx.numpy_helper
    model = onnx.load(str(path))
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer
            if not prefixes or i.name.startswith(prefixes)}
