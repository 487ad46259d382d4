"""Camera pipeline sample: read frames with OpenCV, run an edgeood detector, overlay the class
and the OOD decision, and next to it the stream-level shift alarm (edgeood.StreamMonitor over the
per-frame p-values: "has this stream left the training distribution?", with a mean time between
false alarms of at least A sampled frames). Needs `pip install opencv-python` (not an edgeood
dependency).

    python samples/camera_opencv.py DETECTOR.onnx [--camera 0 | --video FILE] [--arl 10000]
        [--stride 10] [--state monitor.json]
"""
from __future__ import annotations

import argparse
import json
import os

import edgeood


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("detector")
    ap.add_argument("--camera", type=int, default=0)
    ap.add_argument("--video")
    ap.add_argument("--headless", action="store_true", help="print instead of showing a window")
    ap.add_argument("--arl", type=float, help="stream alarm level A (default: the detector's)")
    ap.add_argument("--stride", type=int, help="use every k-th frame for the stream alarm")
    ap.add_argument("--state", help="JSON file keeping the stream alarm's state across restarts")
    args = ap.parse_args()
    import cv2

    det = edgeood.load(args.detector)
    if args.state and os.path.exists(args.state):
        with open(args.state) as fh:
            monitor = edgeood.StreamMonitor.from_dict(json.load(fh), detector=det)
    else:
        monitor = edgeood.StreamMonitor.from_detector(det, arl=args.arl, stride=args.stride)
    cap = cv2.VideoCapture(args.video if args.video else args.camera)
    p = det.primary
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)   # edgeood takes RGB uint8 H x W x C
        if det.preprocess.channels == 1:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[:, :, None]
        r = det(rgb)
        step = monitor.update(r.pvalues)  # the stream alarm, held once it rang
        text = (f"class {int(r.labels[0])}  {p} {r.scores[p][0]:.3f}  "
                f"p={r.pvalues[p][0]:.3f}  {'OOD' if r.is_ood[0] else 'ok'}")
        stream = (f"stream: R={step.statistic:.3g}/{monitor.arl:g}  "
                  f"{'SHIFT ALARM' if step.alarm else 'in distribution'}")
        if args.headless:
            print(f"{text}  |  {stream}")
            continue
        color = (0, 0, 255) if r.is_ood[0] else (0, 200, 0)
        cv2.putText(frame, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.7, color, 2)
        cv2.putText(frame, stream, (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                    (0, 0, 255) if step.alarm else (0, 200, 0), 2)
        cv2.imshow("edgeood", frame)
        key = cv2.waitKey(1) & 0xFF
        if key == ord("q"):
            break
        if key == ord("r"):  # the operator acknowledged the alarm: watch afresh
            monitor.reset()
    cap.release()
    if args.state:
        with open(args.state, "w") as fh:
            json.dump(monitor.to_dict(), fh)


if __name__ == "__main__":
    main()
