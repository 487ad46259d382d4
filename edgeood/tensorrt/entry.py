"""`edgeood build --input uint8|float [--frame-size ...]`: the single-entry detector an engine is
built from, made in memory and checked by validate_build before anything is written; only then
is it saved beside the detector (atomically, with its sidecar) as <stem>.<input>.onnx."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeood.artifact.files import is_engine
from edgeood.artifact.metadata import save_detector
from edgeood.errors import EdgeoodError
from edgeood.tensorrt.builder import BuildRequest, Frame, validate_build


def entry_path(detector: Path, which: str) -> Path:
    """det.onnx -> det.uint8.onnx (or det.float.onnx)."""
    return detector.with_name(f"{detector.name.removesuffix('.onnx')}.{which}.onnx")


def prepare_build(detector: str | Path, input: str | None = None,
                  frame_size: Frame | None = None, **build: Any) -> BuildRequest:
    """validate_build(detector, **build), first turning the detector into its `input` entry
    (edgeood.graph.preprocess.entry_model: uint8 camera frames of frame_size, or float) when
    input is given. The entry detector is written only once the whole build validates."""
    path = Path(detector)
    if input is None:
        return validate_build(path, frame_size=frame_size, **build)
    if is_engine(path) or path.suffix.lower() != ".onnx" or not path.is_file():
        return validate_build(path, **build)  # its one-line refusal of the file
    from edgeood.graph.preprocess import entry_model
    model, meta = entry_model(path, input, frame_size)
    target = entry_path(path, input)
    if target.resolve() == path.resolve():
        raise EdgeoodError(f"{path} is already the {input} entry of a detector; build it without "
                           "--input")
    req = validate_build(target, frame_size=frame_size, model=model, meta=meta, **build)
    save_detector(model, meta, target)
    return req
