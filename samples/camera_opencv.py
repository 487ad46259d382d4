"""Camera pipeline sample: read frames with OpenCV, run an edgeood detector, overlay the class
and the OOD decision. Needs `pip install opencv-python` (not an edgeood dependency).

    python samples/camera_opencv.py DETECTOR.onnx [--camera 0 | --video FILE]
"""
from __future__ import annotations

import argparse

import edgeood


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("detector")
    ap.add_argument("--camera", type=int, default=0)
    ap.add_argument("--video")
    ap.add_argument("--headless", action="store_true", help="print instead of showing a window")
    args = ap.parse_args()
    import cv2

    det = edgeood.load(args.detector)
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
        text = (f"class {int(r.labels[0])}  {p} {r.scores[p][0]:.3f}  "
                f"p={r.pvalues[p][0]:.3f}  {'OOD' if r.is_ood[0] else 'ok'}")
        if args.headless:
            print(text)
            continue
        color = (0, 0, 255) if r.is_ood[0] else (0, 200, 0)
        cv2.putText(frame, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.7, color, 2)
        cv2.imshow("edgeood", frame)
        if cv2.waitKey(1) & 0xFF == ord("q"):
            break
    cap.release()


if __name__ == "__main__":
    main()
