"""In-graph preprocessing: camera frames go into the detector as they come (`--input uint8`).

The graph gets the input `image` (uint8, N x H x W x C, RGB like the Detector's uint8 images;
H and W free when the preprocessing resizes, else the model's size) next to the float input:

    image -> Cast float32 -> Transpose to N x C x H x W
          -> Resize to the model's H x W (ONNX Resize, linear, half_pixel, no antialiasing:
             edgeood/resize.py; only when the preprocessing resizes)
          -> RGB to BGR (BGR models) -> / 255 -> - mean -> / std
    x = Concat(input, preprocessed image) along the batch axis -> the classifier and the heads

The float input stays: calibration and `edgeood calibrate` feed it (host preprocessing with the
same resize rule), and so do callers with preprocessed float arrays. ONNX Runtime needs every
graph input fed, so the unused entry gets an empty batch (0 x ...): the ORT backend does this.
Servers that take one input (Triton, DeepStream, a TensorRT engine) get a single-entry copy,
`entry_point(model, "image" | "float")`: the Concat becomes an Identity of the chosen branch,
the other input and its nodes go.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgeood.artifact.names import IMAGE_INPUT
from edgeood.data import Preprocess
from edgeood.errors import EdgeoodError, spell
from edgeood.graph.model import batch_dim
from edgeood.graph.ops import constant, scope
from edgeood.graph.signature import io_spec
from edgeood.resize import HALF_PIXEL_LINEAR

SCOPE = "preprocess"
ENTRIES = ("image", "float")
F32 = np.float32


def image_input(graph: gs.Graph) -> gs.Variable | None:
    return next((t for t in graph.inputs if t.name == IMAGE_INPUT), None)


def add_image_input(graph: gs.Graph, pre: Preprocess) -> gs.Variable:
    """Add `image` and the preprocessing nodes; every consumer of the float input then reads
    the batch of both entries joined. Returns the new input."""
    if image_input(graph) is not None:
        raise EdgeoodError(f"the graph has an input named {IMAGE_INPUT} already; rename it")
    x = graph.inputs[0]
    n = batch_dim(graph)
    if isinstance(n, int):
        raise EdgeoodError(f"{spell('input')} uint8 needs a dynamic batch axis, but the model "
                           f"has a fixed "
                           f"batch of {n}; re-export it with a dynamic batch (torch.onnx.export "
                           "dynamic_axes) or use the float input")
    c, (h, w) = pre.channels, pre.size
    dims = ["image_height", "image_width"] if pre.resize else [h, w]
    image = gs.Variable(IMAGE_INPUT, dtype=np.uint8, shape=["image_batch", *dims, c])
    consumers = [node for node in graph.nodes if any(t is x for t in node.inputs)]
    with scope(graph, SCOPE):
        t = graph.transpose(graph.cast(image, F32), [0, 3, 1, 2])
        if pre.resize:
            sizes = graph.concat([graph.slice_(graph.shape(t), 0, 2, 0),
                                  constant(graph, [h, w], dtype=np.int64)], 0)
            t = graph.resize(t, sizes, "linear", "half_pixel")
        t = graph.div(t, F32(255.0))
        if pre.color == "BGR":
            t = graph.gather(t, np.asarray([2, 1, 0], np.int64), axis=1)
        t = graph.sub(t, np.asarray(pre.mean, F32).reshape(1, c, 1, 1))
        t = graph.div(t, np.asarray(pre.std, F32).reshape(1, c, 1, 1))
        dtype = np.dtype(x.dtype).type if x.dtype is not None else F32
        if dtype is not F32:  # e.g. a --half graph whose input is float16
            t = graph.cast(t, dtype)
        joined = graph.concat([x, t], 0)
    joined.shape, joined.dtype = [n, c, h, w], dtype
    for node in consumers:
        node.inputs = [joined if i is x else i for i in node.inputs]
    graph.inputs = [x, image, *graph.inputs[1:]]
    graph.cleanup().toposort()
    return image


def image_metadata(pre: Preprocess) -> dict:
    """The metadata entry of the uint8 input (under "input")."""
    h, w = pre.size
    return {"name": IMAGE_INPUT, "dtype": "uint8", "layout": "NHWC",
            "shape": ["batch", *(["image_height", "image_width"] if pre.resize else [h, w]),
                      pre.channels],
            "color": "GRAY" if pre.channels == 1 else "RGB",
            "resize": (f"to {h}x{w} in the graph ({HALF_PIXEL_LINEAR}: ONNX Resize linear, "
                       "half_pixel, no antialiasing)") if pre.resize else None,
            "note": "cast, resize, normalise and transpose happen in the graph; feed the "
                    "unused entry (float input or image) an empty batch"}


def entry_point(model: onnx.ModelProto, which: str) -> onnx.ModelProto:
    """A copy with one input: "image" (uint8 frames) or "float" (preprocessed N x C x H x W).
    A detector without the uint8 input is returned as it is for "float"."""
    if which not in ENTRIES:
        raise EdgeoodError(f"entry {which!r} must be one of {', '.join(ENTRIES)}")
    graph = gs.import_onnx(model)
    image = image_input(graph)
    if image is None:
        if which == "float":
            return model
        raise EdgeoodError("the detector has no uint8 image input; re-export it with "
                           "--input uint8 (or deploy its float input)")
    x = next(t for t in graph.inputs if t is not image)
    join = next((node for node in graph.nodes if node.op == "Concat"
                 and node.name.startswith(SCOPE + "/") and any(t is x for t in node.inputs)),
                None)
    if join is None:
        raise EdgeoodError("the detector's image input is not joined to its float input as "
                           "edgeood writes it; re-export it with --input uint8")
    keep = join.inputs[1] if which == "image" else join.inputs[0]
    join.op, join.inputs, join.attrs = "Identity", [keep], {}
    drop = x if which == "image" else image
    graph.inputs = [t for t in graph.inputs if t is not drop]
    if which == "image":
        image.shape = ["batch", *image.shape[1:]]
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    for prop in model.metadata_props:
        value = prop.value
        if prop.key == "edgeood":
            meta = json.loads(value)
            meta["io"] = io_spec(graph)
            meta["entry"] = which
            value = json.dumps(meta, sort_keys=False)
        out.metadata_props.add(key=prop.key, value=value)
    return out


def save_entry_point(detector, which: str, out):
    """Write a single-entry copy of a saved detector (and its sidecar), e.g. to build an engine
    that a server feeds with one input: `edgeood build OUT` afterwards."""
    from pathlib import Path

    from edgeood.graph.model import load_model
    from edgeood.artifact.metadata import KEY, save_detector
    single = entry_point(load_model(detector), which)
    meta = json.loads({p.key: p.value for p in single.metadata_props}[KEY])
    return save_detector(single, meta, Path(out))


def entry_model(detector, which: str, frame=None) -> tuple[onnx.ModelProto, dict]:
    """The single-entry detector `edgeood build --input uint8|float` compiles, in memory:
    (model, metadata). "uint8" gives the camera-frame entry `image` (added here, in the graph,
    when the detector was exported without --input uint8: the scores, thresholds and references
    do not change, since the image branch feeds the same backbone), "float" the preprocessed
    N x C x H x W entry. frame: ((min H, min W), (opt H, opt W), (max H, max W)) of the camera
    frames, all three equal for a fixed frame size: a fixed size is written into the image
    input's shape, a range leaves H and W free (the engine's optimization profile covers it)."""
    from edgeood.graph.model import load_model
    from edgeood.artifact.metadata import KEY, read_metadata
    entry = {"uint8": "image", "image": "image", "float": "float"}.get(which)
    if entry is None:
        raise EdgeoodError(f"{spell('input')} {which!r} must be uint8 (camera frames) or float")
    if frame is not None and entry != "image":
        raise EdgeoodError(f"{spell('frame_size')} is the camera frame of the uint8 entry: add "
                           f"--input "
                           "uint8 (or drop --frame-size)")
    model = load_model(detector)
    graph = gs.import_onnx(model)
    if entry == "image" and image_input(graph) is None:
        meta = read_metadata(detector)
        pre = Preprocess.from_dict(meta["preprocessing"])
        add_image_input(graph, pre)
        meta["input"]["image"] = image_metadata(pre)
        meta["preprocessing"] = {**pre.to_dict(), "in_graph": IMAGE_INPUT}
        meta["io"] = io_spec(graph)
        model = gs.export_onnx(graph)
        model.metadata_props.add(key=KEY, value=json.dumps(meta, sort_keys=False))
    single = entry_point(model, entry)
    meta = json.loads({p.key: p.value for p in single.metadata_props}[KEY])
    if entry == "image":
        single, meta = _frame_shape(single, meta, frame)
    return single, meta


def _frame_shape(model: onnx.ModelProto, meta: dict, frame) -> tuple[onnx.ModelProto, dict]:
    """The image input's H and W: checked against a preprocessing that does not resize, fixed
    to the frame size when min = opt = max."""
    graph = gs.import_onnx(model)
    image = image_input(graph)
    h, w = image.shape[1], image.shape[2]
    if isinstance(h, int) and isinstance(w, int):  # no resize in the graph: the model's size
        if frame is not None and any(tuple(s) != (h, w) for s in frame):
            raise EdgeoodError(f"{spell('frame_size')}: this detector takes frames of {h}x{w} "
                               f"only (its "
                               f"preprocessing does not resize); pass --frame-size {h}x{w} or "
                               "drop it")
        return model, meta
    if frame is None or len(set(map(tuple, frame))) > 1:
        return model, meta
    fh, fw = frame[0]
    image.shape = [image.shape[0], int(fh), int(fw), image.shape[3]]
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    meta["io"] = io_spec(graph)
    meta["input"]["image"]["shape"] = ["batch", int(fh), int(fw), image.shape[3]]
    del out.metadata_props[:]
    for prop in model.metadata_props:
        out.metadata_props.add(key=prop.key, value=json.dumps(meta, sort_keys=False)
                               if prop.key == "edgeood" else prop.value)
    return out, meta


def build_entry(detector, which: str, out, frame=None) -> "object":
    """entry_model() written to `out` with its sidecar (atomically); returns its path."""
    from pathlib import Path

    from edgeood.artifact.metadata import save_detector
    single, meta = entry_model(detector, which, frame)
    return save_detector(single, meta, Path(out))
