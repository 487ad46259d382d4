"""GStreamer camera loop: frames from a Jetson CSI camera, a USB camera or videotestsrc into an
edgeood detector through an appsink, the OOD decision drawn on each frame.

    python samples/gstreamer_camera.py DETECTOR --csi [--sensor-id 0]   # Jetson CSI camera
    python samples/gstreamer_camera.py DETECTOR --usb /dev/video0       # USB (V4L2) camera
    python samples/gstreamer_camera.py DETECTOR --test --frames 300     # videotestsrc
    options: --width 1280 --height 720 --fps 30, --display (a window; default: print one line
    per frame), --sink "x264enc ! mp4mux ! filesink location=out.mp4" (annotated frames),
    --json (JSON lines), --scale (let GStreamer scale to the model size: nvvidconv on Jetson)

Frames come as RGB (GRAY8 for 1-channel models) uint8 H x W x C. A detector exported with
`--input uint8` takes them as they are (the graph resizes and normalises); otherwise the
Detector preprocesses them on the host. Detectors that must not resize (their preprocessing
says resize=false) get frames scaled to their size by the pipeline. Needs PyGObject and
GStreamer (Debian/Ubuntu/JetPack: python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
gstreamer1.0-plugins-base gstreamer1.0-plugins-good; in a virtualenv `pip install PyGObject`
or the system's gi is used); no OpenCV needed (text is drawn when cv2 is installed).
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

OK_COLOR, OOD_COLOR = (0, 200, 0), (230, 0, 0)


def import_gst():
    """(Gst, GstApp, GstVideo or None), initialised; the system's gi when the virtualenv has
    none (Debian installs PyGObject for the system Python only)."""
    try:
        import gi
    except ImportError:
        tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
        for folder in ("/usr/lib/python3/dist-packages", "/usr/lib/python3-dist-packages"):
            if glob.glob(f"{folder}/gi/_gi.{tag}*.so"):
                sys.path.append(folder)
                break
        import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstApp", "1.0")
    from gi.repository import Gst, GstApp
    try:
        gi.require_version("GstVideo", "1.0")
        from gi.repository import GstVideo
    except (ValueError, ImportError):
        GstVideo = None
    Gst.init(None)
    return Gst, GstApp, GstVideo


def pipeline_description(source: str, width: int = 1280, height: int = 720, fps: int = 30,
                         channels: int = 3, scale_to: tuple[int, int] | None = None,
                         frames: int = 0, sensor_id: int = 0, device: str = "/dev/video0",
                         pattern: str = "ball", live: bool = True) -> str:
    """The pipeline string ending in `appsink name=frames`. source: csi (nvarguscamerasrc,
    Jetson), usb (v4l2src) or test (videotestsrc). scale_to: (H, W) the frames are scaled to
    in the pipeline (nvvidconv on Jetson, videoscale elsewhere)."""
    fmt = "GRAY8" if channels == 1 else "RGB"
    size = f",width={scale_to[1]},height={scale_to[0]}" if scale_to else ""
    count = f" num-buffers={frames}" if frames else ""
    # a live camera keeps only the newest frame; a test source hands over every frame
    sink = (f"appsink name=frames sync=false max-buffers={1 if live else 8} "
            f"drop={'true' if live else 'false'}")
    if source == "csi":
        return (f"nvarguscamerasrc sensor-id={sensor_id}{count} ! "
                f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1 ! "
                f"nvvidconv ! video/x-raw,format=BGRx{size} ! videoconvert ! "
                f"video/x-raw,format={fmt} ! {sink}")
    if source == "usb":
        return (f"v4l2src device={device}{count} ! "
                f"video/x-raw,width={width},height={height},framerate={fps}/1 ! videoconvert ! "
                f"videoscale ! video/x-raw,format={fmt}{size} ! {sink}")
    if source == "test":
        return (f"videotestsrc pattern={pattern}{count} ! "
                f"video/x-raw,width={width},height={height},framerate={fps}/1 ! videoconvert ! "
                f"videoscale ! video/x-raw,format={fmt}{size} ! {sink}")
    raise ValueError(f"source {source!r} must be csi, usb or test")


def sample_to_frame(sample, GstVideo=None) -> np.ndarray:
    """A Gst.Sample of RGB / GRAY8 video as an H x W x C uint8 array (row padding removed)."""
    caps = sample.get_caps()
    s = caps.get_structure(0)
    width, height = s.get_value("width"), s.get_value("height")
    channels = 1 if s.get_value("format") == "GRAY8" else 3
    stride = None
    if GstVideo is not None:
        info = GstVideo.VideoInfo.new_from_caps(caps) if hasattr(GstVideo.VideoInfo,
                                                                 "new_from_caps") else None
        if info is None:
            info = GstVideo.VideoInfo()
            info.from_caps(caps)
        stride = info.stride[0]
    if stride is None:
        stride = (width * channels + 3) // 4 * 4  # GStreamer's default: rows padded to 4 bytes
    from gi.repository import Gst
    buf = sample.get_buffer()
    ok, mapped = buf.map(Gst.MapFlags.READ)
    if not ok:
        raise RuntimeError("cannot map the GStreamer buffer")
    try:
        data = np.frombuffer(mapped.data, np.uint8, count=stride * height)
        frame = data.reshape(height, stride)[:, :width * channels]
        return frame.reshape(height, width, channels).copy()
    finally:
        buf.unmap(mapped)


def draw_decision(frame: np.ndarray, is_ood: bool, pvalue: float | None = None,
                  text: str | None = None) -> np.ndarray:
    """A copy of the frame with a border (red: OOD, green: ok) and a p-value bar along the
    top edge; the text too when OpenCV is installed."""
    out = frame.copy()
    h, w = out.shape[:2]
    color = np.asarray(OOD_COLOR if is_ood else OK_COLOR, np.float32)
    value = color if out.shape[2] == 3 else np.asarray([color.mean()], np.float32)
    t = max(1, min(h, w) // 40)
    for region in (out[:t], out[-t:], out[:, :t], out[:, -t:]):
        region[:] = value.astype(np.uint8)
    if pvalue is not None and np.isfinite(pvalue):
        out[t:2 * t, t:t + int((w - 2 * t) * min(max(pvalue, 0.0), 1.0))] = 255
    if text:
        try:
            import cv2
            cv2.putText(out, text, (2 * t, 4 * t + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        tuple(int(v) for v in value) if out.shape[2] == 3 else int(value[0]),
                        1)
        except ImportError:
            pass
    return out


@dataclass
class FrameResult:
    index: int
    frame: np.ndarray
    label: int
    scores: dict
    pvalues: dict
    is_ood: bool
    annotated: np.ndarray

    def row(self) -> dict:
        return {"frame": self.index, "label": self.label, "scores": self.scores,
                "pvalues": self.pvalues, "is_ood": self.is_ood}


def frames(description: str, max_frames: int = 0, timeout_s: float = 10.0
           ) -> Iterator[np.ndarray]:
    """Run the pipeline and yield its appsink's frames until EOS (or max_frames)."""
    Gst, _, GstVideo = import_gst()
    pipeline = Gst.parse_launch(description)
    sink = pipeline.get_by_name("frames")
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        raise RuntimeError(f"the pipeline does not start: {description}")
    bus = pipeline.get_bus()
    n = 0
    try:
        while not max_frames or n < max_frames:
            sample = sink.try_pull_sample(int(timeout_s * Gst.SECOND))
            if sample is None:
                msg = bus.pop_filtered(Gst.MessageType.ERROR)
                if msg is not None:
                    raise RuntimeError(msg.parse_error()[0].message)
                if sink.is_eos():
                    break
                raise RuntimeError(f"no frame within {timeout_s} s from: {description}")
            yield sample_to_frame(sample, GstVideo)
            n += 1
    finally:
        pipeline.set_state(Gst.State.NULL)


