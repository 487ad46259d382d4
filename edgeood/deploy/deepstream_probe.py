#!/usr/bin/env python3
"""edgeood DeepStream probe: run the detector in nvinfer and read its OOD outputs.

Written next to the nvinfer config by `edgeood deploy deepstream DETECTOR --out DIR`:

    python3 DIR/edgeood_probe.py --config DIR/config_infer_NAME.txt --uri file:///path/clip.mp4
    python3 DIR/edgeood_probe.py --config DIR/config_infer_NAME.txt --csi        # Jetson CSI
    python3 DIR/edgeood_probe.py --config DIR/config_infer_NAME.txt --usb /dev/video0

Pipeline: source -> nvstreammux -> nvinfer (network-type=100, output-tensor-meta=1) ->
fakesink, or nvdsosd + a window with --display. A pad probe after nvinfer reads every output
tensor of each frame from NvDsInferTensorMeta (the frame's user meta), and prints one JSON
line per frame: source, frame, label, scores, pvalues, is_ood (the graph's decision) and
is_ood_check (not score_primary >= threshold, from NAME.deepstream.json; NaN is OOD). Needs
DeepStream 6.x/7.x and its Python bindings (pyds); only the decoding below runs without them.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np

# NvDsInferDataType: FLOAT, HALF, INT8, INT32 (nvdsinfer.h)
NVDS_DTYPES = {0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32}


def load_spec(config: Path) -> dict:
    """NAME.deepstream.json beside config_infer_NAME.txt."""
    name = config.stem.removeprefix("config_infer_")
    return json.loads((config.parent / f"{name}.deepstream.json").read_text())


def frame_result(layers: dict[str, np.ndarray], spec: dict) -> dict:
    """One frame's outputs (by layer name, without the batch axis) as a JSON-ready row."""
    primary = spec["primary"]
    scores = {n[len("score_"):]: float(v.reshape(-1)[0]) for n, v in layers.items()
              if n.startswith("score_")}
    pvalues = {n[len("pvalue_"):]: float(v.reshape(-1)[0]) for n, v in layers.items()
               if n.startswith("pvalue_")}
    row = {"label": int(np.argmax(layers["logits"].reshape(-1))), "scores": scores,
           "pvalues": pvalues}
    if "is_ood" in layers:
        row["is_ood"] = bool(layers["is_ood"].reshape(-1)[0])
    threshold = spec["thresholds"].get(primary)
    if threshold is not None and primary in scores:
        row["is_ood_check"] = not bool(scores[primary] >= threshold)   # NaN: OOD, like the graph
    return row


def layer_array(pyds, layer) -> np.ndarray:
    """A copy of one NvDsInferLayerInfo's host buffer (nvinfer with output-tensor-meta=1
    points `buffer` at this frame's host copy)."""
    dtype = np.dtype(NVDS_DTYPES.get(int(layer.dataType), np.float32))
    shape = getattr(layer, "dims", None) or layer.inferDims
    dims = [shape.d[i] for i in range(shape.numDims)]
    count = int(np.prod(dims)) if dims else 1
    ptr = ctypes.cast(pyds.get_ptr(layer.buffer), ctypes.POINTER(ctypes.c_uint8))
    raw = np.ctypeslib.as_array(ptr, shape=(count * dtype.itemsize,))
    return raw.view(dtype).reshape(dims or [1]).copy()


