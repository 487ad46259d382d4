"""`edgeood watch`: run a detector over a stream of frames and ring the stream-level shift alarm
(edgeood.StreamMonitor over the per-frame p-values).

A stream is a video file or a camera index (read with OpenCV, when installed), a folder of
images (in name order), one image, or a .npy/.npz array of frames (in order).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from edgeood.artifact.names import IS_OOD, LOGITS, pvalue_name
from edgeood.data import Preprocess, open_source
from edgeood.errors import EdgeoodError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".mjpeg", ".h264", ".ts"}


@dataclass
class WatchFrame:
    """One frame of the stream: the monitor's step and the detector's per-frame outputs."""

    frame: int
    source: str
    statistic: float
    alarm: bool
    used: bool
    label: int
    is_ood: bool | None
    pvalues: dict[str, float] = field(default_factory=dict)
    rang: bool = False  # the alarm rang on this frame
    primary: str = ""   # the method behind is_ood
    alpha: float | None = None  # a monitored method calls a frame OOD at p-value <= alpha
    name: str | None = None     # the predicted class's name (when the detector has names)

    def to_dict(self) -> dict:
        return {"frame": self.frame, "source": self.source, "statistic": self.statistic,
                "alarm": self.alarm, "rang": self.rang, "used": self.used, "label": self.label,
                "is_ood": self.is_ood, "pvalues": self.pvalues,
                **({"name": self.name} if self.name is not None else {})}


def is_camera(source: str) -> bool:
    return str(source).isdigit() and not Path(str(source)).exists()


def frame_batches(source, pre: Preprocess, batch: int = 32, max_frames: int | None = None,
                  strict: bool = False) -> Iterator[tuple[list[str], np.ndarray]]:
    """(names, float32 N x C x H x W) in stream order. Videos and cameras: one frame at a time."""
    text = str(source)
    if is_camera(text) or Path(text).suffix.lower() in VIDEO_SUFFIXES:
        it = _opencv_frames(int(text) if is_camera(text) else text, pre)
        for i, (name, x) in enumerate(it):
            if max_frames is not None and i >= max_frames:
                return
            yield [name], x
        return
    src = open_source(source, strict=strict)
    names = [str(f) for f in src.files] if src.files is not None else \
        [f"{src.name}[{i}]" for i in range(len(src))]
    start = 0
    for b in src.batches(pre, batch):
        if max_frames is not None and start >= max_frames:
            return
        keep = len(b.x) if max_frames is None else min(len(b.x), max_frames - start)
        yield names[start:start + keep], b.x[:keep]
        start += keep


def _opencv_frames(src, pre: Preprocess) -> Iterator[tuple[str, np.ndarray]]:
    what = f"camera {src}" if isinstance(src, int) else str(src)
    try:
        import cv2
    except ImportError:
        raise EdgeoodError(f"reading {what} needs OpenCV: pip install opencv-python (or pass a "
                           "folder of images or a .npy/.npz of frames)") from None
    if isinstance(src, str) and not Path(src).is_file():
        raise EdgeoodError(f"{src}: no such video file")
    cap = cv2.VideoCapture(src)
    if not cap.isOpened():
        raise EdgeoodError(f"OpenCV cannot open {what}; check the path or camera index (and that "
                           "OpenCV was built with the codec)")
    try:
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            if pre.channels == 1:
                img = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[:, :, None]
            else:
                img = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            name = f"{what}[{i}]"
            yield name, pre.normalize(pre.fit_image(img, name)[None])
            i += 1
    finally:
        cap.release()


def watch(detector, monitor, source, batch: int = 32, max_frames: int | None = None,
          strict: bool = False) -> Iterator[WatchFrame]:
    """Run detector over source frame by frame (batched where the source allows) and feed the
    p-values of the monitor's methods to monitor, in order."""
    methods = monitor.methods or [detector.primary]
    backend = detector.backend
    wanted = [LOGITS] + [pvalue_name(m) for m in methods]
    missing = [n for n in wanted if n not in backend.output_names]
    if missing:
        raise EdgeoodError(f"the detector has no output {missing[0]}; calibrate it first "
                           "(edgeood calibrate DETECTOR --data ID_DIR)")
    names = wanted + ([IS_OOD] if IS_OOD in backend.output_names else [])
    alpha = 1.0 - float(detector.metadata.get("tpr", 0.95))
    class_names = detector.class_names
    for batch_names, x in frame_batches(source, detector.preprocess, batch, max_frames,
                                            strict):
        out = backend.run(x, names)
        pv = {m: out[pvalue_name(m)] for m in methods}
        steps = monitor.update_batch(pv if monitor.methods else pv[methods[0]])
        for i, name in enumerate(batch_names):
            label = int(out[LOGITS][i].argmax())
            yield WatchFrame(int(steps.frame[i]), name, float(steps.statistic[i]),
                             bool(steps.alarm[i]), bool(steps.used[i]),
                             label,
                             bool(out[IS_OOD][i]) if IS_OOD in out else None,
                             {m: float(pv[m][i]) for m in methods}, bool(steps.rang[i]),
                             detector.primary, alpha,
                             class_names[label] if class_names else None)