class FrameSink:
    """Annotated frames pushed into `appsrc ! videoconvert ! <sink>` (a window by default)."""

    def __init__(self, sink: str = "autovideosink", fps: int = 30):
        self.Gst, _, _ = import_gst()
        self.sink, self.fps = sink, fps
        self.pipeline = self.src = None
        self.count = 0

    def push(self, frame: np.ndarray) -> None:
        Gst = self.Gst
        h, w, c = frame.shape
        if self.pipeline is None:
            fmt = "GRAY8" if c == 1 else "RGB"
            self.pipeline = Gst.parse_launch(
                f"appsrc name=src is-live=false format=time caps=video/x-raw,format={fmt},"
                f"width={w},height={h},framerate={self.fps}/1 ! videoconvert ! {self.sink}")
            self.src = self.pipeline.get_by_name("src")
            self.pipeline.set_state(Gst.State.PLAYING)
        data = np.ascontiguousarray(frame)
        if (w * c) % 4:  # GStreamer expects rows padded to 4 bytes
            pad = (w * c + 3) // 4 * 4 - w * c
            data = np.ascontiguousarray(np.pad(data.reshape(h, w * c), ((0, 0), (0, pad))))
        buf = Gst.Buffer.new_wrapped(data.tobytes())
        buf.pts = self.count * Gst.SECOND // self.fps
        buf.duration = Gst.SECOND // self.fps
        if self.src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            raise RuntimeError(f"the sink pipeline refused frame {self.count}")
        self.count += 1

    def close(self) -> None:
        if self.pipeline is None:
            return
        Gst = self.Gst
        self.src.emit("end-of-stream")
        self.pipeline.get_bus().timed_pop_filtered(5 * Gst.SECOND,
                                                   Gst.MessageType.EOS | Gst.MessageType.ERROR)
        self.pipeline.set_state(Gst.State.NULL)


