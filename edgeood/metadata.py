"""The detector's metadata: a versioned JSON document stored in the ONNX model's
metadata_props["edgeood"] and in a '<file>.json' sidecar; atomic saving of both."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx

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


def _atomic_write(path: Path, write) -> Path:
    """Write to a temporary file in the target folder; the caller renames it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def save_detector(model: onnx.ModelProto, meta: dict[str, Any], path: str | Path) -> Path:
    """Save the detector and its sidecar; neither appears unless both were written."""
    path = Path(path)
    if not path.parent.exists():
        raise EdgeoodError(f"output folder {path.parent} does not exist; create it or pass --out")
    embed(model, meta)
    if model.ByteSize() > MAX_PROTO_BYTES:
        raise EdgeoodError("the detector exceeds ONNX's 2 GB protobuf limit; external-data "
                           "saving is not implemented yet: use fewer or smaller methods")
    tmp_model = _atomic_write(path, lambda t: onnx.save_model(model, t))
    try:
        tmp_side = _atomic_write(path, lambda t: Path(t).write_text(dumps(meta)))
    except BaseException:
        os.unlink(tmp_model)
        raise
    os.replace(tmp_model, path)
    os.replace(tmp_side, sidecar_path(path))
    return path


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