def make_probe(pyds, spec: dict, emit):
    """The pad probe: one frame_result per frame with tensor meta."""
    from gi.repository import Gst

    def probe(pad, info, _data):
        buf = info.get_buffer()
        batch = pyds.gst_buffer_get_nvds_batch_meta(hash(buf))
        l_frame = batch.frame_meta_list
        while l_frame is not None:
            frame = pyds.NvDsFrameMeta.cast(l_frame.data)
            l_user = frame.frame_user_meta_list
            while l_user is not None:
                user = pyds.NvDsUserMeta.cast(l_user.data)
                if user.base_meta.meta_type == pyds.NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META:
                    meta = pyds.NvDsInferTensorMeta.cast(user.user_meta_data)
                    layers = {}
                    for i in range(meta.num_output_layers):
                        layer = pyds.get_nvds_LayerInfo(meta, i)
                        if not layer.isInput:
                            layers[layer.layerName] = layer_array(pyds, layer)
                    row = {"source": int(frame.source_id), "frame": int(frame.frame_num),
                           **frame_result(layers, spec)}
                    emit(row, frame, batch)
                l_user = l_user.next
            l_frame = l_frame.next
        return Gst.PadProbeReturn.OK
    return probe


def source_description(args, width: int, height: int) -> str:
    caps = f"video/x-raw(memory:NVMM),format=NV12,width={width},height={height}"
    if args.csi:
        return (f"nvarguscamerasrc sensor-id={args.sensor_id} ! {caps},framerate=30/1 "
                "! m.sink_0")
    if args.usb:
        return (f"v4l2src device={args.usb} ! videoconvert ! nvvideoconvert ! {caps} "
                "! m.sink_0")
    return f"uridecodebin uri={args.uri} ! nvvideoconvert ! {caps} ! m.sink_0"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True, help="config_infer_NAME.txt")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--uri", help="a file:// or rtsp:// URI")
    src.add_argument("--csi", action="store_true", help="Jetson CSI camera (nvarguscamerasrc)")
    src.add_argument("--usb", help="a V4L2 device, e.g. /dev/video0")
    ap.add_argument("--sensor-id", type=int, default=0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--display", action="store_true", help="draw the decision in a window")
    ap.add_argument("--frames", type=int, default=0, help="stop after N frames (0: never)")
    args = ap.parse_args()

    import gi
    gi.require_version("Gst", "1.0")
    import pyds
    from gi.repository import GLib, Gst

    spec = load_spec(args.config)
    Gst.init(None)
    sink = ("nvdsosd name=osd ! nvegltransform ! nveglglessink" if args.display
            else "fakesink sync=false")
    desc = (f"nvstreammux name=m batch-size=1 width={args.width} height={args.height} "
            "live-source=1 ! nvinfer name=infer "
            f"config-file-path={args.config.resolve()} ! nvvideoconvert ! {sink} "
            + source_description(args, args.width, args.height))
    pipeline = Gst.parse_launch(desc)
    loop = GLib.MainLoop()
    seen = {"n": 0}

    def emit(row, frame, batch):
        print(json.dumps(row), flush=True)
        if args.display:
            display = pyds.nvds_acquire_display_meta_from_pool(batch)
            display.num_labels = 1
            text = display.text_params[0]
            p = spec["primary"]
            text.display_text = (f"class {row['label']} {p} {row['scores'][p]:.3f} "
                                 f"p={row['pvalues'].get(p, float('nan')):.3f} "
                                 f"{'OOD' if row.get('is_ood') else 'ok'}")
            text.x_offset, text.y_offset = 10, 12
            text.font_params.font_name, text.font_params.font_size = "Sans", 14
            red = bool(row.get("is_ood"))
            text.font_params.font_color.set(1.0, 0.2 if red else 1.0, 0.2 if red else 1.0, 1.0)
            text.set_bg_clr = 1
            text.text_bg_clr.set(0.0, 0.0, 0.0, 0.6)
            pyds.nvds_add_display_meta_to_frame(frame, display)
        seen["n"] += 1
        if args.frames and seen["n"] >= args.frames:
            GLib.idle_add(loop.quit)

    pad = pipeline.get_by_name("infer").get_static_pad("src")
    pad.add_probe(Gst.PadProbeType.BUFFER, make_probe(pyds, spec, emit), None)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message::eos", lambda *_: loop.quit())
    bus.connect("message::error", lambda _b, m: (print(m.parse_error()[0].message,
                                                        file=sys.stderr), loop.quit()))
    pipeline.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    finally:
        pipeline.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