def camera_loop(detector, description: str, max_frames: int = 0,
                sink: FrameSink | None = None) -> Iterator[FrameResult]:
    """Each frame of the pipeline through the detector (batch 1, as a camera loop runs)."""
    p = detector.primary
    for i, frame in enumerate(frames(description, max_frames)):
        r = detector(frame)
        is_ood = bool(r.is_ood[0]) if r.is_ood is not None else False
        pvalue = float(r.pvalues[p][0]) if p in r.pvalues else None
        text = f"{int(r.labels[0])} {p} {float(r.scores[p][0]):.2f} {'OOD' if is_ood else 'ok'}"
        annotated = draw_decision(frame, is_ood, pvalue, text)
        if sink is not None:
            sink.push(annotated)
        yield FrameResult(i, frame, int(r.labels[0]),
                          {m: float(s[0]) for m, s in r.scores.items()},
                          {m: float(v[0]) for m, v in r.pvalues.items()}, is_ood, annotated)


def model_scaling(detector, force: bool) -> tuple[int, int] | None:
    """The size the pipeline scales to: the model's when asked, or when it must not resize."""
    pre = detector.preprocess
    return tuple(pre.size) if force or not pre.resize else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("detector")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--csi", action="store_true", help="Jetson CSI camera (nvarguscamerasrc)")
    src.add_argument("--usb", metavar="DEVICE", help="V4L2 camera, e.g. /dev/video0")
    src.add_argument("--test", action="store_true", help="videotestsrc")
    ap.add_argument("--sensor-id", type=int, default=0)
    ap.add_argument("--pattern", default="ball", help="videotestsrc pattern")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--frames", type=int, default=0, help="stop after N frames (0: never)")
    ap.add_argument("--scale", action="store_true", help="scale to the model size in the "
                    "pipeline")
    ap.add_argument("--display", action="store_true", help="show the annotated frames")
    ap.add_argument("--sink", help="GStreamer sink for the annotated frames")
    ap.add_argument("--json", action="store_true", help="JSON lines")
    args = ap.parse_args(argv)

    import edgeood
    det = edgeood.load(args.detector)
    source = "csi" if args.csi else "usb" if args.usb else "test"
    desc = pipeline_description(source, args.width, args.height, args.fps,
                                det.preprocess.channels, model_scaling(det, args.scale),
                                args.frames, args.sensor_id, args.usb or "/dev/video0",
                                args.pattern, live=source != "test")
    sink = FrameSink(args.sink or "autovideosink", args.fps) \
        if (args.display or args.sink) else None
    n = n_ood = 0
    try:
        for res in camera_loop(det, desc, args.frames, sink):
            n, n_ood = n + 1, n_ood + res.is_ood
            if args.json:
                print(json.dumps(res.row()), flush=True)
            elif sink is None:
                p = det.primary
                print(f"frame {res.index}: class {res.label} {p} {res.scores[p]:.3f} "
                      f"p={res.pvalues.get(p, float('nan')):.3f} "
                      f"{'OOD' if res.is_ood else 'ok'}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if sink is not None:
            sink.close()
    print(f"{n} frames, {n_ood} flagged OOD by {det.primary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