def open_monitor(detector, state: Path | None = None, arl=None, delta=None, stride=None,
                 methods=None, rearm: bool = False):
    """The stream monitor to feed: the one saved in `state` (its settings win) or a fresh one
    from the detector's defaults and the given options."""
    from edgeood.stats.monitor import StreamMonitor
    if state is not None and Path(state).is_file():
        try:
            saved = json.loads(Path(state).read_text())
        except ValueError:
            raise EdgeoodError(f"{state} is not a JSON monitor state; delete it to start a "
                               "fresh stream") from None
        return StreamMonitor.from_dict(saved, detector=detector)
    return StreamMonitor.from_detector(detector, arl, delta, stride, methods, rearm)


def save_state(monitor, state: Path) -> None:
    """Write the monitor's state where the next `edgeood watch --state` continues it."""
    if state is not None:
        from edgeood.artifact.files import atomic_write
        from edgeood.artifact.metadata import dumps
        atomic_write(state, dumps(monitor.to_dict()))


def summary(monitor) -> dict:
    """The end-of-stream summary (`edgeood watch --json`'s last line)."""
    return {"frames": monitor.frames, "sampled": monitor.sampled, "alarm": monitor.alarm,
            "alarms": monitor.alarms, "alarm_frame": monitor.alarm_frame,
            "statistic": monitor.statistic, "max_statistic": monitor.max_statistic,
            "arl": monitor.arl, "stride": monitor.stride, "methods": monitor.methods}


def summary_line(monitor, fps: float) -> str:
    from edgeood.stats.monitor import human_duration
    mtbf = human_duration(monitor.mean_time_to_false_alarm(fps))
    return (f"{monitor.frames} frames ({monitor.sampled} sampled, stride "
            f"{monitor.stride}), {', '.join(monitor.methods)}: " +
            (f"alarm at frame {monitor.alarm_frame}" + (f" ({monitor.alarms} alarms)"
                                                        if monitor.alarms > 1 else "")
             if monitor.alarms else f"no alarm (largest statistic "
             f"{monitor.max_statistic:.3g} < A = {monitor.arl:g})") +
            f"; mean time between false alarms >= {mtbf} at {fps:g} fps")


def method_states(frame: WatchFrame) -> str:
    """The monitored methods' state on this frame: each one's p-value, and OOD where it is at
    most alpha (the per-frame rule at that method's threshold)."""
    def state(p: float) -> str:
        return "" if frame.alpha is None else (" OOD" if p <= frame.alpha else " ok ")
    return ", ".join(f"{m} p {p:.3g}{state(p)}" for m, p in frame.pvalues.items())


def alarm_line(frame: WatchFrame, arl: float) -> str:
    return (f"ALARM at frame {frame.frame} ({frame.source}): statistic "
            f"{frame.statistic:.4g} >= A = {arl:g} (betting on {', '.join(frame.pvalues)}); "
            "the stream has left the ID distribution")


def status_line(frame: WatchFrame, arl: float) -> str:
    """The live line: the alarm comes from the monitored methods (named with their state);
    the frame's own verdict is the primary's (named too)."""
    verdict = "-" if frame.is_ood is None else ("OOD" if frame.is_ood else "ok ")
    primary = f" ({frame.primary})" if frame.primary else ""
    label = f"  class {frame.label}" + (f" {frame.name}" if frame.name else "")
    return (f"\rframe {frame.frame}{label}  statistic {frame.statistic:10.4g} / {arl:g}  alarm "
            f"{'YES' if frame.alarm else 'no '}  monitored: {method_states(frame)}  "
            f"frame{primary} {verdict}")
